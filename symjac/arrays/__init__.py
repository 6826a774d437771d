"""The array road: exact array-level derivative rules, evaluated without expanding elements.

Beside the per-element road (SymPy expressions per tensor element, the tape, LLVM kernels), a
recorded graph whose ops all have array-level rules can be differentiated operation by operation
(:mod:`symjac.arrays.forward`), as CasADi's MX graph is beside its SX graph. ``choose`` is the
cost model that picks a road for the drop-in API.
"""

from __future__ import annotations

from .elementwise import Unsupported
from .forward import element_operations, evaluate, tangent_elements, unsupported_ops

EXPAND_MODES = ("auto", "elements", "arrays")
# The element road compiles one statement per scalar operation; from this many on, its build
# (about 0.5 ms a statement, LLVM included) costs more than the array road's whole call.
ELEMENTS_FROM = 400
# The array road holds dense tangents; beyond this many elements the element road's sparse
# program is cheaper (a 2-D grid's Jacobian is mostly zeros).
TANGENT_BUDGET = 20_000_000


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
    if missing or tangent_elements(graph, width) > TANGENT_BUDGET:
        return "elements"
    return "arrays" if element_operations(graph) >= ELEMENTS_FROM else "elements"


__all__ = ["EXPAND_MODES", "Unsupported", "choose", "element_operations", "evaluate", "tangent_elements"]
