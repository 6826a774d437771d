"""Exact derivatives with SymPy, differentiating each element only by the symbols it contains.

Results are sparse: ``Entries`` maps ``(output i, input j)`` to a list of ``(row, col, expr)``
with flat row/col indices into ``out_i`` and ``in_j``. A pair that is absent is exactly zero,
which is what strict mode and the zero-Jacobian rule check (torch-semantics.md section 11).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import sympy

from ..progress import Progress

Entries = dict  # (i, j) -> list[(row, col, expr)]


def symbol_index(inputs: list[np.ndarray]) -> dict[sympy.Symbol, tuple[int, int]]:
    return {s: (j, m) for j, arr in enumerate(inputs) for m, s in enumerate(arr.flat)}


def jacobian_entries(outputs: list[np.ndarray], inputs: list[np.ndarray]) -> Entries:
    """Nonzero d out_i[row] / d in_j[col], for every output element and the symbols it uses."""
    where = symbol_index(inputs)
    entries: Entries = defaultdict(list)
    with Progress("differentiating output elements", sum(o.size for o in outputs)) as progress:
        for i, out in enumerate(outputs):
            for row, expr in enumerate(out.flat):
                expr = sympy.sympify(expr)
                used = sorted((where[s], s) for s in expr.free_symbols if s in where)
                for (j, col), s in used:
                    d = expr.diff(s)
                    if d != 0:
                        entries[(i, j)].append((row, col, d))
                progress.update()
    return dict(entries)


def gradient(expr: sympy.Expr, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """d expr / d in_j for each input, as object arrays shaped like the inputs."""
    grads = [np.full(arr.shape, sympy.S.Zero, dtype=object) for arr in inputs]
    where = symbol_index(inputs)
    for s in expr.free_symbols:
        if s in where:
            j, m = where[s]
            grads[j].flat[m] = expr.diff(s)
    return grads


def is_constant(expr, where) -> bool:
    """True when expr has no free input symbol (a constant Jacobian entry)."""
    return not any(s in where for s in sympy.sympify(expr).free_symbols)


def contract_rows(entries: Entries, weights: list[np.ndarray], n_in: list[int]) -> list[list]:
    """vjp: sum_i sum_row w_i[row] * J_ij[row, col] for every input j and col."""
    sums = [[[] for _ in range(n)] for n in n_in]
    for (i, j), items in entries.items():
        w = weights[i].flat
        for row, col, d in items:
            sums[j][col].append(w[row] * d)
    return [[sympy.Add(*terms) for terms in per_in] for per_in in sums]


def contract_cols(entries: Entries, weights: list[np.ndarray], n_out: list[int]) -> list[list]:
    """jvp: sum_j sum_col J_ij[row, col] * w_j[col] for every output i and row."""
    sums = [[[] for _ in range(n)] for n in n_out]
    for (i, j), items in entries.items():
        w = weights[j].flat
        for row, col, d in items:
            sums[i][row].append(d * w[col])
    return [[sympy.Add(*terms) for terms in per_out] for per_out in sums]
