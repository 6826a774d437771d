"""Front-end functions: the NumPy, torch and method spellings of every op, recorded on a trace.

Each function checks its arguments, infers the result's shape and dtype, and emits one equation
of a primitive from :mod:`symjac.trace.ops`. The name tables ``ops.NUMPY_API``, ``ops.TORCH_API`` and
``ops.METHODS`` are filled here, and the methods are attached to :class:`~symjac.trace.tensor.Var`.
"""

from __future__ import annotations

import math
import operator
import sys

import numpy as np

from .. import errors
from . import ops, signed_zero
from .tensor import Var

F64 = np.dtype(np.float64)
BOOL = np.dtype(np.bool_)
_SCALARS = (bool, int, float, np.bool_, np.integer, np.floating)


# --- lifting arguments onto the trace ---------------------------------------------------------


def _find_trace(args):
    """The innermost trace among the Vars in args (searching lists and object arrays)."""
    best = None
    for a in args:
        if isinstance(a, Var):
            t = a._trace
        elif isinstance(a, (list, tuple)):
            t = _find_trace(a)
        elif type(a) is np.ndarray and a.dtype == object:
            t = _find_trace(a.flat)
        else:
            continue
        if t is not None and (best is None or t.depth > best.depth):
            best = t
    return best


def _is_ancestor(outer, inner) -> bool:
    t = inner.parent
    while t is not None:
        if t is outer:
            return True
        t = t.parent
    return False


def _torch_to_numpy(x) -> np.ndarray:
    if x.requires_grad or not x.is_cpu:
        x = x.detach().cpu()
    if x.dtype is sys.modules["torch"].bfloat16:
        x = x.float()
    return x.numpy()


def _is_torch_tensor(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def lift(trace, x) -> Var:
    """The Var of ``trace`` standing for x: a traced tensor, a constant, or a weak scalar."""
    if isinstance(x, Var):
        if x._trace is trace:
            return x
        if _is_ancestor(x._trace, trace):
            return trace.capture(x)
        raise errors.UntraceableError(
            f"a traced tensor (result of `{x._op}`) is used outside the call that traced it; "
            "store values computed from traced tensors only in the function's return value"
        )
    if isinstance(x, _SCALARS):
        return trace.emit("scalar", (), (_scalar_key(float(x)),), (), None)
    original, trainable = x, False
    if _is_torch_tensor(x):
        if x.requires_grad:  # create_graph=True would silently lose its gradient: torch_autograd refuses
            trainable = True
            t = trace
            while t is not None:
                t.grad_constant = tuple(x.shape)
                t = t.parent
        x = _torch_to_numpy(x)
    elif isinstance(x, (list, tuple)):
        x = np.asarray(x, dtype=object if _find_trace(x) is not None else None)
    elif type(x).__module__.startswith("jax"):
        from ..interop.jax_interop import constant

        x = constant(x)
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"symjac cannot use a value of type {type(x).__name__} in a traced operation; "
            "use tensors, NumPy arrays or Python numbers"
        )
    if x.dtype == object:
        return _from_objects(trace, x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"symjac cannot use a constant array of dtype {x.dtype} in a traced operation")
    if trace.param_values is not None and (_is_data(x) or (trainable and _is_float(x))):
        # A tensor that requires grad (an nn.Parameter) changes at every optimiser step, however
        # small: as data it keeps one kernel (a 4-element output bias was a new graph each step).
        return trace.param(original, x)
    if not x.flags.c_contiguous:
        x = x.copy()  # np.ascontiguousarray would turn a 0-d array into shape (1,)
    return trace.emit("const", (), (x.dtype.str, x.shape, x.tobytes()), x.shape, x.dtype)


def _scalar_key(value):
    # How a Python scalar is stored in an equation. -0.0 == 0.0 (and hashes alike), so a graph
    # would confuse f(-0.0) with f(0.0): the string keeps its sign; NaN != NaN would break equality.
    if value != value:
        return "nan"
    if value == 0 and math.copysign(1.0, value) < 0:
        return "-0.0"
    return value


PARAM_MIN_SIZE = 16  # captured float arrays from this size on are kernel data, not literals


def _is_data(x: np.ndarray) -> bool:
    """Whether a captured array is recorded as data: a float array of some size, mostly nonzero.

    Literals fold exactly (a zero removes a term, a sparse stencil keeps a sparse program); data
    keeps one kernel for every value (weights after an optimiser step). Mostly-zero arrays are
    structure, so they stay literals.
    """
    return _is_float(x) and x.size >= PARAM_MIN_SIZE and 2 * np.count_nonzero(x) >= x.size


def _is_float(x: np.ndarray) -> bool:
    return x.dtype.kind == "f" and x.dtype.itemsize in (4, 8)


def lift_all(*xs) -> list[Var]:
    """Each argument as a Var of the innermost trace among them."""
    trace = _find_trace(xs)
    return [lift(trace, x) for x in xs]


def _numeric_mask(v: Var) -> Var:
    # masks in arithmetic count as 0.0 / 1.0, as in torch and NumPy
    return _as_number(v) if v._dtype is not None and v._dtype.kind == "b" else v


def _from_objects(trace, arr: np.ndarray) -> Var:
    """An object array of traced scalars and numbers (``np.array([c, -s])``) as one Var."""
    parts = [lift(trace, e) for e in arr.flat]
    for p in parts:
        if p.shape:
            raise ValueError(
                "an object array mixes traced tensors of shape "
                f"{p.shape} into one array; use numpy.stack / torch.stack to combine tensors"
            )
    if not parts:
        return lift(trace, np.zeros(arr.shape))
    return reshape(stack(parts, 0), arr.shape)


def _promote(vs) -> np.dtype:
    # torch: a dimensioned tensor's dtype wins over 0-d tensors and Python scalars.
    first = vs[0]._dtype if vs else None
    if first is not None and first.kind == "f":
        for v in vs:  # the common case: one float dtype throughout
            if v._dtype is not first:
                break
        else:
            return first
    floats = [v for v in vs if v._dtype is not None and v._dtype.kind == "f"]
    if not floats:
        return F64
    ranked = [v for v in floats if v.shape] or floats
    return max((v._dtype for v in ranked), key=lambda d: d.itemsize)


def _broadcast(name, vs) -> tuple:
    if not vs:
        return ()
    shape = vs[0].shape
    if all(v.shape == shape for v in vs):
        return shape
    try:
        return np.broadcast_shapes(*(v.shape for v in vs))
    except ValueError:
        shapes = ", ".join(str(tuple(v.shape)) for v in vs)
        raise ValueError(f"{name}: shapes {shapes} cannot be broadcast together") from None


def _elementwise(name: str):
    op = ops.ELEMENTWISE[name]
    # The fast path records as the general path would, except signed_zero's folding and rewrites:
    # ops that rewrite never take it, and it needs a traced operand that is not a constant.
    direct = not op.boolean and name not in signed_zero.REWRITES and name not in signed_zero.DIVISIONS

    def apply(*args, **kwargs):
        if not kwargs and direct:
            fast = _same_float_operands(args)
            if fast is not None:  # the general path below would find the same shape and dtype
                trace, refs, shape, dtype = fast
                return trace.emit(name, refs, (), shape, dtype)
        if kwargs:
            if "alpha" in kwargs and name in ("add", "sub"):
                args = _scale_other(args, kwargs.pop("alpha"))
            _ignore_numpy_kwargs(name, kwargs)
        folded = signed_zero.fold(op, args)
        if folded is not None:
            return lift(_find_trace(args), folded)
        if name in signed_zero.REWRITES or name in signed_zero.DIVISIONS:
            rewritten = signed_zero.rewrite(name, args, EW, where)
            if rewritten is not None:
                return rewritten
        trace = _find_trace(args)
        refs, vs = [], []
        for a in args:
            if type(a) is float or type(a) is int:
                # Python scalars ride inline in the equation: ("s", value), never a node id.
                refs.append(("s", _scalar_key(a)))
                continue
            v = a if isinstance(a, Var) and a._trace is trace else lift(trace, a)
            if not op.boolean:
                v = _numeric_mask(v)
            refs.append(v._node)
            vs.append(v)
        shape = _broadcast(name, vs)
        dtype = BOOL if op.boolean else _promote(vs)
        return trace.emit(name, tuple(refs), (), shape, dtype)

    apply.__name__ = name
    return apply


def _same_float_operands(args):
    """``(trace, refs, shape, dtype)`` when every argument is a Python number or a traced tensor
    of one trace, one shape and one float dtype (a re-trace's common case), at least one of them
    not a recorded constant; else None."""
    trace = shape = dtype = None
    refs = []
    constants = 0
    for a in args:
        t = type(a)
        if t is float or t is int:
            refs.append(("s", _scalar_key(a)))
            continue
        if not isinstance(a, Var):
            return None
        if a._trace.meta[a._node][2] == "const":
            constants += 1
        if trace is None:
            dtype = a._dtype
            if dtype is None or dtype.kind != "f":
                return None
            trace, shape = a._trace, a.shape
        elif a._trace is not trace or a._dtype is not dtype or a.shape != shape:
            return None
        refs.append(a._node)
    if trace is None or constants == len(refs) - sum(type(r) is tuple for r in refs):
        return None  # constants only: signed_zero.fold computes them as NumPy would
    return trace, tuple(refs), shape, dtype


def _scale_other(args, alpha):
    # issue 13: torch.add(a, b, alpha=2) / a.sub(b, alpha=2) use alpha * b
    a, b = args
    if alpha == 1:
        return a, b
    return a, (
        b * alpha if isinstance(b, _SCALARS) or isinstance(b, Var) else EW["mul"](lift_all(a, b)[1], alpha)
    )


def _as_number(mask: Var) -> Var:
    # dtype None: like a Python scalar, a mask does not promote (bool * float32 is float32)
    return mask._trace.emit("mask_to_float", (mask._node,), (), mask.shape, None)


def _as_count(x: Var) -> tuple[Var, np.dtype]:
    """``x`` and the dtype of its sums and running sums: a mask counts its elements as 0.0 / 1.0
    into an int64 result, as in NumPy and torch."""
    if x._dtype is not None and x._dtype.kind == "b":
        return _as_number(x), np.dtype(np.int64)
    return x, x._dtype


def _as_mask(x: Var) -> Var:
    return x if x._dtype is not None and x._dtype.kind == "b" else EW["not_equal"](x, 0.0)


def _ignore_numpy_kwargs(name, kwargs):
    for key, value in kwargs.items():
        if key in ("casting", "order", "subok", "dtype", "signature") or (key == "where" and value is True):
            continue
        raise TypeError(f"symjac: {name}() got an unsupported keyword argument {key!r}")


EW = {name: _elementwise(name) for name in ops.ELEMENTWISE}


# --- shape and structure --------------------------------------------------------------------


def _as_var(x) -> Var:
    if isinstance(x, Var):
        return x
    trace = _find_trace((x,))
    if trace is None:
        raise TypeError(f"expected a traced tensor, got {type(x).__name__}")
    return lift(trace, x)


def _normalize_axis(axis, ndim, name):
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise IndexError(f"{name}: dimension {axis} is out of range for a tensor with {ndim} dims")
    return axis % max(ndim, 1)


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def reshape(x, *shape, **kwargs):
    x = _as_var(x)
    shape = _shape_arg(shape or (kwargs.pop("shape", None) or kwargs.pop("newshape"),))
    if shape == x.shape:
        return x
    size = math.prod(x.shape)
    if shape.count(-1) == 1:
        known = math.prod([s for s in shape if s != -1])
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} into {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    if math.prod(shape) != size:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} into {shape}")
    if shape == x.shape:
        return x
    return x._trace.emit("reshape", (x._node,), (shape,), shape, x._dtype)


def _np_reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    if order != "C":
        raise NotImplementedError("numpy.reshape: only order='C' is supported")
    return reshape(a, shape if shape is not None else newshape)


def permute(x, *dims):
    x = _as_var(x)
    dims = tuple(_normalize_axis(d, x.ndim, "permute") for d in _shape_arg(dims))
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {x.ndim} dims")
    if dims == tuple(range(x.ndim)):
        return x
    shape = tuple(x.shape[d] for d in dims)
    return x._trace.emit("transpose", (x._node,), (dims,), shape, x._dtype)


def swapaxes(x, dim0, dim1):
    x = _as_var(x)
    perm = list(range(x.ndim))
    a, b = _normalize_axis(dim0, x.ndim, "transpose"), _normalize_axis(dim1, x.ndim, "transpose")
    perm[a], perm[b] = perm[b], perm[a]
    return permute(x, perm)


def _method_transpose(x, *dims):
    # torch: x.transpose(d0, d1) swaps two dims; NumPy: x.transpose(*axes) permutes.
    if len(dims) == 2 and all(isinstance(d, (int, np.integer)) for d in dims) and x.ndim != 2:
        return swapaxes(x, *dims)
    if len(dims) == 2 and x.ndim == 2:
        return swapaxes(x, *dims)
    return permute(x, dims) if dims else permute(x, tuple(reversed(range(x.ndim))))


def _np_transpose(a, axes=None):
    a = _as_var(a)
    return permute(a, tuple(reversed(range(a.ndim))) if axes is None else axes)


def moveaxis(x, source, destination):
    x = _as_var(x)
    src = [_normalize_axis(a, x.ndim, "moveaxis") for a in np.atleast_1d(source).tolist()]
    dst = [_normalize_axis(a, x.ndim, "moveaxis") for a in np.atleast_1d(destination).tolist()]
    if len(src) != len(dst):
        raise ValueError("moveaxis: source and destination need the same number of elements")
    order = [d for d in range(x.ndim) if d not in src]
    for d, s in sorted(zip(dst, src, strict=True)):
        order.insert(d, s)
    return permute(x, order)


def _encode_index(key):
    if not isinstance(key, tuple):
        key = (key,)
    parts = []
    for k in key:
        if isinstance(k, Var):
            raise errors.untraceable("index", k)
        if isinstance(k, (bool, np.bool_)):
            parts.append(("array", "|b1", (), np.bool_(k).tobytes()))
        elif isinstance(k, (int, np.integer)):
            parts.append(("int", int(k)))
        elif isinstance(k, slice):
            for part in (k.start, k.stop, k.step):
                if isinstance(part, Var):
                    raise errors.untraceable("index", part)
            # As plain ints (as NumPy reads them): the encoding is a cache key (_INDEX_SHAPES).
            bounds = (k.start, k.stop, k.step)
            ints = [b if b is None or type(b) is int else operator.index(b) for b in bounds]
            parts.append(("slice", *ints))
        elif k is None:
            parts.append(("none",))
        elif k is Ellipsis:
            parts.append(("ellipsis",))
        else:
            arr = _torch_to_numpy(k) if _is_torch_tensor(k) else np.asarray(k)
            if arr.dtype.kind not in "biu":
                raise IndexError(
                    f"indices must be integers, slices, None, ... or integer/boolean arrays, got {arr.dtype}"
                )
            parts.append(("array", arr.dtype.str, arr.shape, arr.tobytes()))
    return tuple(parts)


def getitem(x, key):
    x = _as_var(x)
    encoded = _encode_index(key)
    shape = _INDEX_SHAPES.get((x.shape, encoded))
    if shape is None:  # NumPy's own indexing on a dummy says the shape (and raises its errors)
        dummy = np.broadcast_to(np.zeros((), dtype=np.int8), x.shape)
        shape = dummy[ops.decode_index(encoded)].shape
        if len(_INDEX_SHAPES) >= 4096:
            _INDEX_SHAPES.clear()
        _INDEX_SHAPES[(x.shape, encoded)] = shape
    return x._trace.emit("getitem", (x._node,), (encoded,), shape, x._dtype)


# (shape, encoded index) -> the selection's shape: a re-traced x[i] need not index a dummy again.
_INDEX_SHAPES: dict = {}


def setitem(x: Var, key, value):
    """torch-style index assignment on a traced tensor (rebinds x to the updated tensor)."""
    if x._op in ("input", "capture"):
        raise errors.InPlaceError(
            "symjac cannot assign into an input of the traced function in place; copy it first "
            "(y = x.clone() or y = x.copy()) and assign into the copy"
        )
    encoded = _encode_index(key)
    trace = _find_trace((x, value))
    v = lift(trace, value)
    target = np.broadcast_to(np.zeros((), dtype=np.int8), x.shape)[ops.decode_index(encoded)].shape
    extra = max(v.ndim - len(target), 0)  # leading axes of length 1 are dropped, as NumPy does
    fits = all(n == 1 for n in v.shape[:extra])
    try:
        fits = fits and np.broadcast_shapes(v.shape[extra:], target) == target
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"cannot assign a value of shape {v.shape} to a selection of shape {target}")
    # NumPy refuses a sequence for one element only under a key of integers (0-d ones too)
    single = all(k[0] == "int" or (k[0] == "array" and not k[2] and k[1][1] in "iu") for k in encoded)
    if extra and single and not trace.torch_style:
        raise ValueError(
            f"setting an array element with a sequence: NumPy assigns only a 0-d value to one element, "
            f"not one of shape {v.shape}; use value.reshape(()) (torch accepts it)"
        )
    if extra:  # every road then assigns a value of at most the selection's rank
        v = reshape(v, v.shape[extra:])
    if x._dtype is None or x._dtype.kind != "b":
        v = _numeric_mask(v)  # a mask assigned into numbers counts as 0.0 / 1.0
    new = trace.emit("setitem", (lift(trace, x)._node, v._node), (encoded,), x.shape, x._dtype)
    x._trace, x._node = new._trace, new._node


def concatenate(tensors, axis=0, **kwargs):
    _reject_out(kwargs, "concatenate")
    tensors = list(tensors)
    if not tensors:
        raise ValueError("concatenate: expected a non-empty sequence of tensors")
    trace = _find_trace(tensors)
    vs = [lift(trace, t) for t in tensors]
    if axis is None:
        vs, axis = [reshape(v, -1) for v in vs], 0
    ndim = vs[0].ndim
    if ndim == 0:
        raise ValueError("zero-dimensional tensors cannot be concatenated; use stack")
    axis = _normalize_axis(axis, ndim, "concatenate")
    for v in vs:
        if (
            v.ndim != ndim
            or v.shape[:axis] + v.shape[axis + 1 :] != vs[0].shape[:axis] + vs[0].shape[axis + 1 :]
        ):
            raise ValueError(
                f"concatenate: shapes {[tuple(v.shape) for v in vs]} do not match outside dim {axis}"
            )
    if len(vs) == 1:
        return vs[0]
    shape = list(vs[0].shape)
    shape[axis] = sum(v.shape[axis] for v in vs)
    dtype = _promote(vs)
    return trace.emit("concat", tuple(v._node for v in vs), (axis,), tuple(shape), dtype)


def stack(tensors, axis=0, **kwargs):
    _reject_out(kwargs, "stack")
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    trace = _find_trace(tensors)
    vs = [lift(trace, t) for t in tensors]
    if any(v.shape != vs[0].shape for v in vs):
        raise ValueError(f"stack: all tensors must have the same shape, got {[tuple(v.shape) for v in vs]}")
    axis = _normalize_axis(axis, vs[0].ndim + 1, "stack")
    shape = vs[0].shape[:axis] + (len(vs),) + vs[0].shape[axis:]
    return trace.emit("stack", tuple(v._node for v in vs), (axis,), shape, _promote(vs))


def _torch_cat(tensors, dim=0, *, out=None):
    return concatenate(tensors, dim, out=out)


def _torch_stack(tensors, dim=0, *, out=None):
    return stack(tensors, dim, out=out)


def _reject_out(kwargs, name):
    if not kwargs:
        return
    if kwargs.get("out") is not None:
        raise errors.InPlaceError(f"{name}(..., out=...) writes in place; assign the result instead")
    extra = set(kwargs) - {"out", "dtype", "casting"}
    if extra:
        raise TypeError(f"{name}() got unsupported keyword arguments {sorted(extra)}")


def _axes(axis, ndim, name):
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and 0 <= axis < ndim:  # the common case, without the checks below
        return (axis,)
    if isinstance(axis, (list, tuple)):
        return tuple(sorted({_normalize_axis(a, ndim, name) for a in axis}))
    return (_normalize_axis(axis, ndim, name),)


def reduction(prim, has_identity=True):
    """A reduction front end over ``axis`` (None: all). Without an identity (max, min), reducing
    an empty dimension is an error."""

    def reduce(x, axis=None, keepdims=False):
        x = _as_var(x)
        axes = _axes(axis, x.ndim, prim)
        x, dtype = _as_count(x) if has_identity else (x, x._dtype)
        if x.ndim == 0:
            return x if dtype == x._dtype else cast(x, dtype)
        if not has_identity and any(x.shape[a] == 0 for a in axes):
            raise ValueError(f"{prim}: cannot reduce over an empty dimension")
        shape = tuple(1 if d in axes else n for d, n in enumerate(x.shape) if keepdims or d not in axes)
        return x._trace.emit(prim, (x._node,), (axes, bool(keepdims)), shape, dtype)

    return reduce


reduce_sum = reduction("sum")
reduce_prod = reduction("prod")


def mean(x, axis=None, keepdims=False):
    x = _as_var(x)
    axes = _axes(axis, x.ndim, "mean")
    count = math.prod([x.shape[a] for a in axes]) if x.ndim else 1
    return EW["div"](reduce_sum(x, axis, keepdims), float(count) if count else float("nan"))


def matmul(a, b, **kwargs):
    _reject_out(kwargs, "matmul")
    a, b = lift_all(a, b)
    trace = a._trace
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: both arguments need at least 1 dimension (use * for scalars)")
    sa = (1,) + a.shape if a.ndim == 1 else a.shape
    sb = b.shape + (1,) if b.ndim == 1 else b.shape
    if sa[-1] != sb[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} are not aligned ({sa[-1]} != {sb[-2]})")
    batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    shape = batch + (sa[-2],) * (a.ndim > 1) + (sb[-1],) * (b.ndim > 1)
    return trace.emit("matmul", (a._node, b._node), (), shape, _promote([a, b]))


def _rmatmul(a, b):
    return matmul(b, a)


def broadcast_to(x, shape):
    x = _as_var(x)
    shape = _shape_arg((shape,))
    np.broadcast_shapes(x.shape, shape)
    if shape == x.shape:
        return x
    return x._trace.emit("broadcast_to", (x._node,), (shape,), shape, x._dtype)


def expand(x, *sizes):
    x = _as_var(x)
    sizes = _shape_arg(sizes)
    lead = len(sizes) - x.ndim
    return broadcast_to(x, tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes)))


def squeeze(x, dim=None, *, axis=None):
    x = _as_var(x)
    dim = axis if dim is None else dim
    axes = [d for d, n in enumerate(x.shape) if n == 1] if dim is None else _axes(dim, x.ndim, "squeeze")
    return reshape(x, tuple(n for d, n in enumerate(x.shape) if not (d in axes and n == 1)))


def unsqueeze(x, dim):
    x = _as_var(x)
    dim = _normalize_axis(dim, x.ndim + 1, "unsqueeze")
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def flatten(x, start_dim=0, end_dim=-1):
    x = _as_var(x)
    if x.ndim == 0:
        return reshape(x, (1,))
    s, e = _normalize_axis(start_dim, x.ndim, "flatten"), _normalize_axis(end_dim, x.ndim, "flatten")
    return reshape(x, x.shape[:s] + (-1,) + x.shape[e + 1 :])


def cast(x, dtype):
    x = _as_var(x)
    dt = _to_numpy_dtype(dtype)
    if dt == x._dtype:
        return x
    if dt.kind == "b":  # nonzero, as NumPy and torch cast to bool
        return _as_mask(x)
    x = _numeric_mask(x)  # a mask casts to 0.0 / 1.0
    if dt.kind in "iu":
        # An integer cast is not differentiable: torch treats its result as a constant.
        x = EW["detach"](EW["trunc"](x))
    elif dt.kind != "f":
        raise TypeError(f"symjac cannot cast a traced tensor to {dtype}")
    return x._trace.emit("cast", (x._node,), (dt.str,), x.shape, dt)


def _to_numpy_dtype(dtype) -> np.dtype:
    from .graph import numpy_dtype  # one table of torch's dtype names

    return numpy_dtype(dtype)


def _method_to(self, *args, dtype=None, **kwargs):
    # x.to(torch.float64), x.to("cpu", torch.float32), x.to(other): devices are ignored.
    for a in args:
        if isinstance(a, Var):
            dtype = a._dtype
        elif isinstance(a, (type, np.dtype)) or type(a).__name__ == "dtype":
            dtype = a
    return self if dtype is None else cast(self, dtype)


def zeros_like(x, dtype=None, **kwargs):
    x = _as_var(x)
    return lift(x._trace, np.zeros(x.shape, dtype=_to_numpy_dtype(dtype) if dtype else x._dtype))


def ones_like(x, dtype=None, **kwargs):
    x = _as_var(x)
    return lift(x._trace, np.ones(x.shape, dtype=_to_numpy_dtype(dtype) if dtype else x._dtype))


def where(condition, x, y):
    """Choose ``x`` where ``condition`` holds, else ``y``; the traceable form of ``if``.

    Example:
        >>> import numpy as np, symjac
        >>> symjac.jacobian(lambda x: symjac.where(x > 0, x**2, -x), np.array([2.0, -1.0]))
        array([[ 4.,  0.],
               [ 0., -1.]])
    """
    cond, *vs = lift_all(condition, x, y)
    cond = _as_mask(cond)
    vs = [_numeric_mask(v) for v in vs]
    trace = cond._trace
    shape = _broadcast("where", [cond] + vs)
    return trace.emit("where", (cond._node, vs[0]._node, vs[1]._node), (), shape, _promote(vs))


def clamp(x, min=None, max=None):
    """Clip ``x`` to ``[min, max]``; at a bound the derivative is 1, as in torch.

    Example:
        >>> import numpy as np, symjac
        >>> symjac.jacobian(lambda x: symjac.clamp(x, 0.0, 1.0), np.array([0.5, 2.0]))
        array([[1., 0.],
               [0., 0.]])
    """
    trace = _find_trace((x, min, max))
    lo = -np.inf if min is None else min
    hi = np.inf if max is None else max
    return EW["clamp"](lift(trace, x), lo, hi)


def _np_clip(a, a_min=None, a_max=None, out=None, *, min=None, max=None, **kwargs):
    _reject_out({"out": out}, "clip")
    return clamp(a, a_min if a_min is not None else min, a_max if a_max is not None else max)


def _swap(fn):
    return lambda a, b: fn(b, a)


def stop_gradient(x):
    """The value of ``x`` with derivative zero (``x.detach()`` in torch style).

    Example:
        >>> import numpy as np, symjac
        >>> symjac.jacobian(lambda x: symjac.stop_gradient(x) * x, np.array([3.0]))
        array([[3.]])
    """
    return EW["detach"](x)


def maximum(a, b):
    """Elementwise maximum; at a tie the derivative splits 0.5/0.5 between a and b (torch's rule).

    Example:
        >>> import numpy as np, symjac
        >>> symjac.jacobian(lambda x: symjac.maximum(x, 0.0), np.array([2.0, -1.0, 0.0]))
        array([[1. , 0. , 0. ],
               [0. , 0. , 0. ],
               [0. , 0. , 0.5]])
    """
    return EW["maximum"](a, b)


def minimum(a, b):
    """Elementwise minimum, with torch's tie rule (see ``maximum``).

    Example:
        >>> import numpy as np, symjac
        >>> symjac.jacobian(lambda x: symjac.minimum(x, 1.0), np.array([2.0, -1.0]))
        array([[0., 0.],
               [0., 1.]])
    """
    return EW["minimum"](a, b)


# --- issue 13: methods that map onto existing functions -------------------------------------


def _new_constant(self, size, fill, dtype=None):
    x = _as_var(self)
    dt = _to_numpy_dtype(dtype) if dtype is not None else (x.dtype if x.dtype is not None else F64)
    return lift(x._trace, np.full(_shape_arg(size), fill, dtype=dt))


def new_zeros(self, *size, dtype=None, **kwargs):
    return _new_constant(self, size, 0.0, dtype)


def new_ones(self, *size, dtype=None, **kwargs):
    return _new_constant(self, size, 1.0, dtype)


def new_full(self, size, fill_value, *, dtype=None, **kwargs):
    if isinstance(fill_value, Var):
        raise TypeError("new_full: fill_value must be a number; use torch.full_like(x, 0) + value")
    return _new_constant(self, (size,), fill_value, dtype)


def _rebind(x: Var, new: Var, name: str) -> Var:
    # an in-place method on a copy: x now stands for the new value, as after setitem
    if x._op in ("input", "capture"):
        raise errors.InPlaceError(
            f"symjac cannot apply .{name}() to an input of the traced function in place; copy it "
            f"first (y = x.clone()) and call y.{name}(), or use the out-of-place form"
        )
    x._trace, x._node = new._trace, new._node
    return x


def zero_(self):
    return _rebind(self, zeros_like(self), "zero_")


def fill_(self, value):
    return _rebind(self, cast(zeros_like(self) + value, self.dtype), "fill_")


def masked_fill(self, mask, value):
    return where(mask, value, self)


def _method_where(self, condition, y):
    # torch: x.where(condition, y) is torch.where(condition, x, y)
    return where(condition, self, y)
