"""The ``torch.autograd.functional`` API, computed exactly: jacobian, hessian, vjp, jvp, hvp, vhp.

Every call validates its arguments as torch does, calls ``func`` exactly once on traced tensors
(:mod:`symjac.trace.graph`), looks the recorded graph up in the kernel cache (building the exact
derivative and its LLVM kernel on a miss, :mod:`symjac.elements.derive`), applies torch's strict checks
to the symbolic structure, runs the kernel, and returns results with torch's nesting, shapes
and dtypes: NumPy arrays for NumPy inputs, torch tensors for torch inputs. Called on traced
tensors (inside another symjac call), it records its result symbolically instead, so nested
calls differentiate exactly. ``docs/torch-differences.md`` lists where symjac differs from torch.
"""

from __future__ import annotations

import functools
import inspect
import math
import sys
import time
import warnings

import numpy as np
import sympy

from . import arrays, budget, errors, roads
from .arrays import finiteness, structural
from .elements import derive
from .trace import api_ops, assembly, scipy_ops
from .trace.functions import StopGradient
from .trace.graph import Trace
from .trace.ops import PRIMITIVES, Primitive
from .trace.tensor import Var

_STRATEGIES = ("forward-mode", "reverse-mode")


# --- argument checks, with torch's wording -----------------------------------------------------


def _torch():
    return sys.modules.get("torch")


def _is_torch(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _is_tensor(x, allow_objects=False) -> bool:
    if isinstance(x, Var) or _is_torch(x):
        return True
    return isinstance(x, np.ndarray) and (allow_objects or x.dtype != object)


def _as_tuple(x, arg_name: str, fn: str, allow_objects=False):
    is_tuple = isinstance(x, tuple)
    items = x if is_tuple else (x,)
    for i, el in enumerate(items):
        if not _is_tensor(el, allow_objects):
            where = f"the value at index {i} has type" if is_tuple else f"the given {arg_name} has type"
            raise TypeError(
                f"The {arg_name} given to {fn} must be either a Tensor or a tuple of Tensors but "
                f"{where} {type(el)}."
            )
    return is_tuple, items


def _dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def _check_inputs(inputs, fn: str):
    if not inputs:
        raise ValueError(
            f"{fn}: inputs is an empty tuple; pass at least one tensor to differentiate with respect to"
        )
    for j, x in enumerate(inputs):
        _check_array(x, f"{fn}: inputs[{j}]")
        if isinstance(x, Var):  # inside another trace: its dtype was checked there
            continue
        if x.dtype.kind == "f" if isinstance(x, np.ndarray) else x.is_floating_point():
            continue
        name = _dtype_name(x)
        if "complex" in name:
            raise TypeError(
                f"{fn}: inputs[{j}] has the complex dtype {name}; symjac differentiates real inputs only"
            )
        raise errors.DtypeError(
            f"{fn}: inputs[{j}] has dtype {name}; only floating point inputs can be "
            "differentiated (torch: only Tensors of floating point dtype can require gradients). "
            "Convert it first, e.g. x.double() or x.astype(numpy.float64)."
        )


def _check_array(x, what: str) -> None:
    """Refuse arrays whose values symjac would change silently: masks, matrix algebra, long double."""
    if not isinstance(x, np.ndarray):
        return
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{what} is a masked array; symjac would ignore its mask. "
            "Pass x.filled(value) or x.compressed() (a plain array) instead."
        )
    if isinstance(x, np.matrix):
        raise TypeError(f"{what} is a numpy.matrix; pass numpy.asarray(x) (a plain 2-d array) instead.")
    if x.dtype.kind == "f" and x.dtype.itemsize > 8:
        raise errors.DtypeError(
            f"{what} has dtype {x.dtype} (long double); symjac computes in float64 at most, "
            "which would drop its extra precision. Convert it first: x.astype(numpy.float64)."
        )


def _numeric(x) -> np.ndarray:
    if _is_torch(x):
        return api_ops._torch_to_numpy(x)
    return x


def _validate_v(v, other, other_is_tuple: bool):
    if len(other) != len(v):
        if other_is_tuple:
            raise RuntimeError(f"v is a tuple of invalid length: should be {len(other)} but got {len(v)}.")
        raise RuntimeError("The given v should contain a single Tensor.")
    for idx, (el_v, el_other) in enumerate(zip(v, other, strict=True)):
        if tuple(el_v.shape) != tuple(el_other.shape):
            prepend = f"Entry {idx} in " if other_is_tuple else ""
            raise RuntimeError(
                f"{prepend}v has invalid size: should be {_size(el_other, el_v)} but got {_size(el_v, el_v)}."
            )


def _size(x, like):
    """A shape as torch prints it when the user works in torch."""
    return _torch().Size(tuple(x.shape)) if _is_torch(like) else tuple(x.shape)


# --- tracing ----------------------------------------------------------------------------------


def _param_names(func, n: int) -> list[str]:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = []
    for j in range(n):
        if j < len(params) and params[j].kind in (params[j].POSITIONAL_ONLY, params[j].POSITIONAL_OR_KEYWORD):
            names.append(params[j].name)
        elif params and params[min(j, len(params) - 1)].kind == inspect.Parameter.VAR_POSITIONAL:
            names.append(params[min(j, len(params) - 1)].name)
        else:
            names.append(f"x{j}")
    return names


class _Call:
    """One traced call of the user's function."""

    __slots__ = ("graph", "in_tuple", "out_tuple", "inputs", "trace", "parent", "func", "params")

    def __init__(self, func, inputs, in_tuple, fn, params=False):
        parent = api_ops._find_trace(inputs)
        if "jax.numpy" in sys.modules:  # jax.numpy functions record symjac ops, as NumPy's do
            from .interop.jax_interop import install_jnp_dispatch

            install_jnp_dispatch()
        torch = _torch()
        torch_style = torch is not None and any(isinstance(x, torch.Tensor) for x in inputs)
        trace = Trace(parent, params=params, torch_style=torch_style)
        args = []
        for j, x in enumerate(inputs):
            shape = tuple(x.shape)
            dtype = x._dtype if isinstance(x, Var) else _numeric_dtype(x)
            args.append(trace.emit("input", (), (j, shape, dtype), shape, dtype))
        trace.n_inputs = len(args)
        with assembly.tracing(trace):
            if "scipy" in sys.modules:  # SciPy's non-ufuncs record symjac ops
                with scipy_ops.swapped(func):
                    out = func(*args)
            else:  # nothing to swap: no generator context on the warm path
                out = func(*args)
        self.out_tuple, outs = _as_tuple(out, "outputs of the user-provided function", fn, True)
        nodes = [api_ops.lift(trace, o)._node for o in outs]
        self.graph = trace.graph([a._node for a in args], nodes)
        self.in_tuple = in_tuple
        self.inputs = inputs
        self.trace = trace
        self.parent = parent
        self.func = func
        self.params = trace.param_values or []

    def names(self):
        return _param_names(self.func, len(self.inputs))

    def n_out(self) -> int:
        return len(self.graph.outputs)

    def out_shape(self, i: int):
        return self.graph.shape(self.graph.outputs[i])


_TORCH_DTYPES: dict = {}


def _numeric_dtype(x) -> np.dtype:
    """The NumPy dtype symjac computes a tensor in (bfloat16, which NumPy lacks, as float32)."""
    if type(x) is np.ndarray:
        return x.dtype
    dt = _TORCH_DTYPES.get(x.dtype)
    if dt is None:
        name = _dtype_name(x)
        dt = np.dtype(np.float32) if name == "bfloat16" else np.dtype(name)
        _TORCH_DTYPES[x.dtype] = dt
    return dt


# --- running kernels and shaping results -------------------------------------------------------


def _loops(call: _Call, mode: str, expand: str) -> bool:
    """Whether this call's kernel is likely a loop kernel (``compile`` decides when it builds)."""
    if expand != "auto":
        return False
    wrt = tuple(range(len(call.inputs)))
    if mode in roads.GRADIENT_MODES:
        return roads.gradient_loops_likely(call.graph, wrt, mode)
    return arrays.loops_likely(call.graph, wrt, mode)


def _derivation(call: _Call, key):
    return derive.derivation(key, call.names)


def _run(call: _Call, key, extra=(), expand="auto", create_graph=False):
    """Numeric results of ``key``; under ``create_graph`` with torch tensors they carry a
    ``grad_fn`` whose backward is symjac's exact next derivative."""
    results = _values(call, key, extra, expand)
    if create_graph and any(_is_torch(x) for x in (*call.inputs, *extra)):
        from .interop.torch_autograd import attach  # backward = symjac's next derivative

        return attach(call, key, extra, results)
    return results


def _values(call: _Call, key, extra=(), expand="auto"):
    """Numeric results of the derivation ``key`` for this call, on the road the cost model
    (:func:`symjac.arrays.choose`) picks: array-level rules, or a per-element kernel (built
    once per key and cached on disk)."""
    ready = _READY.get((key, expand))
    if ready is not None:  # the warm path: one lookup, then the kernel
        return ready.run(call, extra)
    mode = key[0]
    width = _width(call, mode)
    road = _ROADS.get((key, expand))
    if road is None:  # the choice reads every equation: once per graph, not per warm call
        loops = _loops(call, mode, expand)
        road = _ROADS.put((key, expand), arrays.choose(call.graph, width, expand, mode, loops))
    if road == "arrays" and (expand == "arrays" or _KERNELS.get((*key, expand)) is None):
        n_in = sum(math.prod(x.shape) for x in call.inputs)
        n_out = sum(math.prod(call.graph.shape(o)) for o in call.graph.outputs)
        budget.check_result(mode, n_in, n_out, f"symjac.{mode}")
        start = time.perf_counter()
        with structural.watching() as undecided:
            raw = _arrays_results(call, mode, extra, width)
        if expand == "auto" and undecided():
            exact = _exactly(call, key, extra)
            if exact is not None:
                return exact
        results = [_finish(arr, ref, call) for arr, ref in zip(raw, _refs(call, key), strict=True)]
        if expand == "auto":  # ski rental: build the kernel once the calls have cost as much
            spent = (_ARRAY_SECONDS.get(key) or 0.0) + time.perf_counter() - start
            _ARRAY_SECONDS.put(key, spent)
            if spent >= arrays.build_estimate(call.graph, mode, width, _loops(call, mode, expand)):
                _fast_kernel(call, key, expand)
        return results
    compiled_function, refs = _fast_kernel(call, key, expand)
    return _READY.put((key, expand), _Ready(compiled_function, refs, key, expand)).run(call, extra)


def _width(call: _Call, mode: str) -> int:
    """The array road's seed directions: one for a jvp, else every input element."""
    return 1 if mode == "jvp" else sum(math.prod(x.shape) for x in call.inputs)


# The largest functions (element operations) whose undecided points the drop-in recomputes on
# the element road: a tanh model's build takes about a second there (benchmarks/dropin.py); one
# with many where/maximum branches (Piecewise) may take far longer, so the bound is low.
EXACT_FALLBACK_UP_TO = 1000


@functools.lru_cache(maxsize=16)
def _zeros(size: int) -> np.ndarray:
    return np.zeros(size)


def _finite(raw) -> bool:
    """Whether every result is finite: a dot product with zeros is NaN exactly where an entry is
    inf or NaN, and BLAS reads 360k doubles in 30 us (N-body N=100's Jacobian), half of isfinite's."""
    return all(np.isfinite(np.dot(np.ravel(r), _zeros(np.size(r)))) for r in raw)


def _exactly(call: _Call, key, extra):
    """The element road's results, for a point where the array road left a product undecided:
    a zero that holds at this point only met an inf (``cbrt(x)**3`` at 0, see
    :mod:`symjac.arrays.structural`), which the array roads leave NaN and the element road's
    simplification may decide. None, with a warning once per function, where the function is
    too large for the element road's build (``expand="elements"`` builds it anyway)."""
    size = arrays.element_operations(call.graph)
    if size > EXACT_FALLBACK_UP_TO:
        if _UNDECIDED.get(key) is None:
            _UNDECIDED.put(key, True)
            warnings.warn(
                f"symjac.{key[0]}: the result holds an inf or NaN; where it is NaN, a zero may have met "
                f"an inf that only the exact per-element derivative decides, which this function is "
                f'too large ({size:,} element operations) to build here. Pass expand="elements" to '
                "build it anyway, or evaluate away from this point.",
                RuntimeWarning,
                stacklevel=4,
            )
        return None
    compiled_function, refs = _fast_kernel(call, key, "elements")
    return _Ready(compiled_function, refs, key, "elements").run(call, extra)


def _recheck(call: _Call, key, extra, raw, refs) -> list:
    """A loop kernel's inf or NaN result: the NumPy array road at this point says whether a
    product there is undecided (the element road's, then) or not (its own result, which knows
    the structural zeros at least as well as the kernel's: a reverse kernel's know fewer)."""
    mode = key[0]
    width = _width(call, mode)
    if not arrays.feasible(call.graph, width, mode):
        return [_finish(arr, ref, call) for arr, ref in zip(raw, refs, strict=True)]
    with structural.watching() as undecided:
        again = _arrays_results(call, mode, extra, width)
    exact = _exactly(call, key, extra) if undecided() else None
    if exact is not None:
        return exact
    return [_finish(arr, ref, call) for arr, ref in zip(again, refs, strict=True)]


class _Ready:
    """A key whose kernel is built: what a warm call needs, found with one cache lookup.

    A kernel of one input and one result runs through its native entry (:mod:`symjac.backend.entry`,
    no ctypes and no shared input buffer); the others through ``Kernel.__call__``.
    """

    __slots__ = ("kernel", "refs", "entry", "dtype", "key", "check")

    def __init__(self, compiled_function, refs, key, expand):
        self.kernel = compiled_function.kernel
        self.refs = refs
        entry = compiled_function.entry
        self.entry = entry if entry != compiled_function.__call__ else None
        self.dtype = np.dtype(self.kernel._dtype)
        self.key = key
        # A loop kernel where a zero may meet an inf: an inf or NaN result asks the element road.
        spec = compiled_function.spec
        self.check = (
            expand == "auto" and spec.road != "elements" and bool(finiteness.risky_values(spec.graph))
        )

    def run(self, call: _Call, extra) -> list:
        values = [_numeric(x) for x in call.inputs]
        if call.params or extra:
            values += call.params + [_numeric(v) for v in extra]
        x = values[0]
        if (
            self.entry is not None
            and len(values) == 1
            and type(x) is np.ndarray
            and x.dtype == self.dtype
            and x.flags.c_contiguous
        ):
            raw = (self.entry(x),)
        else:
            raw = self.kernel(values)
        if self.check and not _finite(raw):
            return _recheck(call, self.key, extra, raw, self.refs)
        return [_finish(arr, ref, call) for arr, ref in zip(raw, self.refs, strict=True)]


def _arrays_results(call: _Call, mode: str, extra, width: int) -> list[np.ndarray]:
    """The results of ``mode`` on the array road (forward mode at the array level)."""
    shapes = [tuple(x.shape) for x in call.inputs]
    sizes = [math.prod(s) for s in shapes]
    offsets = np.cumsum([0] + sizes)
    if mode == "jvp":
        vs = [np.asarray(_numeric(v), dtype=np.float64) for v in extra]
        seeds = {j: v.reshape(shapes[j] + (1,)) for j, v in enumerate(vs)}
    elif mode in arrays.SECOND_ORDER:
        seeds = None  # _second_results seeds the identity, or v
    elif width >= arrays.sparse.SPARSE_FROM:  # the identity as rows: stencils stay sparse
        seeds = {j: arrays.sparse.Rows.identity(offsets[j], sizes[j], width) for j in range(len(shapes))}
    else:
        eye = np.eye(width)
        seeds = {
            j: eye[offsets[j] : offsets[j + 1]].reshape(shapes[j] + (width,)) for j in range(len(shapes))
        }
    values = [_numeric(x) for x in call.inputs] + call.params
    if mode in arrays.SECOND_ORDER:
        return _second_results(call, mode, extra, values, shapes, offsets, width)
    outs, tangents = arrays.evaluate(call.graph, values, seeds, width)
    outs = [np.array(o, dtype=np.float64) for o in outs]
    flat = [
        np.zeros((o.size, width))
        if t is None
        else t.toarray(untouched=True)
        if arrays.sparse.is_sparse(t)
        else np.reshape(t, (o.size, width))
        for o, t in zip(outs, tangents, strict=True)
    ]
    if mode == "jvp":
        return outs + [f[:, 0].reshape(o.shape) for f, o in zip(flat, outs, strict=True)]
    blocks = [
        np.ascontiguousarray(f[:, offsets[j] : offsets[j + 1]]).reshape(o.shape + shapes[j])
        for f, o in zip(flat, outs, strict=True)
        for j in range(len(shapes))
    ]
    if mode == "jacobian":
        return blocks
    total = sum(
        np.asarray(_numeric(v), dtype=np.float64).reshape(-1) @ f for v, f in zip(extra, flat, strict=True)
    )
    prods = [np.asarray(total[offsets[j] : offsets[j + 1]]).reshape(shapes[j]) for j in range(len(shapes))]
    return outs + prods


def _second_results(call: _Call, mode, extra, values, shapes, offsets, n: int) -> list[np.ndarray]:
    """The results of ``hessian``, ``hvp`` or ``vhp`` by forward mode over reverse mode: the
    gradient's derivative along the identity (``H``), or along ``v``: ``H v``, which is also
    ``v^T H``, every rule's second derivatives being symmetric (``f_ij = f_ji``, bilinear cross
    terms both ways), so that a vhp carries one direction too."""
    if mode in ("hvp", "vhp"):
        v = [np.asarray(_numeric(u), dtype=np.float64) for u in extra]
        seeds = {j: v[j].reshape(shapes[j] + (1,)) for j in range(len(shapes))}
        width = 1
    else:
        eye = np.eye(n)
        seeds = {j: eye[offsets[j] : offsets[j + 1]].reshape(shapes[j] + (n,)) for j in range(len(shapes))}
        width = n
    out, grads = arrays.second.evaluate(call.graph, values, seeds, width)
    rows = [
        np.zeros((sizes, width)) if grads.get(j) is None else np.reshape(grads[j][..., 1:], (sizes, width))
        for j, sizes in enumerate(offsets[1:] - offsets[:-1])
    ]
    if mode == "hessian":
        return [
            np.ascontiguousarray(rows[i][:, offsets[j] : offsets[j + 1]]).reshape(shapes[i] + shapes[j])
            for i in range(len(shapes))
            for j in range(len(shapes))
        ]
    outs = [np.array(out, dtype=np.float64)]
    return outs + [rows[j][:, 0].reshape(shapes[j]) for j in range(len(shapes))]


def _refs(call: _Call, key) -> list[tuple]:
    """Which tensor sets each result's final dtype: ``("in", j)`` or ``("out", i)``."""
    mode = key[0]
    forward = len(key) > 2 and bool(key[2])
    n_in, n_out = len(call.inputs), call.n_out()
    if mode == "jacobian":
        return [("out", i) if forward else ("in", j) for i in range(n_out) for j in range(n_in)]
    if mode == "hessian":
        return [("in", i if forward else j) for i in range(n_in) for j in range(n_in)]
    if mode == "jvp":
        return [("out", i) for i in range(n_out)] * 2
    return [("out", i) for i in range(n_out)] + [("in", j) for j in range(n_in)]


_KERNELS = derive._LRU(256)
_ARRAY_SECONDS = derive._LRU(1024)  # time each graph has spent on the array road
_UNDECIDED = derive._LRU(1024)  # keys warned of an undecided point too large for the element road
_ROADS = derive._LRU(1024)  # (key, expand) -> the road arrays.choose picked
_READY = derive._LRU(256)  # (key, expand) -> _Ready, once the kernel runs every call
_VALUE_MODES = ("vjp", "jvp", "hvp", "vhp")


def _fast_kernel(call: _Call, key, expand: str = "elements"):
    """The compiled function of ``key`` (cached on disk), and the tensor that sets each result's
    final dtype (``("in", j)`` or ``("out", i)``). With ``expand="auto"`` a Jacobian's kernel is
    on ``symjac.compile``'s road (loop kernels for large models, which build in a fraction of a
    second where the element road's tape takes seconds), and so are a vjp's, a jvp's and a
    second derivative's (a loop kernel of the gradient graph); otherwise on the element road."""
    hit = _KERNELS.get((*key, expand))
    if hit is not None:
        return hit
    from . import compiled

    mode, graph = key[0], key[1]
    road, source, wrt = "elements", None, tuple(range(len(call.inputs)))
    if expand == "auto" and mode in arrays.LOOP_MODES:
        road = roads.choose(graph, mode, None, "auto", wrt)
    elif expand == "auto" and mode in roads.GRADIENT_MODES:  # a loop kernel of the gradient graph
        graph, road, source = roads.choose_second(graph, mode, "auto", wrt)
    forward = len(key) > 2 and bool(key[2])
    n_in = len(call.inputs)
    spec = compiled.Spec(
        graph, tuple(call.names()), mode, wrt, n_in > 1, call.out_tuple,
        mode in _VALUE_MODES, None, forward, True, road=road, source=source,
    )  # fmt: skip
    return _KERNELS.put((*key, expand), (compiled.CompiledFunction(spec), _refs(call, key)))


def _finish(arr: np.ndarray, ref, call: _Call):
    if not arr.flags.writeable:  # a view of the array road's broadcasts: results are the caller's
        arr = arr.copy()
    kind, k = ref
    if kind == "in":
        like = call.inputs[k]
        target = like.dtype
    else:
        like = next((x for x in call.inputs if _is_torch(x)), call.inputs[0])
        target = call.graph.dtype(call.graph.outputs[k])
        if target is None or target.kind != "f":
            target = np.dtype(np.float64)
    if type(like) is np.ndarray or not _is_torch(like):
        return arr if arr.dtype == target else arr.astype(target)
    tdtype = _TORCH_DTYPE_OF.get(target)
    if tdtype is None:
        torch = _torch()
        tdtype = target if isinstance(target, torch.dtype) else getattr(torch, str(np.dtype(target)))
        _TORCH_DTYPE_OF[target] = tdtype
    out = _torch().from_numpy(arr)
    if out.dtype != tdtype:
        out = out.to(tdtype)
    return out if like.is_cpu else out.to(like.device)


_TORCH_DTYPE_OF: dict = {}  # NumPy or torch dtype of a result -> the torch dtype it takes


def _symbolic(call: _Call, key, extra, create_graph: bool):
    """Record the results of ``key`` in the enclosing trace (nested symjac calls)."""
    d = _derivation(call, key)
    trace = call.parent
    args = [api_ops.lift(trace, x) for x in list(call.inputs) + list(extra)]
    args += [api_ops.lift(trace, v) for v in call.trace.captured_vars]
    nodes = tuple(a._node for a in args)
    outs = []
    for r, res in enumerate(d.results):
        dtype = _result_dtype(res.ref, call)
        outs.append(trace.emit("derived", nodes, (key, r, bool(create_graph)), res.shape, dtype))
    return outs


def _result_dtype(ref, call):
    kind, k = ref
    x = call.inputs[k] if kind == "in" else None
    if x is not None:
        return x._dtype if isinstance(x, Var) else _numeric_dtype(x)
    dt = call.graph.dtype(call.graph.outputs[k])
    return dt if dt is not None and dt.kind == "f" else np.dtype(np.float64)


def _eval_derived(values, params):
    key, r, create_graph = params
    d = derive.DERIVATIONS.get(key) or derive.derivation(key, [])
    mapping = {}
    for syms, vals in zip(list(d.inputs) + list(d.captures), values, strict=True):
        for s, v in zip(syms.flat, np.broadcast_to(vals, syms.shape).flat, strict=True):
            mapping[s] = v
    res = d.results[r]
    out = np.full(res.shape, sympy.S.Zero, dtype=object)
    for k, e in res.entries:
        e = e.xreplace(mapping)
        out.flat[k] = e if create_graph else StopGradient(e)
    return out


PRIMITIVES["derived"] = Primitive("derived", _eval_derived)


def _results(call: _Call, key, extra=(), create_graph=False, expand="auto"):
    if call.parent is not None:
        return _symbolic(call, key, extra, create_graph)
    return _run(call, key, extra, expand, create_graph)


def _nest(blocks, n_out, n_in, out_tuple, in_tuple):
    rows = [tuple(blocks[i * n_in : (i + 1) * n_in]) for i in range(n_out)]
    if out_tuple and in_tuple:
        return tuple(rows)
    if out_tuple:
        return tuple(row[0] for row in rows)
    if in_tuple:
        return rows[0]
    return rows[0][0]


def _check_strategy(strategy, fn):
    if strategy not in _STRATEGIES:
        raise ValueError(f'{fn}: strategy must be "forward-mode" or "reverse-mode", got {strategy!r}')


# --- strict mode ----------------------------------------------------------------------------------


def _check_outputs_require_grad(call: _Call, nonzero, n_in):
    for i in range(call.n_out()):
        if math.prod(call.out_shape(i)) and not any(nonzero[(i, j)] for j in range(n_in)):
            raise RuntimeError(
                f"Output {i} of the user-provided function does not require gradients. The outputs "
                "must be computed in a differentiable manner from the input when running in strict mode."
            )


def _nonempty(call, i, j):
    return math.prod(call.out_shape(i)) and math.prod(call.inputs[j].shape)


def _strict_jacobian(call, info, create_graph, what="jacobian"):
    n_in = len(call.inputs)
    for i in range(call.n_out()):
        for j in range(n_in):
            if not _nonempty(call, i, j):
                continue
            if not info["nonzero"][(i, j)]:
                raise RuntimeError(
                    f"Output {i} of the user-provided function is independent of input {j}. "
                    "This is not allowed in strict mode."
                )
            if create_graph and info["constant"][(i, j)]:
                raise RuntimeError(
                    f"The {what} of output {i} with respect to input {j} is independent of the "
                    "inputs. This is not allowed in strict mode when create_graph=True."
                )


def _strict_inputs_used(call, info, n_out):
    for j in range(len(call.inputs)):
        if math.prod(call.inputs[j].shape) and not any(info["nonzero"][(i, j)] for i in range(n_out)):
            raise RuntimeError(
                f"The output of the user-provided function is independent of input {j}. "
                "This is not allowed in strict mode."
            )


def _strict_gradient(call, info):
    for i in range(len(call.inputs)):
        if not math.prod(call.inputs[i].shape):
            continue
        if info["grad_zero"][i]:
            raise RuntimeError(
                f"The output of the user-provided function is independent of input {i}. "
                "This is not allowed in strict mode."
            )
        if info["grad_const"][i]:
            raise RuntimeError(
                "While computing the hessian, found that the jacobian of the user-provided function "
                f"with respect to input {i} is independent of the input. This is not allowed in "
                "strict mode. You should ensure that your function is twice differentiable and that "
                "the jacobian depends on the inputs (this would be violated by a linear function for "
                "example)."
            )


def _single_output(call: _Call, fn: str):
    if call.out_tuple:
        raise RuntimeError(f"The function given to {fn} should return a single Tensor")
    if math.prod(call.out_shape(0)) != 1:
        raise RuntimeError(
            f"The Tensor returned by the function given to {fn} should contain a single element"
        )


# --- the public API -------------------------------------------------------------------------------


def _accepts_jax(api):
    """Route calls with jax arrays to :mod:`symjac.interop.jax_interop` (one dict lookup otherwise)."""

    @functools.wraps(api)
    def call(func, inputs, *args, **kwargs):
        if "jax" in sys.modules:
            from .interop import jax_interop

            if jax_interop.has_jax(inputs, *args, *kwargs.values()):
                return jax_interop.functional_call(api, func, inputs, args, kwargs)
        return api(func, inputs, *args, **kwargs)

    return call


@_accepts_jax
@errors.public
def jacobian(
    func, inputs, create_graph=False, strict=False, vectorize=False, strategy="reverse-mode", *, expand="auto"
):
    """Compute the exact Jacobian of ``func`` at ``inputs``, as ``torch.autograd.functional.jacobian``.

    Args:
        func: a function of tensors returning a tensor or a tuple of tensors, written with
            torch-style methods, NumPy functions or torch functions. It is called once.
        inputs: a tensor (NumPy array or torch tensor) or a tuple of tensors.
        create_graph: inside another symjac call, keep the result differentiable.
        strict: raise when an output does not depend on an input (exactly: its block is 0).
        vectorize, strategy: accepted for compatibility; values never depend on them
            (``strategy="forward-mode"`` gives each block the output's dtype, as torch).
        expand: "auto" lets a cost model choose the road; "elements" expands every tensor
            element to SymPy and compiles a kernel (exact simplification across operations);
            "arrays" differentiates operation by operation with exact array-level rules (cost
            grows with the number of operations, not of elements). Same mathematics either way.

    Returns:
        Block ``J[i][j]`` of shape ``outputs[i].shape + inputs[j].shape``, nested as torch
        nests it: a tensor, a tuple over inputs or outputs, or a tuple of tuples.

    Example:
        >>> import numpy as np, symjac
        >>> symjac.jacobian(lambda x: x.exp().sum(axis=1), np.zeros((2, 2)))
        array([[[1., 1.],
                [0., 0.]],
        <BLANKLINE>
               [[0., 0.],
                [1., 1.]]])
    """
    _check_strategy(strategy, "jacobian")
    in_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
    _check_inputs(inputs, "jacobian")
    call = _Call(func, inputs, in_tuple, "jacobian", params=not (strict or create_graph))
    key = ("jacobian", call.graph, strategy == "forward-mode")
    if strict:
        info = _derivation(call, key).info
        _check_outputs_require_grad(call, info["nonzero"], len(inputs))
        _strict_jacobian(call, info, create_graph)
    blocks = _results(call, key, (), create_graph, expand)
    return _nest(blocks, call.n_out(), len(inputs), call.out_tuple, in_tuple)


@_accepts_jax
@errors.public
def hessian(
    func,
    inputs,
    create_graph=False,
    strict=False,
    vectorize=False,
    outer_jacobian_strategy="reverse-mode",
    *,
    expand="auto",
):
    """Compute the exact Hessian of a scalar ``func``, as ``torch.autograd.functional.hessian``.

    ``func`` must return a single tensor with one element. Block ``H[i][j]`` has shape
    ``inputs[i].shape + inputs[j].shape``; a tuple of inputs gives a tuple of tuples.

    Example:
        >>> import numpy as np, symjac
        >>> symjac.hessian(lambda x: (x**3).sum(), np.array([1.0, 2.0]))
        array([[ 6.,  0.],
               [ 0., 12.]])
    """
    in_tuple, inputs = _as_tuple(inputs, "inputs", "hessian")
    _check_inputs(inputs, "hessian")
    _check_strategy(outer_jacobian_strategy, "hessian")
    call = _Call(func, inputs, in_tuple, "hessian", params=not (strict or create_graph))
    _single_output(call, "hessian")
    key = ("hessian", call.graph, outer_jacobian_strategy == "forward-mode")
    n_in = len(inputs)
    if strict:
        info = _derivation(call, key).info
        _check_outputs_require_grad(call, {(0, j): not info["grad_zero"][j] for j in range(n_in)}, n_in)
        _strict_gradient(call, info)
        for i in range(n_in):
            for j in range(n_in):
                if math.prod(inputs[i].shape) and math.prod(inputs[j].shape):
                    if not info["nonzero"][(i, j)]:
                        raise RuntimeError(
                            f"Output {i} of the user-provided function is independent of input {j}. "
                            "This is not allowed in strict mode."
                        )
                    if create_graph and info["constant"][(i, j)]:
                        raise RuntimeError(
                            f"The hessian of output {i} with respect to input {j} is independent of "
                            "the inputs. This is not allowed in strict mode when create_graph=True."
                        )
    blocks = _results(call, key, (), create_graph, expand)
    return _nest(blocks, n_in, n_in, in_tuple, in_tuple)


@_accepts_jax
@errors.public
def vjp(func, inputs, v=None, create_graph=False, strict=False, *, expand="auto"):
    """Compute ``(func(inputs), v^T J)`` exactly, as ``torch.autograd.functional.vjp``.

    ``v`` has the structure and shapes of func's outputs (it may be None when func returns a
    single one-element tensor); the product has the structure of ``inputs``.

    Example:
        >>> import numpy as np, symjac
        >>> out, grad = symjac.vjp(lambda x: x**2, np.array([1.0, 3.0]), np.array([1.0, 1.0]))
        >>> grad
        array([2., 6.])
    """
    in_tuple, inputs = _as_tuple(inputs, "inputs", "vjp")
    _check_inputs(inputs, "vjp")
    call = _Call(func, inputs, in_tuple, "vjp", params=not (strict or create_graph))
    n_out, n_in = call.n_out(), len(inputs)
    out_shapes = [call.out_shape(i) for i in range(n_out)]
    if v is not None:
        _, v = _as_tuple(v, "v", "vjp")
        _validate_v(v, [_Shaped(s) for s in out_shapes], call.out_tuple)
    else:
        if n_out != 1 or math.prod(out_shapes[0]) != 1:
            raise RuntimeError(
                "The vector v can only be None if the user-provided function returns a single "
                "Tensor with a single element."
            )
        v = (_ones_like_output(out_shapes[0], inputs),)
    key = ("vjp", call.graph)
    if strict:
        info = _derivation(call, key).info
        _check_outputs_require_grad(call, info["nonzero"], n_in)
        _strict_inputs_used(call, info, n_out)
        if create_graph:
            for j in range(n_in):
                if all(info["constant"][(i, j)] for i in range(n_out)):
                    raise RuntimeError(
                        f"The jacobian of the user-provided function with respect to input {j} is "
                        "independent of the inputs. This is not allowed in strict mode when "
                        "create_graph=True."
                    )
    res = _results(call, key, v, create_graph, expand)
    outs, prods = res[:n_out], res[n_out:]
    return _pack(outs, call.out_tuple), _pack(prods, in_tuple)


@_accepts_jax
@errors.public
def jvp(func, inputs, v=None, create_graph=False, strict=False, *, expand="auto"):
    """Compute ``(func(inputs), J v)`` exactly, as ``torch.autograd.functional.jvp``.

    ``v`` has the structure and shapes of ``inputs`` (None for a single one-element input);
    the product has the structure of func's outputs and their dtypes.

    Example:
        >>> import numpy as np, symjac
        >>> out, tangent = symjac.jvp(lambda x: x**2, np.array([1.0, 3.0]), np.array([1.0, 0.0]))
        >>> tangent
        array([2., 0.])
    """
    in_tuple, inputs = _as_tuple(inputs, "inputs", "jvp")
    _check_inputs(inputs, "jvp")
    v = _input_vector(v, inputs, in_tuple, "jvp")
    call = _Call(func, inputs, in_tuple, "jvp", params=not (strict or create_graph))
    n_out, n_in = call.n_out(), len(inputs)
    key = ("jvp", call.graph)
    if strict:
        info = _derivation(call, key).info
        _check_outputs_require_grad(call, info["nonzero"], n_in)
        _strict_inputs_used(call, info, n_out)
        if create_graph:
            for i in range(n_out):
                if all(info["constant"][(i, j)] for j in range(n_in)):
                    raise RuntimeError(
                        f"The jacobian of the user-provided function with respect to output {i} is "
                        "independent of the inputs. This is not allowed in strict mode when "
                        "create_graph=True."
                    )
    res = _results(call, key, v, create_graph, expand)
    return _pack(res[:n_out], call.out_tuple), _pack(res[n_out:], call.out_tuple)


def _hessian_vector(kind, func, inputs, v, create_graph, strict, expand):
    in_tuple, inputs = _as_tuple(inputs, "inputs", kind)
    _check_inputs(inputs, kind)
    v = _input_vector(v, inputs, in_tuple, kind)
    call = _Call(func, inputs, in_tuple, kind, params=not (strict or create_graph))
    _single_output(call, kind)
    n_in = len(inputs)
    key = (kind, call.graph)
    if strict:
        info = _derivation(call, key).info
        _check_outputs_require_grad(call, {(0, j): not info["grad_zero"][j] for j in range(n_in)}, n_in)
        _strict_gradient(call, info)
        if create_graph:
            for i in range(n_in):
                if all(info["constant"][(i, j)] for j in range(n_in)):
                    raise RuntimeError(
                        f"The hessian of the user-provided function is independent of input {i}. "
                        "This is not allowed in strict mode when create_graph=True."
                    )
    res = _results(call, key, v, create_graph, expand)
    return _pack(res[:1], call.out_tuple), _pack(res[1:], in_tuple)


@_accepts_jax
@errors.public
def hvp(func, inputs, v=None, create_graph=False, strict=False, *, expand="auto"):
    """Compute ``(func(inputs), H v)`` exactly, as ``torch.autograd.functional.hvp``.

    Example:
        >>> import numpy as np, symjac
        >>> out, hv = symjac.hvp(lambda x: (x**3).sum(), np.array([1.0, 2.0]), np.array([1.0, 1.0]))
        >>> hv
        array([ 6., 12.])
    """
    return _hessian_vector("hvp", func, inputs, v, create_graph, strict, expand)


@_accepts_jax
@errors.public
def vhp(func, inputs, v=None, create_graph=False, strict=False, *, expand="auto"):
    """Compute ``(func(inputs), v^T H)`` exactly, as ``torch.autograd.functional.vhp``.

    Example:
        >>> import numpy as np, symjac
        >>> out, vh = symjac.vhp(lambda x: x.prod(), np.array([2.0, 3.0]), np.array([1.0, 0.0]))
        >>> vh
        array([0., 1.])
    """
    return _hessian_vector("vhp", func, inputs, v, create_graph, strict, expand)


class _Shaped:
    __slots__ = ("shape",)

    def __init__(self, shape):
        self.shape = shape


def _ones_like_output(shape, inputs):
    ref = next((x for x in inputs if _is_torch(x)), None)
    if ref is not None:
        return _torch().ones(shape, dtype=_torch().float64)
    return np.ones(shape)


def _input_vector(v, inputs, in_tuple, fn):
    if v is not None:
        _, v = _as_tuple(v, "v", fn)
        _validate_v(v, inputs, in_tuple)
        return v
    if len(inputs) != 1 or math.prod(inputs[0].shape) != 1:
        raise RuntimeError(
            "The vector v can only be None if the input to the user-provided function is a single "
            "Tensor with a single element."
        )
    return (_ones_like_output(tuple(inputs[0].shape), inputs),)


def _pack(items, is_tuple):
    return tuple(items) if is_tuple else items[0]
