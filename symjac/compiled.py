"""``symjac.compile``: trace once, compile once, call many times (and on batches of points).

A CompiledFunction holds a kernel for one of: the Jacobian (optionally with the function value,
or as a sparse matrix), the Hessian, or a jvp / vjp / hvp product. Inputs not in ``wrt`` are
runtime parameters: kernel inputs that are not differentiated. The kernel's object code is cached
on disk (:mod:`symjac.backend.diskcache`), so a new process pays only for one trace.
"""

from __future__ import annotations

import math
import os
import sys
from ctypes import addressof, c_char
from dataclasses import dataclass, replace

import numpy as np
import sympy

from . import budget, cached, errors, functional, roads
from .arrays import LOOP_MODES
from .backend import diskcache, runtime
from .backend.gcpause import gc_paused
from .backend.runtime import Kernel, Layout, ResultSlot, _address
from .elements import deep, derive, diff
from .elements.derive import Derivation, Result, _input_specs, _out_dtype, _unique_names
from .elements.expand import input_symbols, output_expressions
from .elements.tape import Tape
from .elements.tape import jacobian_entries as tape_entries
from .trace import arith
from .trace.graph import _canonical

MODES = ("jacobian", "hessian", "jvp", "vjp", "hvp")
BUILDS = 0  # kernels built in this process (cache hits excluded): what tests count
THREAD_WORK = 4_000_000  # points x kernel statements from which a batch is split across cores
F64 = np.dtype(np.float64)
F32 = np.dtype(np.float32)


@dataclass(frozen=True)
class Spec:
    """Everything that defines a compiled function: picklable, and the cache key's source."""

    graph: object
    names: tuple
    mode: str
    wrt: tuple
    wrt_tuple: bool
    out_tuple: bool
    value: bool
    sparse: str | None
    forward: bool = False  # blocks take the dtype of their output (torch's forward-mode strategy)
    single: bool = False  # single points only (the drop-in API): no batch loop is built
    # Or "loops": array-level loop kernels (symjac.arrays.loops, sparse_loops for sparse=);
    # "reverse-loops": the same by adjoints (symjac.arrays.reverse); or "sparse-loops": a dense
    # Jacobian from sparse_loops' sparse tangents.
    road: str = "elements"
    # A second derivative on a loop road: ``graph`` is the gradient graph of this one
    # (symjac.arrays.gradient, roads.choose_second), whose output is the function's value.
    source: object = None

    def canonical(self) -> str:
        g = self.graph
        extra = (self.forward, self.single) if self.forward or self.single else ()
        if self.road != "elements":  # a different kernel for the same mathematics
            extra = (*extra, self.road)
        if self.source is not None and self.value:
            extra = (*extra, self.source.outputs)
        eqns = _canonical(g.eqns)  # nested calls' graphs spelled out: their repr is only a summary
        return repr(
            (eqns, g.inputs, g.outputs, self.mode, self.wrt, self.out_tuple, self.value, self.sparse, *extra)
        )


def _compute(dt) -> np.dtype:
    return F64 if np.dtype(dt) == F64 else F32


@dataclass(frozen=True)
class SympySpec:
    """A compiled function given as SymPy expressions of symbol arrays (``symjac.from_sympy``)."""

    inputs: tuple  # object arrays of symbols
    outputs: tuple  # object arrays of expressions
    mode: str
    wrt: tuple
    wrt_tuple: bool
    out_tuple: bool
    value: bool
    sparse: str | None
    forward: bool = False
    single: bool = False

    def canonical(self) -> str:
        import sympy

        parts = [sympy.srepr(list(a.flat)) + repr(a.shape) for a in self.inputs + self.outputs]
        return repr((parts, self.mode, self.wrt, self.out_tuple, self.value, self.sparse))

    def expressions(self):
        names = [str(s) for a in self.inputs for s in a.flat]
        f64 = [F64] * len(self.inputs), [F64] * len(self.outputs)
        return list(self.inputs), list(self.outputs), f64[0], f64[1], names


def _traced_expressions(spec: Spec):
    graph = spec.graph
    specs = _input_specs(graph)
    n_in = sum(math.prod(shape) for shape, _ in specs)
    n_out = sum(math.prod(graph.shape(node)) for node in graph.outputs)
    where = f"symjac.{spec.mode}" if getattr(spec, "single", False) else "symjac.compile"  # the drop-in's own
    budget.check(spec.mode, graph, n_in, n_out, dense=not spec.sparse, where=where)
    names = _unique_names(list(spec.names), len(specs))
    X = [input_symbols(names[j], shape) for j, (shape, _) in enumerate(specs)]
    with arith.light():  # the forms code needs, not the ones SymPy prints (see symjac.trace.arith)
        outs = output_expressions(graph, X, [])
    in_dt = [_compute(dt) for _, dt in specs]
    out_dt = [_compute(_out_dtype(graph, node)) for node in graph.outputs]
    return X, outs, in_dt, out_dt, names


def derivation(spec) -> tuple[Derivation, dict]:
    """The symbolic results of a Spec, and the metadata needed to call its kernel."""
    if isinstance(spec, SympySpec):
        X, outs, in_dt, out_dt, names = spec.expressions()
    else:
        X, outs, in_dt, out_dt, names = _traced_expressions(spec)
    Xw = [X[j] for j in spec.wrt]
    results, kernel_inputs, kernel_dtypes, meta = [], list(X), list(in_dt), {}
    # The exact derivative as a DAG program: every entry below is an atom of the tape.
    tape = Tape([s for x in Xw for s in x.flat])
    if spec.value:
        results += derive._values([_atoms(tape, o) for o in outs], out_dt)

    def gradients():
        grad = tape.gradient(tape.value(sympy.sympify(outs[0].flat[0])))
        rows = ([grad.get(s, sympy.S.Zero) for s in x.flat] for x in Xw)
        return [np.array(row, dtype=object).reshape(x.shape) for row, x in zip(rows, Xw, strict=True)]

    if spec.mode == "jacobian":
        entries = tape_entries(tape, outs, Xw)
        if spec.sparse:
            result, pattern = _sparse(entries, outs, Xw, spec.sparse, in_dt[spec.wrt[0]])
            results.append(result)
            meta["pattern"] = pattern
        else:
            if spec.forward:
                dtype_of = lambda i, j: out_dt[i]  # noqa: E731
            else:
                dtype_of = lambda i, j: in_dt[spec.wrt[j]]  # noqa: E731
            results += derive._blocks(entries, outs, Xw, dtype_of, lambda i, j: ("in", j))
        meta["nest"] = (len(outs), len(Xw))
    elif spec.mode == "hessian":
        grads = gradients()
        entries = tape_entries(tape, grads, Xw)
        pick = (lambda i, j: i) if spec.forward else (lambda i, j: j)
        results += derive._blocks(
            entries, grads, Xw, lambda i, j: in_dt[spec.wrt[pick(i, j)]], lambda i, j: ("in", j)
        )
        meta["nest"] = (len(Xw), len(Xw))
    else:
        if spec.mode == "vjp":
            V = [input_symbols(derive._fresh(f"v{i}", names), o.shape) for i, o in enumerate(outs)]
            entries = tape_entries(tape, outs, Xw)
            sums = diff.contract_rows(entries, V, [x.size for x in Xw])
            prods = [(x.shape, in_dt[spec.wrt[j]], sums[j]) for j, x in enumerate(Xw)]
            kernel_dtypes += out_dt
        else:
            V = [input_symbols(derive._fresh(f"v{j}", names), x.shape) for j, x in enumerate(Xw)]
            if spec.mode == "jvp":
                entries = tape_entries(tape, outs, Xw)
                sums = diff.contract_cols(entries, V, [o.size for o in outs])
                prods = [(o.shape, out_dt[i], sums[i]) for i, o in enumerate(outs)]
            else:  # hvp, or vhp (the drop-in's v^T H: rows contracted, as torch does)
                grads = gradients()
                entries = tape_entries(tape, grads, Xw)
                contract = diff.contract_cols if spec.mode == "hvp" else diff.contract_rows
                sums = contract(entries, V, [x.size for x in Xw])
                prods = [(x.shape, in_dt[spec.wrt[j]], sums[j]) for j, x in enumerate(Xw)]
            kernel_dtypes += [in_dt[j] for j in spec.wrt]
        kernel_inputs += V
        results += [Result(s, dt, ("p", k), derive._nonzero(e)) for k, (s, dt, e) in enumerate(prods)]
        meta["v_shapes"] = [list(v.shape) for v in V]
    d = Derivation(kernel_inputs, kernel_dtypes, [], results, {"tape": tape})
    meta["results"] = [[list(r.shape), r.dtype.str] for r in results]
    meta["n_out"] = len(outs)
    return d, meta


def _atoms(tape: Tape, arr: np.ndarray) -> np.ndarray:
    flat = [tape.value(sympy.sympify(e)) for e in arr.flat]
    return np.array(flat, dtype=object).reshape(arr.shape)


def _sparse(entries, outs, Xw, kind, dtype):
    """One data array holding the nonzeros in CSR or CSC order, and its fixed pattern."""
    row0 = np.cumsum([0] + [o.size for o in outs])
    col0 = np.cumsum([0] + [x.size for x in Xw])
    items = []
    for (i, j), block in entries.items():
        for row, col, e in block:
            items.append((int(row0[i] + row), int(col0[j] + col), e))
    major = (lambda t: (t[0], t[1])) if kind == "csr" else (lambda t: (t[1], t[0]))
    items.sort(key=major)
    shape = (int(row0[-1]), int(col0[-1]))
    n_major = shape[0] if kind == "csr" else shape[1]
    indptr = np.zeros(n_major + 1, dtype=np.int64)
    for t in items:
        indptr[major(t)[0] + 1] += 1
    indptr = np.cumsum(indptr)
    indices = [major(t)[1] for t in items]
    result = Result((len(items),), dtype, ("sparse", 0), [(k, t[2]) for k, t in enumerate(items)])
    return result, {"kind": kind, "shape": list(shape), "indices": indices, "indptr": indptr.tolist()}


def _layout(d: Derivation) -> tuple[Layout, list]:
    slots, stores, sizes = [], [], [0, 0]
    for r in d.results:
        region = 0 if r.dtype == F64 else 1
        slots.append(ResultSlot(region, sizes[region], tuple(r.shape)))
        stores.extend((region, sizes[region] + k, e) for k, e in r.entries)
        sizes[region] += math.prod(r.shape)
    compute = "float32" if not sizes[0] and all(dt == F32 for dt in d.input_dtypes) else "float64"
    # Mostly nonzero: store the zeros too, so that batch results need no zeroing pass first.
    full = 2 * len(stores) >= sizes[0] + sizes[1]
    if full:
        taken = {(region, offset) for region, offset, _ in stores}
        missing = [(region, k) for region in (0, 1) for k in range(sizes[region]) if (region, k) not in taken]
        stores += [(region, k, sympy.S.Zero) for region, k in missing]
    shapes = tuple(tuple(a.shape) for a in d.inputs)
    return Layout(shapes, tuple(slots), sizes[0], sizes[1], compute, full), stores


def _loop_object(spec: Spec) -> tuple:
    """``(object code, IR, optimised IR, layout)`` of a loop road's kernel, and the pattern on
    the sparse ones (symjac.arrays.loops, reverse or sparse_loops)."""
    from .arrays import loops, reverse, sparse_loops

    value, kind = roads.stored_values(spec), roads.sparse_kind(spec)
    if kind:
        return sparse_loops.compile_object(spec.graph, spec.wrt, value, kind)
    road = reverse if spec.road == "reverse-loops" else loops
    return road.compile_object(spec.graph, spec.wrt, value, roads.loop_mode(spec))


KERNEL_SYMBOLS = ("symjac_kernel", "symjac_kernel_batch")
SIMD_SYMBOLS = ("symjac_kernel_simd", "symjac_kernel_simd_batch")


class CompiledFunction:
    """A function's derivative compiled to native code; see :func:`compile`."""

    def __init__(self, spec: Spec, cache: bool = True):
        self.spec = spec
        self._program = None
        name = diskcache.key(deep.call(spec.canonical)) if cache else None  # srepr recurses
        loops = roads.on_loops(spec)
        if loops:
            check = lambda meta, obj: cached.check_loop_entry(meta, obj, spec)  # noqa: E731
        else:
            check = lambda meta, obj: cached.check_meta(meta, spec)  # noqa: E731
        symbols = KERNEL_SYMBOLS[:1] if getattr(spec, "single", False) else KERNEL_SYMBOLS
        hit = diskcache.load(name, check, symbols) if cache else None
        self.cache_hit = hit is not None
        self._cache_name = name
        if hit is not None:
            meta, obj = hit
            # Loop kernels vectorise along the tangent row: no SIMD kernel across points.
            simd = None if loops else self._simd_object
            self.kernel = Kernel(obj, cached.layout_from_json(meta["layout"]), simd=simd)
        else:
            with gc_paused():
                meta = deep.call(self._build, spec)  # SymPy recurses on deep expressions
            if cache:
                diskcache.store(name, meta, self.kernel.object_code)
        self.meta = meta
        self._in_shapes = [tuple(s) for s in meta["layout"]["in_shapes"]]
        self._n_args = len(self._in_shapes) - len(meta.get("v_shapes", ()))
        self._threads = os.cpu_count() or 1
        self._fast = self._fast_path()

    def _build(self, spec: Spec) -> dict:
        """Derive, lower and compile ``spec``: sets the program and kernel, returns the metadata."""
        if roads.on_loops(spec):
            return self._build_loops(spec)
        d, meta = derivation(spec)
        layout, stores = _layout(d)
        from .elements.simplify import build_program

        slots, offset = {}, 0
        for arr in d.inputs:
            for s in arr.flat:
                slots[s] = offset
                offset += 1
        self._program = build_program(stores, slots, layout.compute, tape=d.info["tape"])
        global BUILDS
        BUILDS += 1
        self.kernel = Kernel.build(self._program, layout, batch=not spec.single, simd=self._simd_object)
        meta["layout"] = cached.layout_json(layout)
        meta["statements"] = len(self._program.stores) + len(self._program.assignments)
        return meta

    def _build_loops(self, spec: Spec) -> dict:
        """The array road's loop kernel (symjac.arrays.loops, or sparse_loops for sparse= and
        the sparse-loops road): no per-element expansion."""
        from .arrays import loops, reverse

        mode = roads.loop_mode(spec)
        if mode not in LOOP_MODES or (mode != "jacobian" and roads.sparse_kind(spec)):
            raise ValueError(f"no loop kernel for mode={spec.mode!r} (compile's expand= chooses the road)")
        global BUILDS
        meta = {}
        if mode != "jacobian":
            meta["v_shapes"] = [list(s) for s in loops.product_shapes(spec.graph, spec.wrt, mode)]
        elif not spec.sparse:
            specs = _input_specs(spec.graph)
            n_in = sum(math.prod(shape) for shape, _ in specs)
            n_out = sum(math.prod(spec.graph.shape(node)) for node in spec.graph.outputs)
            if spec.source is not None:  # a Hessian: its result's size, not its gradient graph's
                budget.check_result(spec.mode, n_in, 1, where="symjac.compile")
            else:  # the same guard as the element road's: a dense result this large is refused either way
                budget.check(mode, spec.graph, n_in, n_out, dense=True, where="symjac.compile")
        kind = roads.sparse_kind(spec)
        built = _loop_object(spec)
        obj, ir_text, optimized, layout = built[:4]
        if kind:
            if spec.sparse:
                meta["pattern"] = built[4]
            work = roads.sparse_work(spec.graph, spec.wrt, kind)
        else:
            work = (reverse if spec.road == "reverse-loops" else loops).work(spec.graph, spec.wrt, mode)
        BUILDS += 1
        self.kernel = Kernel(obj, layout, ir_text, optimized)
        n_out = len(spec.graph.outputs)
        return {
            **meta,
            "layout": cached.layout_json(layout),
            "nest": (n_out, len(spec.wrt)),
            "n_out": n_out if spec.source is None else len(spec.source.outputs),
            "results": [[list(s.shape), "<f8"] for s in layout.slots],
            "statements": work,
            "road": spec.road,
            "symbols": sorted(cached.external_symbols(obj)),
        }

    def _simd_object(self):
        """The batch kernel's object code (from the disk cache, or compiled and cached); see
        ``runtime.compile_simd_object``."""
        name = self._cache_name and self._cache_name + "-simd"
        check = lambda meta, obj: cached.check_simd_meta(meta, obj, self.kernel.layout)  # noqa: E731
        hit = diskcache.load(name, check, SIMD_SYMBOLS) if name else None
        if hit is not None:
            meta, obj = hit
            return (obj, "", "", meta["lanes"]) if obj else None
        with gc_paused():
            built = runtime.compile_simd_object(self.program(), self.kernel.layout)
        if name:
            diskcache.store(name, {"lanes": built[3] if built else 0}, built[0] if built else b"")
        return built

    def _fast_path(self):
        """(input shape, input dtype, result shape, result dtype, region) when a call can pass the
        caller's array and a fresh result straight to the kernel: one input, one result."""
        layout = self.kernel.layout
        spec = self.spec
        if len(self._in_shapes) != 1 or len(layout.slots) != 1 or spec.value:
            return None
        if spec.out_tuple or spec.wrt_tuple:
            return None
        (slot,) = layout.slots
        dtype = np.dtype(np.float32 if layout.compute == "float32" else np.float64)
        result_dtype = np.dtype(np.float64 if slot.region == 0 else np.float32)
        return self._in_shapes[0], dtype, slot.shape, result_dtype, slot.region

    # --- calling --------------------------------------------------------------------------
    def __call__(self, *inputs, v=None, out=None):
        """Evaluate at ``inputs`` (or at a batch: extra leading dimensions on every input).

        ``out=`` (one result array: no ``value=``) is filled in place and returned, for a single
        point or a batch, so a simulation loop reuses one buffer.
        """
        fast = self._fast
        if fast is not None and len(inputs) == 1 and v is None and type(inputs[0]) is np.ndarray:
            x = inputs[0]
            if out is None:
                if x.shape == fast[0] and x.dtype is fast[1]:
                    # No copies, no lock: the kernel reads the caller's array, fills a fresh result.
                    result = self._into(x, np.zeros(fast[2], fast[3]))
                    if result is not None:
                        return self._sparse_matrix(result) if self.spec.sparse else result
            elif type(out) is np.ndarray and x.dtype is fast[1]:
                lead = x.ndim - len(fast[0])
                if lead > 0 and x.shape[lead:] == fast[0]:
                    # A simulation loop's batch into its buffer (_batched checks it): nothing to
                    # convert or nest, 3 us less per call (an 8-point Robertson batch: 8.6 -> 5.4 us).
                    return self._batched([x], x.shape[:lead], out)[0]
                if lead == 0 and x.shape == fast[0] and out.shape == fast[2] and out.dtype is fast[3]:
                    # One point into the caller's buffer (N-body N=20 through _call: 38 us,
                    # against 29 us for a fresh result).
                    if not self.spec.sparse and out.flags.c_contiguous and out.flags.writeable:
                        if not self.kernel.layout.full:
                            out.fill(0)  # only nonzeros are stored
                        if self._into(x, out) is not None:
                            return out
        return self._call(inputs, v, out)

    def _into(self, x: np.ndarray, result: np.ndarray):
        """``result`` after the kernel read ``x`` and wrote it; None where either array cannot
        be handed over (read-only or strided)."""
        try:  # from_buffer refuses read-only and strided arrays
            x_address = addressof(c_char.from_buffer(x))
            result_address = addressof(c_char.from_buffer(result))
        except (TypeError, ValueError, BufferError):
            return None
        if self._fast[4] == 0:
            self.kernel._fn(x_address, result_address, 0)
        else:
            self.kernel._fn(x_address, 0, result_address)
        return result

    @errors.public_as("compile(...)()")
    def _call(self, inputs, v, out):
        if "dask.array" in sys.modules:  # dask arrays: one task per chunk (symjac.interop.dask_interop)
            from .interop.dask_interop import evaluate, is_dask

            if any(is_dask(a) for a in (*inputs, *(v if isinstance(v, (tuple, list)) else (v,)))):
                return evaluate(self, inputs, v)
        if len(inputs) != self._n_args:
            raise TypeError(f"compiled function: expected {self._n_args} inputs, got {len(inputs)}")
        arrays = list(inputs)
        if self.spec.mode in ("jvp", "vjp", "hvp"):
            if v is None:
                raise TypeError(f"compiled {self.spec.mode}: pass the vector as v=")
            arrays += list(v) if isinstance(v, (tuple, list)) else [v]
        elif v is not None:
            raise TypeError(f"compiled {self.spec.mode}: takes no v")
        torch_out = any(functional._is_torch(a) for a in arrays)
        arrays = [functional._numeric(a) if functional._is_torch(a) else a for a in arrays]
        arrays = [_argument(a, k, self._n_args) for k, a in enumerate(arrays)]
        batch = self._batch_shape(arrays)
        if batch is None:
            raw = self._single(arrays, out)
        else:
            raw = self._batched(arrays, batch, out)
        return self._shape(raw, batch, torch_out)

    def _batch_shape(self, arrays):
        expected = self._in_shapes
        if len(arrays) != len(expected):
            raise TypeError(f"compiled function: expected {len(expected) - self._n_args} vectors in v")
        batch = None
        for k, (a, shape) in enumerate(zip(arrays, expected, strict=True)):
            a_shape = np.shape(a)
            if tuple(a_shape) == shape:
                lead = ()
            elif len(a_shape) > len(shape) and tuple(a_shape[len(a_shape) - len(shape) :]) == shape:
                lead = tuple(a_shape[: len(a_shape) - len(shape)])
            else:
                raise ValueError(
                    f"compiled function: argument {k} has shape {tuple(a_shape)}; expected {shape} "
                    "or a batch of them (extra leading dimensions)"
                )
            if batch is None:
                batch = lead
            elif lead != batch:
                raise ValueError(
                    f"compiled function: argument {k} has batch shape {lead}, argument 0 has {batch}"
                )
        return batch or None

    def _single(self, arrays, out):
        if out is None:
            return self.kernel(arrays)
        slots = self.kernel.layout.slots
        if len(slots) != 1:
            raise TypeError("out= needs a compiled function with exactly one result array")
        (slot,) = slots
        dtype = np.float64 if slot.region == 0 else np.float32
        if not (
            isinstance(out, np.ndarray)
            and out.dtype == dtype
            and out.shape == slot.shape
            and out.flags.c_contiguous
        ):
            raise ValueError(f"out must be a C-contiguous {np.dtype(dtype)} array of shape {slot.shape}")
        if not out.flags.writeable:
            raise ValueError("out must be writeable")
        if not self.kernel.layout.full:
            out.fill(0)  # only nonzeros are stored
        k = self.kernel
        with k._lock:
            for view, a in zip(k._in_views, arrays, strict=True):
                view[...] = a
            from .backend.runtime import _EMPTY32, _EMPTY64

            if slot.region == 0:
                k._fn(k._in_ptr, _address(out), _address(_EMPTY32))
            else:
                k._fn(k._in_ptr, _address(_EMPTY64), _address(out))
        return [out]

    def _batched(self, arrays, batch, out):
        # Threads pay off only when each gets about a millisecond of work or more.
        points = math.prod(batch)
        statements = max(1, self.meta["statements"])
        threads = self._threads if points * statements >= THREAD_WORK else 1
        split = {"threads": threads, "min_chunk": max(1, THREAD_WORK // (2 * statements))}
        if out is None:
            return self.kernel.batch(arrays, batch, **split)
        # A simulation loop's buffer, filled in place: the kernel writes straight into it.
        layout = self.kernel.layout
        if len(layout.slots) != 1:
            raise TypeError("out= needs a compiled function with exactly one result array")
        (slot,) = layout.slots
        dtype = np.dtype(np.float64 if slot.region == 0 else np.float32)
        shape = tuple(batch) + tuple(slot.shape)
        if not (
            isinstance(out, np.ndarray)
            and out.dtype == dtype
            and out.shape == shape
            and out.flags.c_contiguous
        ):
            raise ValueError(f"out must be a C-contiguous {dtype} array of shape {shape}")
        if not out.flags.writeable:
            raise ValueError("out must be writeable")
        rows = out.reshape(math.prod(batch), -1)
        empty = np.empty((rows.shape[0], 0), dtype=np.float32 if slot.region == 0 else np.float64)
        out64, out32 = (rows, empty) if slot.region == 0 else (empty, rows)
        self.kernel.batch(arrays, batch, out64=out64, out32=out32, **split)
        return [out]

    def _shape(self, raw, batch, torch_out):
        if torch_out:
            import torch

            raw = [torch.from_numpy(r) for r in raw]
        if self.spec.sparse:
            data = raw[-1]
            value = raw[:-1]
            mat = data if batch else self._sparse_matrix(np.asarray(data))
            return (functional._pack(value, self._out_tuple), mat) if self.spec.value else mat
        n_value = self.meta["n_out"] if self.spec.value else 0
        values, rest = raw[:n_value], raw[n_value:]
        if self.spec.mode in ("jacobian", "hessian"):
            n_rows, n_cols = self.meta["nest"]
            rows_tuple = self._out_tuple if self.spec.mode == "jacobian" else self.spec.wrt_tuple
            result = functional._nest(rest, n_rows, n_cols, rows_tuple, self.spec.wrt_tuple)
        elif self.spec.mode == "jvp":
            result = functional._pack(rest, self._out_tuple)
        else:
            result = functional._pack(rest, self.spec.wrt_tuple)
        return (functional._pack(values, self._out_tuple), result) if self.spec.value else result

    @property
    def _out_tuple(self) -> bool:
        return self.spec.out_tuple

    # --- structure and interop ------------------------------------------------------------
    def _sparse_matrix(self, data):
        factory = self.__dict__.get("_sparse_factory")
        if factory is None:
            factory = self._sparse_factory = _SparseFactory(self.meta["pattern"])
        return factory(data)

    def sparsity(self):
        """The exact Jacobian pattern as a SciPy CSR matrix of ones (``solve_ivp(jac_sparsity=)``)."""
        try:
            import scipy.sparse as sp
        except ImportError:
            raise ImportError("sparsity() returns a SciPy matrix: pip install scipy") from None
        p = self.meta.get("pattern")
        if p is None:  # a second derivative's: of its own function, as on the element road
            spec = replace(self.spec, mode="jacobian", value=False, sparse="csr")
            if getattr(self.spec, "source", None) is not None:
                spec = replace(spec, graph=self.spec.source, road="elements", source=None)
            p = derivation(spec)[1]["pattern"]
        cls = sp.csr_matrix if p["kind"] == "csr" else sp.csc_matrix
        return cls((np.ones(len(p["indices"])), p["indices"], p["indptr"]), shape=tuple(p["shape"])).tocsr()

    @property
    def address(self) -> int:
        """Address of ``void kernel(const T *in, double *out64, float *out32)``. It stores only
        the nonzeros unless ``cf.kernel.layout.full``, and may add to them: zero the results
        before every call (``low_level_callable()`` is the same function)."""
        return self.kernel.address

    @property
    def ir(self) -> str:
        """The optimised LLVM IR (rebuilt from the expressions when the kernel came from the cache),
        and that of the SIMD batch kernel once a batch has built it."""
        if roads.on_loops(self.spec):
            return self._loop_kernel_ir()
        return self._ensure_built().optimized_ir + self.kernel.simd_ir

    def _loop_kernel_ir(self) -> str:
        if not self.kernel.optimized_ir:  # loaded from the disk cache: rebuilt to be shown
            self.kernel.optimized_ir = _loop_object(self.spec)[2]
        return self.kernel.optimized_ir

    def assembly(self) -> str:
        if roads.on_loops(self.spec):
            self._loop_kernel_ir()
            return self.kernel.assembly()
        return self._ensure_built().assembly()

    def program(self):
        self._ensure_built()
        return self._program

    def _ensure_built(self) -> Kernel:
        if self._program is None:
            # A loop kernel has no scalar program: the element road's, for the same mathematics,
            # serves the views that need one (program, C export, assembly).
            spec = self.spec
            if isinstance(spec, Spec):  # a second derivative's of the function, not of its gradient
                spec = replace(spec, road="elements", graph=spec.source or spec.graph, source=None)
            fresh = CompiledFunction(spec, cache=False)
            self._program = fresh._program
            self._fresh = fresh.kernel
            return fresh.kernel
        return getattr(self, "_fresh", self.kernel)

    def c_source(self, name: str = "symjac_kernel") -> tuple[str, str]:
        """Standalone C (source, header) computing the same results as the kernel."""
        from .backend.export import c_source

        return c_source(self.program(), self.kernel.layout, name)

    def write_c(self, directory, name: str = "symjac_kernel"):
        """Write ``NAME.c`` and ``NAME.h`` into ``directory``; returns their paths."""
        from .backend.export import write_c

        return write_c(self.program(), self.kernel.layout, directory, name)

    def build_shared_library(self, path, name: str = "symjac_kernel", compiler: str = "cc"):
        """Build the exported C into a shared library with the system compiler (``cc -O3``)."""
        from .backend.export import build_shared_library

        return build_shared_library(self.program(), self.kernel.layout, path, name, compiler)

    def low_level_callable(self):
        """The kernel as a ``scipy.LowLevelCallable`` (``void (double *, double *, float *)``);
        its results must be zeroed before each call, as for ``address``."""
        import scipy

        return scipy.LowLevelCallable(self.kernel._fn)

    @property
    def entry(self):
        """This function as a native builtin: the fastest way to call it at single points.

        A CPython C function emitted in LLVM IR (``symjac.backend.entry``) reads a C-contiguous array
        of the input's exact shape and dtype, calls the kernel and returns a fresh result, with
        no ctypes in between; any other call (a batch, torch tensors, ``v=``, ``out=``) goes to
        the compiled function itself. Functions with several inputs or results get that call.

        Example:
            >>> import numpy as np, symjac
            >>> jac = symjac.compile(lambda x: x * x[0], np.zeros(2)).entry
            >>> jac(np.array([2.0, 3.0]))
            array([[4., 0.],
                   [3., 2.]])
        """
        entry = self.__dict__.get("_entry")
        if entry is None:
            from .backend.entry import native_entry

            entry = self._entry = native_entry(self) or self.__call__
        return entry

    def jax(self):
        """This function as a JAX op: it runs inside ``jax.jit`` and ``jax.vmap``, and JAX
        differentiates it with symjac's exact derivative (see :mod:`symjac.interop.jax_interop`).

        Example:
            >>> import numpy as np, symjac
            >>> cf = symjac.compile(lambda x: (x**3).sum(), np.zeros(2))
            >>> import jax
            >>> jax.jit(cf.jax())(jax.numpy.array([1.0, 2.0])).tolist()
            [3.0, 12.0]
        """
        from .interop.jax_interop import JaxOp

        op = self.__dict__.get("_jax_op")
        if op is None:
            op = self._jax_op = JaxOp(self)
        return op

    def torch(self):
        """This function as a differentiable torch op: forward is the kernel, backward the compiled vjp.

        The op takes torch tensors (broadcast over leading batch dimensions) and returns them with
        this function's nesting; autograd reaches every argument, runtime parameters included.

        Example:
            >>> import torch, symjac
            >>> cf = symjac.compile(lambda x: x.sin(), torch.zeros(2))
            >>> x = torch.tensor([0.0, 1.0], requires_grad=True)
            >>> cf.torch()(x).diagonal().sum().backward()   # d/dx sum(cos(x)) = -sin(x)
            >>> x.grad
            tensor([-0.0000, -0.8415])
        """
        from .interop.torch_op import TorchOp

        op = self.__dict__.get("_torch_op")
        if op is None:
            op = self._torch_op = TorchOp(self)
        return op

    def __reduce__(self):
        return (CompiledFunction, (self.spec, self._cache_name is not None))

    def __repr__(self) -> str:
        shapes = self._in_shapes[: self._n_args]
        return f"CompiledFunction(mode={self.spec.mode!r}, wrt={self.spec.wrt}, inputs={shapes})"


def _argument(a, k: int, n_args: int):
    """``a`` as an array whose values the kernel reads without losing their meaning."""
    arr = a if isinstance(a, np.ndarray) else np.asarray(a)
    what = f"compiled function: argument {k}" if k < n_args else f"compiled function: v[{k - n_args}]"
    functional._check_array(arr, what)
    if arr.dtype.kind == "c":
        raise TypeError(
            f"{what} is complex ({arr.dtype}); symjac computes in real arithmetic and would drop "
            "its imaginary part. Pass real arrays (x.real and x.imag as separate inputs)."
        )
    if arr.dtype.kind not in "fiub":
        raise TypeError(
            f"{what} has dtype {arr.dtype}; pass numbers, e.g. numpy.asarray(x, dtype=float)"
            + (" (this object array holds None)" if any(e is None for e in arr.flat) else "")
        )
    return arr


class _SparseFactory:
    """SciPy matrices with one fixed pattern, made in well under a microsecond.

    SciPy's constructor re-validates the pattern (about 15 us); every result here takes one
    validated template's state with its own copies of the index arrays (0.2 us each for small
    patterns, less than filling ``data``), so that in-place structural changes such as
    ``eliminate_zeros()`` work and never touch another result.
    """

    def __init__(self, pattern):
        import scipy.sparse as sp

        self._cls = sp.csr_matrix if pattern["kind"] == "csr" else sp.csc_matrix
        indices = np.asarray(pattern["indices"], dtype=np.int32)
        indptr = np.asarray(pattern["indptr"], dtype=np.int32)
        template = self._cls((np.zeros(len(indices)), indices, indptr), shape=tuple(pattern["shape"]))
        template.indices.setflags(write=False)  # the master copy: results get their own
        template.indptr.setflags(write=False)
        self._args = (template.indices, template.indptr, template.shape)
        state = dict(getattr(template, "__dict__", {}))
        state.pop("data", None)
        self._state = state if {"indices", "indptr"} <= state.keys() else None

    def __call__(self, data):
        indices, indptr, shape = self._args
        if self._state is None:  # an unexpected SciPy layout: take the validated, slower road
            return self._cls((data, indices.copy(), indptr.copy()), shape=shape)
        m = self._cls.__new__(self._cls)
        m.__dict__.update(self._state)
        m.data = data
        m.indices = indices.copy()
        m.indptr = indptr.copy()
        return m


def wrt_indices(wrt, n: int, api: str) -> tuple[tuple, bool]:
    """``(indices, as a tuple)`` of a ``wrt=`` argument over ``n`` inputs, checked."""
    if wrt is None:
        return tuple(range(n)), n > 1
    single = isinstance(wrt, (int, np.integer)) and not isinstance(wrt, bool)
    items = (wrt,) if single else wrt
    if not isinstance(items, (tuple, list, range)) or not all(
        isinstance(w, (int, np.integer)) and not isinstance(w, bool) for w in items
    ):
        raise TypeError(f"{api}: wrt must be an input index or a tuple of them, got {wrt!r}")
    indices = tuple(int(w) for w in items)
    for w in indices:
        if not 0 <= w < n:
            raise ValueError(f"{api}: wrt index {w} is out of range for {n} inputs (0 to {n - 1})")
    if not indices:
        raise ValueError(f"{api}: wrt is empty; name at least one input to differentiate")
    seen = {w for w in indices if indices.count(w) > 1}
    if seen:
        raise ValueError(f"{api}: wrt lists input {min(seen)} more than once ({wrt!r}); name each input once")
    return indices, not single


@errors.public
def compile(  # noqa: A001
    func, *example_inputs, mode="jacobian", wrt=None, value=False, sparse=None, cache=True, expand="auto"
):
    """Compile ``func``'s derivative once; the result is called like a function.

    ``cf = symjac.compile(func, *example_inputs)`` traces func on inputs shaped like the examples
    (their values are ignored, so every captured constant is fixed now). Then ``cf(*inputs)``
    returns what ``symjac.jacobian(func, inputs)`` returns, with the same nesting, shapes and
    dtypes. Inputs with extra leading dimensions (the same for all) are a batch: results gain
    those dimensions, ``batch + out.shape + in.shape``, computed in one native loop (on all
    cores for large batches).

    Args:
        mode: "jacobian", "hessian" (scalar func), or a product "jvp", "vjp", "hvp" whose
            vector is passed as ``cf(*inputs, v=...)``.
        wrt: index (or tuple of indices) of the inputs to differentiate; the others are runtime
            parameters (masses, gains, time), passed at every call but not differentiated.
        value: also return the function's value, from the same kernel: ``(value, jacobian)``.
        sparse: "csr" or "csc": return the Jacobian as a SciPy sparse matrix with a fixed,
            exact pattern (``cf.sparsity()``), filling only its nonzeros.
        cache: keep the object code on disk (``$SYMJAC_CACHE_DIR``) for the next process.
        expand: "elements" expands every tensor element to SymPy and compiles straight-line
            code (fastest for small models); "arrays" compiles each array operation as a loop
            nest with its exact array-level derivative (builds in time that grows with the
            operations, not the elements; a Hessian or hvp as the Jacobian or jvp of the
            function's gradient graph, symjac.arrays.gradient; with sparse=, elementwise ops,
            reductions, gathers and contractions with a constant operand only, and a structural
            pattern; sparse tangents for a dense result too where they are much cheaper);
            "auto" picks by the model's size and ops.

    Example:
        >>> import numpy as np, symjac
        >>> cf = symjac.compile(lambda x: x.exp().sum(dim=1), np.zeros((2, 2)))
        >>> cf(np.zeros((2, 2)))
        array([[[1., 1.],
                [0., 0.]],
        <BLANKLINE>
               [[0., 0.],
                [1., 1.]]])
        >>> cf(np.zeros((5, 2, 2))).shape      # a batch of 5 points
        (5, 2, 2, 2)
    """
    if mode not in MODES:
        raise ValueError(f"compile: mode must be one of {MODES}, got {mode!r}")
    if sparse not in (None, "csr", "csc"):
        raise ValueError(f"compile: sparse must be None, 'csr' or 'csc', got {sparse!r}")
    if sparse and mode != "jacobian":
        raise ValueError("compile: sparse= applies to mode='jacobian'")
    from .symbolic import _example

    inputs = tuple(_example(x) for x in example_inputs)
    n = len(inputs)
    wrt_t, wrt_tuple = wrt_indices(wrt, n, "compile")
    functional._check_inputs(inputs, "compile")
    with gc_paused():
        call = functional._Call(func, inputs, n > 1, "compile")
    if mode in ("hessian", "hvp"):
        functional._single_output(call, f"compile(mode={mode!r})")
    if mode in roads.GRADIENT_MODES:
        graph, road, source = roads.choose_second(call.graph, mode, expand, wrt_t)
    else:
        graph, road, source = call.graph, roads.choose(call.graph, mode, sparse, expand, wrt_t), None
    names = tuple(call.names())
    spec = Spec(
        graph, names, mode, wrt_t, wrt_tuple, call.out_tuple, bool(value), sparse, road=road, source=source
    )
    return CompiledFunction(spec, cache=cache)
