"""Exact views of a function's derivatives as SymPy objects (``symjac.symbolic``)."""

from __future__ import annotations

import numpy as np
import sympy

from . import derive, functional


class SymbolicView:
    """The exact Jacobian of ``func`` at symbolic inputs shaped like ``example_inputs``.

    Attributes:
        inputs: one object array of SymPy symbols per input (``x_0_1`` is ``x[0, 1]``).
        outputs: one object array of SymPy expressions per output.
        jacobian: ``sympy.Array`` blocks nested as torch nests ``jacobian``'s result; block
            ``[i][j]`` has shape ``outputs[i].shape + inputs[j].shape``.
        matrix: the whole Jacobian as one ``sympy.Matrix``: a row per output element and a
            column per input element, in order.

    Example:
        >>> import numpy as np, symjac
        >>> view = symjac.symbolic(lambda x: x.exp().sum(dim=1), (2, 2))
        >>> view.matrix
        Matrix([
        [exp(x_0_0), exp(x_0_1),          0,          0],
        [         0,          0, exp(x_1_0), exp(x_1_1)]])
    """

    def __init__(self, func, *example_inputs, names=None):
        inputs = tuple(_example(x) for x in example_inputs)
        in_tuple = len(inputs) != 1
        call = functional._Call(func, inputs, in_tuple, "symbolic")
        given = list(names) if names is not None else call.names()
        self._derivation = derive.derive(("jacobian", call.graph, False), given)
        d = self._derivation
        self.inputs = d.inputs
        n_in = len(d.inputs)
        blocks = []
        for r in d.results:
            arr = np.full(r.shape, sympy.S.Zero, dtype=object)
            for k, e in r.entries:
                arr.flat[k] = e
            blocks.append(sympy.Array(arr.tolist(), r.shape) if r.shape else arr[()])
        n_out = len(d.results) // n_in
        self.outputs = _outputs(call, d)
        self.jacobian = functional._nest(blocks, n_out, n_in, call.out_tuple, in_tuple)
        self._blocks = [d.results[i * n_in : (i + 1) * n_in] for i in range(n_out)]

    @property
    def matrix(self) -> sympy.Matrix:
        rows = []
        for i, row_blocks in enumerate(self._blocks):
            n_rows = self.outputs[i].size
            part = [[sympy.S.Zero] * sum(x.size for x in self.inputs) for _ in range(n_rows)]
            col0 = 0
            for j, r in enumerate(row_blocks):
                n = self.inputs[j].size
                for k, e in r.entries:
                    part[k // n][col0 + k % n] = e
                col0 += n
            rows.extend(part)
        return sympy.Matrix(rows) if rows else sympy.zeros(0, sum(x.size for x in self.inputs))

    def latex(self) -> str:
        """The Jacobian matrix as LaTeX."""
        return sympy.latex(self.matrix)

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"

    def __repr__(self) -> str:
        return f"SymbolicView(matrix={self.matrix!r})"


def _example(x):
    if isinstance(x, (tuple, list)) and all(isinstance(n, (int, np.integer)) for n in x):
        return np.zeros(tuple(int(n) for n in x))
    if isinstance(x, (int, np.integer)):
        return np.zeros((int(x),))
    return x


def _outputs(call, d):
    from .expand import output_expressions

    return output_expressions(call.graph, d.inputs, d.captures)


def symbolic(func, *example_inputs, names=None) -> SymbolicView:
    """Trace ``func`` on symbols shaped like ``example_inputs`` and return its exact Jacobian.

    ``example_inputs`` are arrays or tensors (their shapes and dtypes are used, never their
    values) or shapes such as ``(2, 2)``. ``names`` overrides the symbols' base names, which
    default to func's parameter names.

    Example:
        >>> import symjac
        >>> symjac.symbolic(lambda x, y: 2 * x.exp() + 3 * y, (2,), (2,)).matrix
        Matrix([
        [2*exp(x_0),          0, 3, 0],
        [         0, 2*exp(x_1), 0, 3]])
    """
    return SymbolicView(func, *example_inputs, names=names)
