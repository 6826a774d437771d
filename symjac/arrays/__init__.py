"""The array road: exact array-level derivative rules, evaluated without expanding elements.

Beside the per-element road (SymPy expressions per tensor element, the tape, LLVM kernels), a
recorded graph whose ops all have array-level rules can be differentiated operation by operation
(:mod:`symjac.arrays.forward`), as CasADi's MX graph is beside its SX graph. ``choose`` is the
cost model that picks a road for the drop-in API.
"""

from __future__ import annotations

import math

from . import second, sparse
from .elementwise import Unsupported
from .forward import element_operations, evaluate, tangent_elements, unsupported_ops

EXPAND_MODES = ("auto", "elements", "arrays")
SECOND_ORDER = ("hessian", "hvp", "vhp")
# Below this many scalar operations the element road's build is short (tens of ms) and its
# kernel the fastest call there is. At 128 (a ReLU MLP 4-6-3 with log_softmax) it already took
# 0.3 s in a warm process, the array road 0.02 s; ski rental moves repeated calls to the kernel.
ELEMENTS_FROM = 100
# The cost model's two prices, as measured on one 2-core machine (benchmarks/dropin.py): the
# element road's build per scalar operation (tape, lowering, LLVM), and the array road's work
# per tangent element. Only their ratio matters.
BUILD_SECONDS_PER_OPERATION = 1e-3
ARRAY_SECONDS_PER_TANGENT_ELEMENT = 3e-8
# Dense tangents beyond this many elements (seconds of work, gigabytes at once) are refused to
# the array road whatever the element road costs.
TANGENT_BUDGET = 500_000_000


# Element operations from which expand="auto" takes the loop road (symjac.compile; the drop-in's
# kernels too). Measured on a 2-core machine (benchmarks/loops.py): the tanh MLP 8-32-32-4 (3000)
# builds in 0.3 s as loops against 1.7-3.6 s as elements; 4-16-16-2 (800) builds in about 0.5 s
# either way, and there the element road's straight-line kernel is the faster single call.
LOOPS_FROM = 2000
LOOP_MODES = ("jacobian", "vjp", "jvp")  # what loop kernels compute (vjp by adjoints, jvp by tangents)


def loops_likely(graph, wrt: tuple, mode: str = "jacobian") -> bool:
    """Whether ``symjac.compile`` would likely give ``mode`` of ``graph`` a loop kernel: a large
    model whose dense tangents or adjoints fit the budget (shapes only, its ops not checked;
    nothing heavy is imported: the drop-in asks on its first call)."""
    if mode not in LOOP_MODES or element_operations(graph) < LOOPS_FROM:
        return False
    sizes = {params[0]: math.prod(params[1]) for op, _, params in graph.eqns if op == "input"}
    outputs = sum(math.prod(graph.shape(o)) for o in graph.outputs)
    width = 1 if mode != "jacobian" else min(sum(sizes[j] for j in wrt), outputs)
    return width * sum(math.prod(graph.shape(n)) for n in range(len(graph.eqns))) <= TANGENT_BUDGET


# A loop kernel's build (symjac.compile's array-level loops, which a large Jacobian's kernel
# takes): LLVM's fixed part and a few ms per equation. Measured on the 2-core machine: the tanh
# MLP 8-32-32-4 (15 equations) 0.1 s, N-body N=100 (40) 0.3-0.45 s.
LOOP_BUILD_SECONDS = 0.05
LOOP_BUILD_SECONDS_PER_EQUATION = 0.006
GRADIENT_EQUATIONS = 3  # a gradient graph's equations per equation of its function (about)


def build_estimate(graph, what: str = "jacobian", width: int = 1, loops: bool = False) -> float:
    """Seconds the kernel of ``graph`` would take to build (the ski-rental price): a loop
    kernel's with ``loops``, else the element road's, where a second derivative differentiates
    each of the ``width`` first ones again."""
    if loops:  # a second derivative's kernel compiles the gradient graph: its equations, and theirs
        equations = len(graph.eqns) * (GRADIENT_EQUATIONS if what in SECOND_ORDER else 1)
        return LOOP_BUILD_SECONDS + LOOP_BUILD_SECONDS_PER_EQUATION * equations
    factor = max(1, width) if what in SECOND_ORDER else 1
    return element_operations(graph) * BUILD_SECONDS_PER_OPERATION * factor


def _tangents(graph, width: int, what: str) -> float:
    if what in SECOND_ORDER:  # hvp, vhp: the gradient's tangent along v; hessian: along the identity
        return second.tangent_elements(graph, width if what == "hessian" else 1)
    return tangent_elements(graph, width)


def feasible(graph, width: int, what: str) -> bool:
    """Whether the array road can differentiate ``graph`` (``what``) within the tangent budget."""
    missing = second.unsupported_ops(graph) if what in SECOND_ORDER else unsupported_ops(graph)
    return not missing and _tangents(graph, width, what) <= TANGENT_BUDGET


def choose(graph, width: int, expand: str, what: str, loops: bool = False) -> str:
    """``"arrays"`` or ``"elements"`` (a kernel: per-element, or loops with ``loops``) for
    differentiating ``graph`` along ``width`` directions."""
    if expand not in EXPAND_MODES:
        raise ValueError(f'{what}: expand must be "auto", "elements" or "arrays", got {expand!r}')
    if expand == "elements":
        return "elements"
    order = 2 if what in SECOND_ORDER else 1
    missing = second.unsupported_ops(graph) if order == 2 else unsupported_ops(graph)
    if expand == "arrays":
        if missing:
            raise ValueError(
                f"{what}: expand='arrays' cannot differentiate {', '.join(sorted(missing))} at the "
                f"array level{' to second order' if order == 2 else ''} yet; use expand='auto' or 'elements'"
            )
        return "arrays"
    tangents = _tangents(graph, width, what)
    if missing or tangents > TANGENT_BUDGET or element_operations(graph) < ELEMENTS_FROM:
        return "elements"
    # The cheaper first call. Repeated calls move to the element road once their array-road
    # time pays for its build (functional._values): never more than twice the better choice.
    cheaper = tangents * ARRAY_SECONDS_PER_TANGENT_ELEMENT < build_estimate(graph, what, width, loops)
    return "arrays" if cheaper else "elements"


__all__ = [
    "EXPAND_MODES",
    "LOOPS_FROM",
    "LOOP_MODES",
    "SECOND_ORDER",
    "Unsupported",
    "build_estimate",
    "choose",
    "feasible",
    "element_operations",
    "evaluate",
    "loops_likely",
    "second",
    "sparse",
    "tangent_elements",
]
