"""What a cached kernel's metadata must satisfy before symjac loads its object code.

The disk cache (:mod:`symjac.backend.diskcache`) holds object code and the JSON that sizes the
buffers it writes to. A file there may be stale, broken or hostile, so each field is checked
against what the traced function itself implies (its shapes, its sparsity pattern, the arrays a
loop kernel reads by symbol) before the code runs; a mismatch rebuilds the kernel.
"""

from __future__ import annotations

import math

import numpy as np

from . import roads
from .backend import diskcache, runtime
from .backend.runtime import Layout, ResultSlot
from .elements.derive import _input_specs


def layout_json(layout: Layout) -> dict:
    return {
        "in_shapes": [list(s) for s in layout.in_shapes],
        "slots": [[s.region, s.offset, list(s.shape)] for s in layout.slots],
        "n64": layout.n64,
        "n32": layout.n32,
        "compute": layout.compute,
        "full": layout.full,
    }


def _count(v) -> int:
    if type(v) is not int or v < 0:
        raise ValueError(f"expected a count, got {v!r}")
    return v


def _counts(v) -> np.ndarray:
    """A JSON list of counts as an int64 array (a 2 x 128^2 grid's pattern: 200,000 of them,
    checked one by one in 45 ms). Floats, strings, None, nesting and ints past int64 all give
    NumPy another dtype or shape."""
    if type(v) is not list:
        raise ValueError(f"expected a list of counts, got {type(v).__name__}")
    try:
        a = np.array(v) if v else np.zeros(0, dtype=np.int64)
    except (ValueError, OverflowError, TypeError):
        raise ValueError("expected a list of counts") from None
    if a.dtype.kind != "i" or a.ndim != 1 or np.any(a < 0):  # int32 on Windows with NumPy 1.x
        raise ValueError("expected a list of counts")
    return a.astype(np.int64, copy=False)


def _same_pattern(a: dict, b: dict) -> bool:
    return (
        a.keys() == b.keys()
        and (a["kind"], list(a["shape"])) == (b["kind"], list(b["shape"]))
        and all(np.array_equal(a[k], b[k]) for k in ("indices", "indptr"))
    )


def _shape_of(v) -> tuple:
    if not isinstance(v, list):
        raise ValueError(f"expected a shape, got {v!r}")
    return tuple(_count(n) for n in v)


def check_meta(meta: dict, spec) -> None:
    """Raise ValueError unless cached metadata is well formed, consistent, and fits ``spec``:
    it sizes the buffers the cached object code writes to."""
    m = meta["layout"]
    if not isinstance(m, dict) or m["compute"] not in ("float32", "float64") or type(m["full"]) is not bool:
        raise ValueError("bad layout")
    shapes = [_shape_of(s) for s in m["in_shapes"]]
    sizes = [_count(m["n64"]), _count(m["n32"])]
    for slot in m["slots"]:
        region, offset, shape = slot
        if region not in (0, 1) or _count(offset) + math.prod(_shape_of(shape)) > sizes[region]:
            raise ValueError("a result slot outside its buffer")
    inputs = (
        [tuple(a.shape) for a in spec.inputs]
        if getattr(spec, "graph", None) is None
        else [tuple(shape) for shape, _ in _input_specs(spec.graph)]
    )
    products = [_shape_of(s) for s in meta.get("v_shapes", [])]
    if shapes != inputs + products or bool(products) != (spec.mode in ("jvp", "vjp", "hvp", "vhp")):
        raise ValueError("input shapes differ from the function's")
    for field in ("statements", "n_out"):
        _count(meta[field])
    if spec.mode in ("jacobian", "hessian"):
        n_rows, n_cols = meta["nest"]
        if _count(n_cols) != len(spec.wrt) or _count(n_rows) < 1:
            raise ValueError("bad nesting")
    if spec.sparse:
        p = meta["pattern"]
        n_rows, n_cols = (_count(n) for n in p["shape"])
        indptr, indices = _counts(p["indptr"]), _counts(p["indices"])
        n_major, n_minor = (n_rows, n_cols) if p["kind"] == "csr" else (n_cols, n_rows)
        if (
            p["kind"] != spec.sparse
            or len(indptr) != n_major + 1
            or indptr[0] != 0
            or indptr[-1] != len(indices)
            or np.any(indptr[1:] < indptr[:-1])
            or np.any(indices >= n_minor)
        ):
            raise ValueError("bad sparsity pattern")


def check_loop_entry(meta: dict, obj: bytes, spec) -> None:
    """``check_meta`` for a loop kernel, which also reads arrays by symbol: bind them (recomputed
    from the graph, the pattern too for sparse=) and refuse an entry that names any other."""
    from .arrays import data, loops, sparse_loops, sparse_plan

    check_meta(meta, spec)
    runtime.vecmath.load_libmvec()  # vector math calls resolve when the object loads
    graph = spec.graph
    mode = roads.loop_mode(spec)  # a second derivative's kernel: of its gradient graph
    outs = [tuple(graph.shape(o)) for o in graph.outputs]
    shapes = [tuple(graph.shape(o)) for o in loops.value_nodes(graph, roads.stored_values(spec))]
    kind = roads.sparse_kind(spec)
    if meta.get("road") != spec.road:
        raise ValueError(f"a kernel of road {meta.get('road')!r}, not {spec.road!r}")
    if kind:
        try:
            bound = sparse_loops.bind(graph, spec.wrt, kind)
        except loops.Unsupported as exc:
            raise ValueError(f"no sparse loop kernel: {exc}") from None
        plan = sparse_plan.plan(graph, spec.wrt, kind)
        if spec.sparse and not _same_pattern(meta["pattern"], plan.pattern):
            raise ValueError("the pattern differs from the graph's")
        if meta["statements"] != roads.sparse_work(graph, spec.wrt, kind):
            raise ValueError("the plan differs from the graph's")
    else:
        bound = data.bind_data(graph)
    specs = _input_specs(graph)
    if spec.sparse:
        shapes.append((plan.nnz,))
    elif mode == "vjp":
        shapes += [tuple(specs[j][0]) for j in spec.wrt]
    elif mode == "jvp":
        shapes += outs
    else:
        shapes += [o + tuple(specs[j][0]) for o in outs for j in spec.wrt]
    # A dense Jacobian from sparse tangents writes only its pattern: its layout is not full.
    full = spec.road != "sparse-loops"
    products = loops.product_shapes(graph, spec.wrt, mode)
    if meta["layout"] != layout_json(loops.result_layout(graph, shapes, full, products)):
        raise ValueError("the layout differs from the graph's")
    named = external_symbols(obj)
    if not named <= bound or sorted(named) != meta["symbols"]:
        raise ValueError("the object code reads arrays that this graph does not have")


def external_symbols(obj: bytes) -> set:
    """The arrays a loop kernel reads by symbol (symjac.arrays.data._data_symbol)."""
    if not diskcache._ELF:  # unchecked there: the bound arrays are the graph's own either way
        return set()
    return {s for s in diskcache.undefined_symbols(obj) if s.startswith(("symjac_data_", "symjac_index_"))}


def check_simd_meta(meta: dict, obj: bytes, layout: Layout) -> None:
    lanes = meta["lanes"]
    if type(lanes) is not int or (lanes != runtime.simd_lanes(layout) if obj else lanes != 0):
        raise ValueError(f"lanes {lanes!r} do not fit this kernel")


def layout_from_json(m: dict) -> Layout:
    slots = tuple(ResultSlot(r, o, tuple(s)) for r, o, s in m["slots"])
    shapes = tuple(tuple(s) for s in m["in_shapes"])
    return Layout(shapes, slots, m["n64"], m["n32"], m["compute"], bool(m.get("full", False)))
