"""Which road ``symjac.compile`` takes: per-element SymPy, or array-level loop kernels (forward
tangents, reverse adjoints, or sparse tangents), from the model's size and ops."""

from __future__ import annotations

import functools
import math

from .arrays import GRADIENT_EQUATIONS, LOOP_MODES, LOOPS_FROM, element_operations
from .elements.derive import _input_specs

# The same for sparse= Jacobians (symjac.arrays.sparse_loops), whose element road stays quick
# longer: the 2 x 16^2 Brusselator grid (9000) builds in 0.27 s as elements and then calls in
# 3.6 us, 2 x 32^2 (36000) in 0.9-2.3 s as elements, 0.23 s as loops.
SPARSE_LOOPS_FROM = 10_000


def choose(graph, mode: str, sparse, expand: str, wrt: tuple) -> str:
    """``"loops"``, ``"reverse-loops"``, ``"sparse-loops"`` or ``"elements"`` for ``compile``'s
    ``expand=`` (see there), differentiating with respect to inputs ``wrt``."""
    from .arrays import EXPAND_MODES, TANGENT_BUDGET, reverse
    from .arrays.loops import unsupported

    if expand not in EXPAND_MODES:
        raise ValueError(f'compile: expand must be "auto", "elements" or "arrays", got {expand!r}')
    if expand == "elements":
        return "elements"
    # Small models: the element road builds in tens of ms, and its straight-line kernel is the
    # fastest there is. Large ones: its build grows with the elements, the loops' with the ops.
    large = element_operations(graph) >= (SPARSE_LOOPS_FROM if sparse else LOOPS_FROM)
    road = "loops"
    if mode not in LOOP_MODES:
        why = f"mode={mode!r}"
    elif mode != "jacobian":  # one direction: a vjp by adjoints, a jvp by tangents
        why = unsupported(graph)
        road = "reverse-loops" if mode == "vjp" else "loops"
        elements = sum(math.prod(graph.shape(n)) for n in range(len(graph.eqns)))
        if not why and elements > TANGENT_BUDGET:
            why = f"values of {elements} elements"
    elif sparse:
        why = _sparse_unsupported(graph, wrt, sparse) if large or expand == "arrays" else None
    else:
        why = unsupported(graph)
        shapes = [shape for shape, _ in _input_specs(graph)]
        width = sum(math.prod(shapes[j]) for j in wrt)
        elements = sum(math.prod(graph.shape(n)) for n in range(len(graph.eqns)))
        dense = width * elements  # the dense forward mode's tangents (no sparsity)
        entries = width * sum(math.prod(graph.shape(o)) for o in graph.outputs)  # the result's
        adjoints = reverse.width(graph)
        if width >= REVERSE_FROM_WIDTH and 2 * adjoints <= width:
            road, dense = "reverse-loops", adjoints * elements
        if not why and (large or expand == "arrays") and entries <= TANGENT_BUDGET:
            if _sparse_tangents_pay(graph, wrt, width, dense):
                return "sparse-loops"
        if not why and dense > TANGENT_BUDGET:
            why = f"{'adjoints' if road != 'loops' else 'tangents'} of {dense} elements (the dense work)"
    if expand == "arrays":
        if why:
            raise ValueError(
                f"compile: expand='arrays' cannot compile {why} as array-level loops yet; "
                "use expand='auto' or 'elements'"
            )
        return road
    return road if not why and large else "elements"


# Reverse mode (symjac.arrays.reverse: an adjoint row per element, one column per output element)
# replaces forward mode when the outputs are at most half the inputs and forward tangent rows fill
# a vector. Measured on the 2-core AVX-512 machine, batches on one thread: MLPs 8-32-32-4,
# 8-64-64-4 and 8-256-256-4 ran 1.4x, 1.7x and 1.9x faster reversed; 4-16-16-2 (4 inputs, 2
# outputs) 0.93x and the ReLU MLP 4-6-3 0.72x (short rows: its zeroing and read-modify-writes are
# not paid back).
REVERSE_FROM_WIDTH = 8


# Sparse tangents replace dense ones in a dense Jacobian when their work is under this fraction of
# the dense tangents': N-body N=20 (pair nodes of 6 entries a row, 120 columns) is a tenth.
SPARSE_TANGENTS_BELOW = 0.5


def _sparse_tangents_pay(graph, wrt, width: int, dense: int) -> bool:
    """Whether sparse tangents (symjac.arrays.sparse_loops) are clearly cheaper than dense
    tangents or adjoints (``dense``: their work) for this dense Jacobian: first by an upper bound
    on the entries (no plan), then by the plan's own entries."""
    from .arrays import sparse, sparse_plan
    from .arrays.elementwise import Unsupported

    if sparse.ENTRY_COST * sparse_plan.entries_bound(graph, width) >= SPARSE_TANGENTS_BELOW * dense:
        return False
    try:
        entries = sparse_plan.plan(graph, wrt, "dense").work
    except Unsupported:
        return False
    return sparse.ENTRY_COST * entries < SPARSE_TANGENTS_BELOW * dense


def _sparse_unsupported(graph, wrt, kind) -> str | None:
    """Why the sparse loop road cannot build this Jacobian: its plan (kept for the build) fails."""
    from .arrays import sparse_plan
    from .arrays.elementwise import Unsupported

    try:
        sparse_plan.plan(graph, wrt, kind)
    except Unsupported as exc:
        return str(exc)
    return None


# A second derivative on a loop road compiles its gradient graph (symjac.arrays.gradient): the
# Hessian is that graph's Jacobian, the hvp its jvp.
GRADIENT_MODES = {"hessian": "jacobian", "hvp": "jvp", "vhp": "jvp"}  # vhp = hvp: H is symmetric
# expand="auto" compiles a gradient graph as loops from LOOPS_FROM element operations, as any
# graph. python benchmarks/second.py (Hessians of tanh MLP losses, batches of 1000 points) on the
# 2-core machine: 4-16-16-2 (850 in its gradient graph) built in 0.75 s as elements and 0.60 s
# as loops, but batched at 0.31 against 0.50 us a point; 8-32-32-4 (3100) 5.4 s against 0.63 s,
# and 3.8 against 1.1 us.


def choose_second(graph, mode: str, expand: str, wrt: tuple):
    """``(graph, road, source)`` for a second derivative (``mode`` in GRADIENT_MODES): the gradient
    graph of ``graph`` (its ``source``) on a loop road where that graph's Jacobian (jvp) would
    take one, else ``graph`` itself on the element road (``source`` None)."""
    from .arrays import gradient
    from .arrays.elementwise import Unsupported

    if expand == "elements":
        return graph, "elements", None
    try:
        grad = gradient.graph(graph, wrt)
    except Unsupported as exc:
        if expand == "arrays":
            raise ValueError(
                f"compile: expand='arrays' cannot compile mode={mode!r} as array-level loops yet ({exc}); "
                "use expand='auto' or 'elements'"
            ) from None
        choose(graph, mode, None, expand, wrt)  # the same check of expand= as every mode
        return graph, "elements", None
    road = choose(grad, GRADIENT_MODES[mode], None, expand, wrt)
    return (grad, road, graph) if road in LOOP_ROADS else (graph, "elements", None)


@functools.lru_cache(maxsize=64)
def gradient_loops_likely(graph, wrt: tuple, mode: str) -> bool:
    """``symjac.arrays.loops_likely`` for a second derivative: of ``graph``'s gradient graph."""
    from .arrays import gradient, loops_likely
    from .arrays.elementwise import Unsupported

    if GRADIENT_EQUATIONS * element_operations(graph) < LOOPS_FROM:
        return False  # before the gradient graph: the drop-in asks on every array-road call
    try:
        grad = gradient.graph(graph, wrt)
    except Unsupported:
        return False
    return loops_likely(grad, wrt, GRADIENT_MODES[mode])


def loop_mode(spec) -> str:
    """What the loop kernel of ``spec`` computes of its graph (see GRADIENT_MODES)."""
    return (
        GRADIENT_MODES.get(spec.mode, spec.mode) if getattr(spec, "source", None) is not None else spec.mode
    )


def stored_values(spec):
    """The ``value`` argument of a loop kernel's builder (``symjac.arrays.loops.value_nodes``): a
    second derivative stores its function's value, not its gradient graph's outputs."""
    source = getattr(spec, "source", None)
    return source.outputs if source is not None and spec.value else spec.value


LOOP_ROADS = ("loops", "reverse-loops", "sparse-loops")


def on_loops(spec) -> bool:
    return getattr(spec, "road", "elements") in LOOP_ROADS


def sparse_kind(spec) -> str | None:
    """The sparse loop plan's kind of a loop road spec: its sparse=, "dense" on the
    sparse-loops road, None on the dense loop road."""
    return spec.sparse or ("dense" if spec.road == "sparse-loops" else None)


def sparse_work(graph, wrt, kind: str) -> int:
    """About how many operations one point of a sparse loop kernel costs (threads split by it)."""
    from .arrays import sparse_plan

    work = sparse_plan.plan(graph, wrt, kind).work
    return work + sum(math.prod(graph.shape(n)) for n in range(len(graph.eqns)))
