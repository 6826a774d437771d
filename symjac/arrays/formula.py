"""The Jacobian of a recorded graph as one array-level formula: ``W3·diag(1 - tanh(z2)**2)·W2·...``.

Forward mode at the array level, on strings: each node's tangent is a product of matrix factors
(weights, ``diag`` of an elementwise derivative, identity), so a layered model reads as the chain
rule a person would write. Intermediate values that the factors mention get names (``z1``, ...)
and their definitions are listed under the formula. Operations without a readable array rule
print as ``∂op(...)``; the per-element matrix (``SymbolicView.matrix``) stays the exact reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy

from ..trace.ops import ELEMENTWISE
from .elementwise import Unsupported, formulas

_ELEMENTWISE_INFIX = {"add": "+", "sub": "-", "mul": "∘", "div": "/"}


@dataclass(frozen=True)
class _Tangent:
    text: str
    is_sum: bool = False
    is_identity: bool = False

    def factor(self) -> str:
        return f"({self.text})" if self.is_sum else self.text


_I = _Tangent("I", is_identity=True)


def _times(left: str, t: _Tangent) -> _Tangent:
    return _Tangent(left) if t.is_identity else _Tangent(f"{left}·{t.factor()}")


def _plus(terms):
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    if len(terms) == 1:
        return terms[0]
    return _Tangent(" + ".join(t.text for t in terms).replace("+ -", "- "), is_sum=True)


class _Writer:
    def __init__(self, graph, names, n_inputs):
        self.graph = graph
        self.names = names
        self.n_inputs = n_inputs
        self.named: dict[int, str] = {}
        self.definitions: list[str] = []
        self.params: dict[int, str] = {}
        self.counters: dict[str, int] = {}
        users = [0] * len(graph.eqns)
        for _, args, _ in graph.eqns:
            for a in args:
                if type(a) is int:
                    users[a] += 1
        self.users = users

    def value(self, n, depth: int = 0) -> str:
        """Node n's value as text, through the names given so far."""
        if type(n) is not int:  # an inline scalar
            return _number(n[1])
        if n in self.named:
            return self.named[n]
        if depth > 24:  # deep expressions get a name instead of a wall of text
            return self.name(n)
        op, args, params = self.graph.eqns[n]
        if op == "input":
            j = params[0]
            if j < self.n_inputs:
                return self.names[j]
            if j not in self.params:
                letter = {2: "W", 1: "b"}.get(len(self.graph.shape(n)), "C")
                self.counters[letter] = self.counters.get(letter, 0) + 1
                self.params[j] = f"{letter}{self.counters[letter]}"
            return self.params[j]
        if op == "scalar":
            return _number(params[0])
        if op == "const":
            arr = np.frombuffer(params[2], dtype=np.dtype(params[0])).reshape(params[1])
            return _number(arr[()]) if arr.ndim == 0 else f"c{n}"
        parts = [self.value(a, depth + 1) for a in args]
        if op == "matmul":
            return f"{_wrap(parts[0])}·{_wrap(parts[1])}"
        if op in _ELEMENTWISE_INFIX:
            return f"{_wrap(parts[0])} {_ELEMENTWISE_INFIX[op]} {_wrap(parts[1])}"
        return f"{op}({', '.join(parts)})"

    def name(self, n) -> str:
        """A short name for node n's value, defined once in the listing."""
        if type(n) is not int or self.graph.eqns[n][0] in ("input", "const", "scalar") or n in self.named:
            return self.value(n)
        text = self.value(n)
        if not any(c in text for c in " ·,"):  # short enough to read in place: tanh(x)
            return text
        label = f"z{len(self.definitions) + 1}"
        self.definitions.append(f"{label} = {text}")
        self.named[n] = label
        return label

    def symbol(self, a):
        """What a partial derivative's symbol for argument ``a`` becomes: a number or a name."""
        if type(a) is not int:
            return _sympy_number(a[1])
        op, _, params = self.graph.eqns[a]
        if op == "scalar" and params[0] != "nan":
            return _sympy_number(params[0])
        return sympy.Symbol(self.name(a))

    def _operand(self, a) -> str:
        return _wrap(self.value(a))

    def tangent(self, n, tans, seeded: int):
        op, args, params = self.graph.eqns[n]
        at = [tans[a] if type(a) is int else None for a in args]
        if op == "input":
            return _I if params[0] == seeded else None
        if all(t is None for t in at):
            return None
        if op == "matmul":
            a, b = args
            terms = []
            if at[1] is not None:
                terms.append(_times(self._operand(a), at[1]))
            if at[0] is not None:
                terms.append(_Tangent(f"{at[0].factor()}·{self._operand(b)}"))
            return _plus(terms)
        if op in ("add", "sub", "pos", "neg", "cast"):
            sign = {"sub": [1, -1], "neg": [-1]}.get(op, [1, 1])
            return _plus(
                [
                    t if s > 0 else _Tangent(f"-{t.factor()}")
                    for t, s in zip(at, sign, strict=False)
                    if t is not None
                ]
            )
        if op in ELEMENTWISE:
            return self._elementwise(op, args, at)
        if op == "sum" and len(self.graph.shape(args[0])) == 1:
            return _times("1ᵀ", at[0])
        return _Tangent(f"∂{op}({', '.join(t.text for t in at if t is not None)})")

    def _elementwise(self, op, args, at):
        bools = tuple(
            type(a) is int and self.graph.dtype(a) is not None and self.graph.dtype(a).kind == "b"
            for a in args
        )
        try:
            syms, _, partials = formulas(op, bools)
        except Unsupported:
            return _Tangent(f"∂{op}({', '.join(t.text for t in at if t is not None)})")
        terms = []
        for d, t in zip(partials, at, strict=True):
            if d is None or t is None:
                continue
            names = {s: self.symbol(a) for s, a in zip(syms, args, strict=True) if s in d.free_symbols}
            d = d.xreplace(names)
            if d == 1:
                terms.append(t)
            elif d.is_number:
                terms.append(_Tangent(f"{_number(float(d))}·{t.factor()}"))
            else:
                terms.append(_times(f"diag({sympy.sstr(d, full_prec=False)})", t))
        return _plus(terms)


def _wrap(text: str) -> str:
    return f"({text})" if (" + " in text or " - " in text) else text


def _sympy_number(value):
    value = float(value)
    return sympy.Integer(int(value)) if value.is_integer() else sympy.Float(repr(value))


def _number(value) -> str:
    value = float("nan") if value == "nan" else float(value)
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def structured_jacobian(graph, names, n_inputs: int) -> str:
    """``J = ...`` for each output and input, then the definitions of the named values."""
    writer = _Writer(graph, names, n_inputs)
    lines = []
    multi_out, multi_in = len(graph.outputs) > 1, n_inputs > 1
    for j in range(n_inputs):
        tans: list = [None] * len(graph.eqns)
        for n in range(len(graph.eqns)):
            tans[n] = writer.tangent(n, tans, j)
        for i, out in enumerate(graph.outputs):
            label = "J" + (f"[{i}]" if multi_out else "") + (f"[{j}]" if multi_in else "")
            t = tans[out]
            lines.append(f"{label} = {'0' if t is None else t.text}")
    if writer.definitions:
        lines.append("where " + "\n      ".join(writer.definitions))
    return "\n".join(lines)
