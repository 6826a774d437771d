"""Exact views of a function's derivatives as SymPy objects (``symjac.symbolic``): formulas,
sparsity, an independence report, the CSE'd program, pictures and LaTeX."""

from __future__ import annotations

import functools
import multiprocessing
import warnings
from dataclasses import dataclass

import numpy as np
import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.pretty.pretty import PrettyPrinter
from sympy.printing.pretty.stringpict import prettyForm
from sympy.printing.str import StrPrinter

from . import errors, functional
from .elements import derive
from .elements.simplify import F64_REGION, build_program
from .trace.functions import standard


def _float_text(expr) -> str | None:
    """Python's shortest round-tripping repr of a Float that holds a double (what the kernel
    computes with); None for a Float of higher precision, which SymPy prints itself."""
    if expr._prec > 60:
        return None
    return repr(float(expr))


class _Str(StrPrinter):
    def _print_Float(self, expr):
        return _float_text(expr) or super()._print_Float(expr)


class _Pretty(PrettyPrinter):
    def _print_Float(self, expr):
        text = _float_text(expr)
        return prettyForm(text) if text else super()._print_Float(expr)


class _Latex(LatexPrinter):
    def _print_Float(self, expr):
        text = _float_text(expr)
        if text is None:
            return super()._print_Float(expr)
        mantissa, _, exponent = text.partition("e")
        return mantissa if not exponent else rf"{mantissa} \cdot 10^{{{int(exponent)}}}"


def sstr(expr) -> str:
    """``str(expr)``, with every float constant as Python prints it (``9.81``, ``0.1``, ``0.001``).

    Example:
        >>> import sympy
        >>> from symjac.symbolic import sstr
        >>> sstr(sympy.Float(9.81, 17) * sympy.Symbol("g"))
        '9.81*g'
    """
    return _Str().doprint(expr)


def pretty(expr) -> str:
    """``sympy.pretty(expr)`` with floats as Python prints them."""
    return _Pretty({"use_unicode": True}).doprint(expr)


def latex(expr) -> str:
    """``sympy.latex(expr)`` with floats as Python prints them (``10^{-5}`` for exponents)."""
    return _Latex().doprint(expr)


@dataclass(frozen=True)
class BlockReport:
    """What one Jacobian block ``J[output][input]`` is, structurally."""

    output: int
    input: int
    shape: tuple
    nonzeros: int
    independent: bool  # identically zero: strict mode refuses this pair
    constant: bool  # nonzero and free of input symbols: the function is linear there


class SymbolicView:
    """The exact Jacobian (and, for scalar functions, Hessian) of ``func``.

    Attributes:
        inputs: one object array of SymPy symbols per input (``x_0_1`` is ``x[0, 1]``).
        outputs: one object array of SymPy expressions per output.
        jacobian: ``sympy.Array`` blocks nested as torch nests ``jacobian``'s result; block
            ``[i][j]`` has shape ``outputs[i].shape + inputs[j].shape``.
        matrix: the whole Jacobian as one ``sympy.Matrix``: a row per output element and a
            column per input element, in order.
        sparsity: a boolean array in the layout of ``matrix``: True where an entry is nonzero.

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
        self._in_tuple = len(inputs) != 1
        call = functional._Call(func, inputs, self._in_tuple, "symbolic")
        self._call = call
        self._names = list(names) if names is not None else call.names()
        self._shapes = [tuple(x.shape) for x in inputs]

    # The per-element form is derived on first use: formula() of a large model never needs it.
    @functools.cached_property
    @errors.public_as("symbolic")
    def _derivation(self):
        return derive.derive(("jacobian", self._call.graph, False), self._names)

    @functools.cached_property
    @errors.public_as("symbolic")
    def inputs(self) -> list:
        """The symbol arrays of the inputs (``x_0_1`` is ``x[0, 1]``)."""
        return self._derivation.inputs

    @functools.cached_property
    @errors.public_as("symbolic")
    def _n_out(self) -> int:
        return len(self._derivation.results) // len(self._shapes)

    @functools.cached_property
    @errors.public_as("symbolic")
    def _rows(self) -> list:
        results, n_in = self._derivation.results, len(self._shapes)
        return [results[i * n_in : (i + 1) * n_in] for i in range(self._n_out)]

    @functools.cached_property
    @errors.public_as("symbolic")
    def outputs(self) -> list:
        """The element expressions of the function's outputs."""
        from .elements.expand import output_expressions

        d = self._derivation
        # Standard SymPy functions only (issue 13): the kernels keep symjac's stable forms.
        return [_standard_array(o) for o in output_expressions(self._call.graph, d.inputs, d.captures)]

    @functools.cached_property
    @errors.public_as("symbolic")
    def jacobian(self):
        """The exact Jacobian blocks as object arrays, nested as ``symjac.jacobian`` nests them."""
        blocks = [_dense(r) for r in self._derivation.results]
        n_in = len(self._shapes)
        return functional._nest(blocks, self._n_out, n_in, self._call.out_tuple, self._in_tuple)

    # --- the Jacobian as one matrix ---------------------------------------------------------
    def _entries(self):
        """(row, col, expr) of every nonzero entry of ``matrix``."""
        col0 = np.cumsum([0] + [x.size for x in self.inputs])
        row0 = np.cumsum([0] + [o.size for o in self.outputs])
        for i, row_blocks in enumerate(self._rows):
            for j, r in enumerate(row_blocks):
                n = self.inputs[j].size
                for k, e in r.entries:
                    yield int(row0[i] + k // n), int(col0[j] + k % n), e

    @property
    def shape(self) -> tuple[int, int]:
        return sum(o.size for o in self.outputs), sum(x.size for x in self.inputs)

    @property
    def matrix(self) -> sympy.Matrix:
        m = sympy.zeros(*self.shape)
        for r, c, e in self._entries():
            m[r, c] = standard(e)
        return m

    @property
    def sparsity(self) -> np.ndarray:
        pattern = np.zeros(self.shape, dtype=bool)
        for r, c, _ in self._entries():
            pattern[r, c] = True
        return pattern

    @property
    @errors.public_as("symbolic")
    def hessian(self):
        """The exact Hessian, for a function returning one element (torch's block layout)."""
        if self._call.out_tuple or self.outputs[0].size != 1:
            raise ValueError("hessian: the function must return a single tensor with a single element")
        d = derive.derive(("hessian", self._call.graph, False), self._names)
        blocks = [_dense(r) for r in d.results]
        n_in = len(self.inputs)
        return functional._nest(blocks, n_in, n_in, self._in_tuple, self._in_tuple)

    # --- structure ----------------------------------------------------------------------------
    def report(self) -> list[BlockReport]:
        """Per block: nonzeros, independence (what strict mode checks) and constancy."""
        info = self._derivation.info
        out = []
        for i, row_blocks in enumerate(self._rows):
            for j, r in enumerate(row_blocks):
                out.append(
                    BlockReport(
                        i,
                        j,
                        r.shape,
                        len(r.entries),
                        not info["nonzero"][(i, j)],
                        info["nonzero"][(i, j)] and info["constant"][(i, j)],
                    )
                )
        return out

    def report_table(self) -> str:
        """The report as a small text table, with operation counts before and after CSE."""
        lines = ["block      shape          nonzeros  structure"]
        for b in self.report():
            kind = (
                "independent (zero)"
                if b.independent
                else "constant (linear)"
                if b.constant
                else "depends on inputs"
            )
            lines.append(f"J[{b.output}][{b.input}]    {str(b.shape):14s} {b.nonzeros:8d}  {kind}")
        before, after = self.op_counts()
        lines.append(f"operations: {before} in the entries, {after} after common-subexpression elimination")
        return "\n".join(lines)

    @errors.public_as("symbolic")
    def program(self):
        """The CSE'd straight-line program that the kernel computes."""
        stores = [(F64_REGION, k, e) for k, (_, _, e) in enumerate(self._entries())]
        slots = {s: k for k, s in enumerate(s for x in self.inputs for s in x.flat)}
        return build_program(stores, slots, "float64")

    def op_counts(self) -> tuple[int, int]:
        """SymPy operation counts of the nonzero entries, before and after CSE."""
        before = sum(sympy.count_ops(e) for _, _, e in self._entries())
        return before, self.program().op_count()

    def listing(self) -> str:
        """The CSE'd program as readable code: temporaries, then each nonzero ``J[row, col]``."""
        prog = self.program()
        lines = [f"{sym} = {sstr(expr)}" for sym, expr in prog.assignments]
        places = [(r, c) for r, c, _ in self._entries()]
        stores = zip(places, prog.stores, strict=True)
        lines += [f"J[{r}, {c}] = {sstr(expr)}" for (r, c), (_, _, expr) in stores]
        return "\n".join(lines)

    # --- presentation -------------------------------------------------------------------------
    def latex(self) -> str:
        """The Jacobian matrix as LaTeX; constants print as written (``9.81``, not ``9.8100000000000005``)."""
        return latex(self.matrix)

    def pretty(self) -> str:
        """The Jacobian matrix as Unicode art, constants as written."""
        return pretty(self.matrix)

    def _repr_latex_(self) -> str:
        return f"$${self.latex()}$$"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>J[{b.output}][{b.input}]</td><td>{b.shape}</td><td>{b.nonzeros}</td>"
            f"<td>{'independent' if b.independent else 'constant' if b.constant else 'nonlinear'}</td></tr>"
            for b in self.report()
        )
        return (
            f"<div>$${self.latex()}$$</div><table><tr><th>block</th><th>shape</th><th>nonzeros</th>"
            f"<th>structure</th></tr>{rows}</table>"
        )

    def __repr__(self) -> str:
        return f"SymbolicView(matrix={sstr(self.matrix)})"

    def __str__(self) -> str:
        return self.pretty()

    def spy(self, path: str, title: str | None = None) -> str:
        """Save the sparsity pattern as a PNG, with lines between inputs and between outputs."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("spy() draws with matplotlib: pip install 'symjac[plot]'") from None
        rows, cols = self.shape
        fig, ax = plt.subplots(figsize=(min(10, 2 + cols * 0.25), min(10, 2 + rows * 0.25)))
        ax.spy(self.sparsity, markersize=max(2, 200 / max(rows, cols, 1)), color="tab:blue")
        for edge in np.cumsum([x.size for x in self.inputs])[:-1]:
            ax.axvline(edge - 0.5, color="tab:red", linewidth=1)
        for edge in np.cumsum([o.size for o in self.outputs])[:-1]:
            ax.axhline(edge - 0.5, color="tab:red", linewidth=1)
        ax.set_xlabel("input elements (" + ", ".join(self._names[: len(self.inputs)]) + ")")
        ax.set_ylabel("output elements")
        ax.set_title(
            title or f"Jacobian sparsity: {int(self.sparsity.sum())} of {rows * cols} entries nonzero"
        )
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    @errors.public_as("symbolic")
    def simplify(self, timeout: float = 10.0) -> sympy.Matrix:
        """``sympy.simplify`` every entry of ``matrix``, giving up after ``timeout`` seconds.

        For reading only: the kernels never use it. On time-out the unsimplified matrix is
        returned with a warning.
        """
        matrix = self.matrix
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            job = pool.apply_async(_simplify_matrix, (matrix,))
            try:
                return job.get(timeout)
            except multiprocessing.TimeoutError:
                warnings.warn(
                    f"simplify: gave up after {timeout} s; returning the unsimplified matrix", stacklevel=2
                )
                return matrix

    @errors.public_as("symbolic")
    def formula(self) -> str:
        """The Jacobian as one array-level formula, the chain rule as a person writes it.

        Captured weight arrays are named ``W1, b1, ...`` in order of use; intermediate values that
        the derivative factors mention are named ``z1, ...`` and defined below the formula.

        Example:
            >>> import numpy as np, symjac
            >>> W, b = np.ones((16, 3)), np.ones(16)
            >>> print(symjac.symbolic(lambda x: np.tanh(W @ x + b).sum(), (3,)).formula())
            J = 1ᵀ·diag(1 - tanh(z1)**2)·W1
            where z1 = W1·x + b1
        """
        from .arrays.formula import structured_jacobian

        inputs = tuple(np.zeros(shape) for shape in self._shapes)
        call = functional._Call(self._call.func, inputs, self._in_tuple, "symbolic", params=True)
        return structured_jacobian(call.graph, self._names, len(inputs))


def _simplify_matrix(matrix):
    return matrix.applyfunc(sympy.simplify)


def _standard_array(arr: np.ndarray) -> np.ndarray:
    out = np.empty(arr.shape, dtype=object)
    for idx in np.ndindex(arr.shape):
        out[idx] = standard(arr[idx])
    return out


def _dense(result):
    arr = np.full(result.shape, sympy.S.Zero, dtype=object)
    for k, e in result.entries:
        arr.flat[k] = standard(e)
    return sympy.Array(arr.tolist(), result.shape) if result.shape else arr[()]


def _example(x):
    if isinstance(x, (tuple, list)) and all(isinstance(n, (int, np.integer)) for n in x):
        return np.zeros(tuple(int(n) for n in x))
    if isinstance(x, (int, np.integer)):
        return np.zeros((int(x),))
    return x


@errors.public
def symbolic(func, *example_inputs, names=None) -> SymbolicView:
    """Trace ``func`` on symbols shaped like ``example_inputs`` and return its exact derivatives.

    ``example_inputs`` are arrays or tensors (only their shapes and dtypes are used) or shapes
    such as ``(2, 2)``. ``names`` overrides the symbols' base names, which default to func's
    parameter names.

    Example:
        >>> import symjac
        >>> symjac.symbolic(lambda x, y: 2 * x.exp() + 3 * y, (2,), (2,)).matrix
        Matrix([
        [2*exp(x_0),          0, 3, 0],
        [         0, 2*exp(x_1), 0, 3]])
    """
    return SymbolicView(func, *example_inputs, names=names)
