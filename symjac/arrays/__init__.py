"""The array road: exact array-level derivative rules, evaluated without expanding elements.

Beside the per-element road (SymPy expressions per tensor element, the tape, LLVM kernels), a
recorded graph whose ops all have array-level rules can be differentiated operation by operation
(:mod:`symjac.arrays.forward`), as CasADi's MX graph is beside its SX graph. ``choose`` is the
cost model that picks a road for the drop-in API.
"""

from __future__ import annotations

from . import sparse
from .elementwise import Unsupported
from .forward import element_operations, evaluate, tangent_elements, unsupported_ops

EXPAND_MODES = ("auto", "elements", "arrays")
# Below this many scalar operations the element road's build is short (tens of ms) and its
# kernel the fastest call there is.
ELEMENTS_FROM = 400
# The cost model's two prices, as measured on one 2-core machine (benchmarks/dropin.py): the
# element road's build per scalar operation (tape, lowering, LLVM), and the array road's work
# per tangent element. Only their ratio matters.
BUILD_SECONDS_PER_OPERATION = 1e-3
ARRAY_SECONDS_PER_TANGENT_ELEMENT = 3e-8
# Dense tangents beyond this many elements (seconds of work, gigabytes at once) are refused to
# the array road whatever the element road costs.
TANGENT_BUDGET = 500_000_000


def build_estimate(graph) -> float:
    """Seconds the element road would take to build ``graph``'s kernel (the ski-rental price)."""
    return element_operations(graph) * BUILD_SECONDS_PER_OPERATION


def choose(graph, width: int, expand: str, what: str) -> str:
    """``"arrays"`` or ``"elements"`` for differentiating ``graph`` along ``width`` directions."""
    if expand not in EXPAND_MODES:
        raise ValueError(f'{what}: expand must be "auto", "elements" or "arrays", got {expand!r}')
    if expand == "elements":
        return "elements"
    missing = unsupported_ops(graph)
    if expand == "arrays":
        if missing:
            raise ValueError(
                f"{what}: expand='arrays' cannot differentiate {', '.join(sorted(missing))} at the "
                "array level yet; use expand='auto' or 'elements'"
            )
        return "arrays"
    tangents = tangent_elements(graph, width)
    if missing or tangents > TANGENT_BUDGET or element_operations(graph) < ELEMENTS_FROM:
        return "elements"
    # The cheaper first call. Repeated calls move to the element road once their array-road
    # time pays for its build (functional._values): never more than twice the better choice.
    return "arrays" if tangents * ARRAY_SECONDS_PER_TANGENT_ELEMENT < build_estimate(graph) else "elements"


__all__ = [
    "EXPAND_MODES",
    "Unsupported",
    "build_estimate",
    "choose",
    "element_operations",
    "evaluate",
    "sparse",
    "tangent_elements",
]
