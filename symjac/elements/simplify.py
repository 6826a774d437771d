"""Turn result expressions into a straight-line Program: common subexpressions first.

Common-subexpression elimination (``sympy.cse``) is the only simplification on the code path:
it is linear-ish in expression size, where ``sympy.simplify`` is unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from ..progress import stage

F64_REGION, F32_REGION = 0, 1


@dataclass(frozen=True)
class Program:
    """Straight-line code: load inputs, assign temporaries in order, store results.

    ``slots`` maps each input symbol to its index in the input buffer; ``stores`` are
    ``(region, offset, expr)`` with region F64_REGION or F32_REGION of the output buffers.
    """

    slots: dict
    assignments: tuple
    stores: tuple
    compute: str  # "float64" or "float32"

    def op_count(self) -> int:
        exprs = [e for _, e in self.assignments] + [e for _, _, e in self.stores]
        return sum(sympy.count_ops(e) for e in exprs)


def build_program(stores, slots: dict, compute: str, tape=None) -> Program:
    """CSE over every stored expression together, so blocks share their work.

    Stores already in terms of a ``tape`` (``symjac.elements.tape``) share their work by construction:
    the program is the tape's live temporaries, with no CSE pass.
    """
    exprs = [sympy.sympify(e) for _, _, e in stores]
    if tape is not None:
        return Program(slots, tuple(tape.needed(exprs)), tuple(stores), compute)
    temps = sympy.numbered_symbols("t", cls=sympy.Dummy)
    with stage("common-subexpression elimination", len(exprs)):
        assignments, reduced = sympy.cse(exprs, symbols=temps, order="none") if exprs else ([], [])
    new_stores = tuple((r, off, e) for (r, off, _), e in zip(stores, reduced, strict=True))
    return Program(slots, tuple(assignments), new_stores, compute)
