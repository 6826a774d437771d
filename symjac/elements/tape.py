"""Exact forward-mode differentiation of a SymPy expression DAG into a straight-line program.

``symjac.compile`` needs the derivative as code, not as trees to print. Differentiating each
output tree with ``sympy.diff`` rebuilds shared subtrees once per entry, and ``sympy.cse`` then
has to find the sharing again: most of a large build went there (an MLP: 9 s of 14). The tape
instead gives every distinct subexpression one temporary, defined shallowly in terms of earlier
temporaries, and carries each temporary's tangent (a sparse map input symbol -> temporary)
forward, chain rule by chain rule. The result is the same exact derivative, already in
common-subexpression form, at a cost linear in (DAG size x inputs each node depends on).

Local partial derivatives come from SymPy on the shallow definition (``fdiff`` for functions,
``diff`` for anything else), so every class SymPy can differentiate is covered exactly.
"""

from __future__ import annotations

import sympy
from sympy.core.function import ArgumentIndexError

from ..progress import Progress
from ..trace import arith
from ..trace.functions import TanhDerivative

_ONE = sympy.S.One


class Tape:
    """Temporaries in definition order; ``value(expr)`` and ``tangent(atom)`` extend it.

    ``inputs`` are the symbols derivatives are taken by. An atom is a Number, a Symbol or a
    temporary (a real Dummy); a temporary's definition only has atoms (or booleans of atoms)
    as arguments.
    """

    def __init__(self, inputs):
        self.inputs = frozenset(inputs)
        self.assignments: list[tuple[sympy.Dummy, sympy.Basic]] = []
        self._values: dict = {}  # expression -> atom
        self._defs: dict = {}  # temporary -> definition
        self._deps: dict = {}  # temporary -> the temporaries and inputs its definition uses
        self._tangents: dict = {}  # atom -> {input symbol: atom}
        self._smooth: dict = {}  # temporary -> whether its tangent is finite where its inputs are
        self._count = 0

    # --- values -------------------------------------------------------------------------
    def temp(self, definition) -> sympy.Basic:
        """An atom equal to ``definition`` (a new temporary unless it is already an atom)."""
        if definition.is_Atom:
            return definition
        hit = self._values.get(definition)
        if hit is not None:
            return hit
        t = sympy.Dummy(f"t{self._count}", real=True)
        self._count += 1
        self.assignments.append((t, definition))
        self._defs[t] = definition
        self._deps[t] = [s for s in definition.free_symbols if s in self._defs or s in self.inputs]
        smooth = isinstance(definition, _SMOOTH) or getattr(type(definition), "_smooth", False)
        self._smooth[t] = smooth and all(self._smooth.get(s, True) for s in self._deps[t])
        if isinstance(definition, sympy.Pow) and not (definition.exp.is_Integer and definition.exp >= 0):
            self._smooth[t] = False
        self._values[definition] = t
        return t

    def value(self, expr):
        """The atom holding ``expr``, adding a temporary for each new subexpression."""
        if expr.is_Atom:  # before any lookup: hashing a Float converts it
            return expr
        hit = self._values.get(expr)
        if hit is not None:
            return hit
        stack = [(expr, False)]
        while stack:  # post-order without recursion: deep sums would overflow the stack
            node, ready = stack.pop()
            if node.is_Atom or node in self._values:
                continue
            if not ready:
                stack.append((node, True))
                # Expression arguments only: _shallow rebuilds conditions (and Piecewise's
                # expression-condition pairs) itself, and a boolean gets no temporary.
                stack.extend(
                    (a, False)
                    for a in node.args
                    if isinstance(a, sympy.Expr) and not a.is_Atom and a not in self._values
                )
                continue
            self._values[node] = self.temp(self._shallow(node))
        return self._values[expr]

    def _shallow(self, node):
        """``node`` rebuilt on atoms: the definition of its temporary."""
        if isinstance(node, sympy.Piecewise):
            pairs = [(self.value(e), self._boolean(c)) for e, c in node.args]
            return sympy.Piecewise(*pairs, evaluate=False)
        if isinstance(node, sympy.logic.boolalg.Boolean) and not isinstance(node, sympy.Expr):
            return self._boolean(node)
        args = [self.value(a) if isinstance(a, sympy.Expr) else self._boolean(a) for a in node.args]
        if isinstance(node, (sympy.Add, sympy.Mul)):
            return arith.unchecked(node.func, args)
        if isinstance(node, sympy.Pow):
            return node.func(*args, evaluate=False)
        return node.func(*args)

    def _boolean(self, cond):
        """A condition rebuilt with its expression arguments replaced by atoms (kept inline:
        conditions are not differentiated, only evaluated)."""
        done: dict = {}
        stack = [(cond, False)]
        while stack:  # post-order without recursion
            node, ready = stack.pop()
            if node in done:
                continue
            if node.is_Atom or isinstance(node, sympy.Expr):
                done[node] = node if node.is_Atom else self.value(node)
            elif not ready:
                stack.append((node, True))
                stack.extend((a, False) for a in node.args if a not in done)
            else:
                done[node] = node.func(*[done[a] for a in node.args])
        return done[cond]

    # --- tangents -----------------------------------------------------------------------
    def tangent(self, atom) -> dict:
        """``{input symbol s: atom of d atom / d s}``, only the nonzero ones."""
        hit = self._tangents.get(atom)
        if hit is not None:
            return hit
        if atom in self.inputs:
            return {atom: _ONE}
        if atom not in self._defs:  # a number, or a symbol derivatives are not taken by
            return {}
        # Tangents of a definition's temporaries first, iteratively, then this one.
        stack = [atom]
        while stack:
            t = stack[-1]
            pending = [a for a in self._deps[t] if a in self._defs and a not in self._tangents]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if t not in self._tangents:
                self._tangents[t] = self._chain(t)
        return self._tangents[atom]

    def gradient(self, atom) -> dict:
        """``{input symbol s: atom of d atom / d s}`` by one reverse (adjoint) sweep.

        The same derivative as ``tangent``, at the cost of one pass over the temporaries
        ``atom`` uses rather than one per input each depends on: the better road when there
        are fewer outputs than inputs.

        A Piecewise passes its adjoint to each branch under that branch's selection condition
        (a guard), and a guarded adjoint stays guarded down the branch: ``sympy.diff`` selects
        the derivative of the branch taken, so the NaN or infinite partials of a branch not
        taken (``sqrt`` at 0 in ``where(x > 0, sqrt(x), 0)``) must be selected away, never
        multiplied by 0. Guards are merged into one selected value at a temporary whose
        tangent is finite (``_SMOOTH``), where selecting late or early gives the same numbers.
        """
        if atom in self.inputs:
            return {atom: _ONE}
        adjoint: dict = {atom: {None: [_ONE]}}  # atom -> {guard or None: [parts]}

        def add(arg, guard, part):
            if arg in self._defs or arg in self.inputs:
                adjoint.setdefault(arg, {}).setdefault(guard, []).append(part)

        for t, definition in reversed(self.needed([atom])):
            groups = adjoint.pop(t, None)
            if groups is None:
                continue
            if self._smooth[t] and (len(groups) > 1 or None not in groups):
                groups = {None: [self._merge(groups)]}
            for guard, parts in groups.items():
                bar = self._sum(parts)
                if isinstance(definition, sympy.Piecewise):
                    for value, selected in _selections(definition):
                        if guard is not None:
                            selected = sympy.And(guard, selected, evaluate=False)
                        add(value, selected, bar)
                    continue
                for arg, partial in self._partials(t):
                    add(arg, guard, _times(partial, bar))
        return {s: self._merge(groups) for s, groups in adjoint.items() if s in self.inputs}

    def _merge(self, groups: dict):
        """One atom for ``sum(guard ? sum(parts) : 0)`` over the guard groups."""
        terms = []
        for guard, parts in groups.items():
            total = self._sum(parts)
            if guard is not None:
                total = self.temp(sympy.Piecewise((total, guard), (0, True), evaluate=False))
            terms.append(total)
        return self._sum(terms)

    def _sum(self, parts):
        parts = [self.value(p) for p in parts]
        return parts[0] if len(parts) == 1 else self.temp(arith.unchecked(sympy.Add, parts))

    def _chain(self, t) -> dict:
        definition = self._defs[t]
        if isinstance(definition, sympy.Piecewise):  # select the branch's tangent (see gradient)
            branches = [(self.tangent(e), c) for e, c in definition.args]
            symbols = {s: None for tangent, _ in branches for s in tangent}
            return {
                s: self.temp(
                    sympy.Piecewise(
                        *[(tangent.get(s, sympy.S.Zero), c) for tangent, c in branches], evaluate=False
                    )
                )
                for s in symbols
            }
        terms: dict = {}
        for arg, partial in self._partials(t):
            for s, d in self.tangent(arg).items():
                terms.setdefault(s, []).append(_times(partial, d))
        return {s: self._sum(parts) for s, parts in terms.items()}

    def _partials(self, t):
        """(atom, d definition / d atom) for each atom the definition of ``t`` depends on."""
        definition = self._defs[t]
        args = definition.args
        if isinstance(definition, sympy.Add):
            return [(a, _ONE) for a in args if not a.is_Number]
        if isinstance(definition, sympy.Mul):
            out = []
            for k, a in enumerate(args):
                if not a.is_Number:
                    others = args[:k] + args[k + 1 :]
                    out.append((a, others[0] if len(others) == 1 else arith.unchecked(sympy.Mul, others)))
            return out
        if isinstance(definition, sympy.Pow) and args[1].is_Number:
            base, n = args
            lower = base if n - 1 == 1 else self.value(sympy.Pow(base, n - 1, evaluate=False))
            return [(base, n if n - 1 == 0 else self.value(sympy.Mul(n, lower, evaluate=False)))]
        if type(definition) is sympy.tanh:  # SymPy's own (from_sympy): the derivative that does not cancel
            return [(args[0], self.value(TanhDerivative(args[0])))]
        own_fdiff = getattr(type(definition), "fdiff", None) not in (None, sympy.Function.fdiff)
        if isinstance(definition, sympy.Function) and own_fdiff and all(a.is_Atom for a in args):
            out = []
            for k, a in enumerate(args):
                if a.is_Number:
                    continue
                try:
                    d = definition.fdiff(k + 1)
                except (ArgumentIndexError, NotImplementedError, AttributeError):
                    break
                out.append((a, self._reuse(d, definition, t)))
            else:
                return [(a, d) for a, d in out if d != 0]
        partials = ((a, definition.diff(a)) for a in self._deps[t])
        return [(a, self._reuse(d, definition, t)) for a, d in partials if d != 0]

    def _reuse(self, d, definition, t):
        """A partial derivative as an atom, with the definition itself replaced by ``t``."""
        if d.has(sympy.Derivative):
            raise NotImplementedError(
                f"symjac cannot differentiate {type(definition).__name__} ({definition}): SymPy "
                "leaves its derivative unevaluated; declare `fdiff` on the function class"
            )
        d = d.xreplace({definition: t})
        return d if d.is_Atom else self.value(d)

    # --- programs -----------------------------------------------------------------------
    def needed(self, exprs) -> list:
        """The assignments that ``exprs`` use, in order (dead temporaries dropped)."""
        live = set()
        todo = [s for e in exprs for s in getattr(e, "free_symbols", ()) if s in self._defs]
        while todo:
            t = todo.pop()
            if t in live:
                continue
            live.add(t)
            todo.extend(s for s in self._defs[t].free_symbols if s in self._defs and s not in live)
        return [(t, d) for t, d in self.assignments if t in live]


def _selections(definition):
    """``(value, condition under which the Piecewise takes it)`` for each branch."""
    previous = []
    for value, cond in definition.args:
        if not value.is_Number:
            # Unevaluated: Not(x > 0) is not x <= 0 where x is NaN, and the Piecewise then
            # takes a later branch.
            earlier = [sympy.Not(c, evaluate=False) for c in previous]
            yield value, cond if not previous else sympy.And(*earlier, cond, evaluate=False)
        previous.append(cond)


# Definitions whose partial derivatives are finite wherever their arguments are (overflow aside).
_SMOOTH = (
    sympy.Add,
    sympy.Mul,
    sympy.Pow,  # nonnegative integer powers only: see Tape.temp
    sympy.Piecewise,
    sympy.sin,
    sympy.cos,
    sympy.tanh,
    sympy.exp,
    sympy.Abs,
    sympy.erf,
    sympy.erfc,
    sympy.atan,
    sympy.Max,
    sympy.Min,
    sympy.sign,
)


def _times(a, b):
    if a is _ONE:
        return b
    if b is _ONE:
        return a
    if b.is_Number:  # the coefficient first, as SymPy and the code generator expect it
        a, b = b, a
    return arith.unchecked(sympy.Mul, (a, b))


def jacobian_entries(tape: Tape, outputs, inputs) -> dict:
    """Like ``diff.jacobian_entries``: ``(i, j) -> [(row, col, atom)]``, entries in tape atoms.

    Forward mode (a tangent per input) when there are at least as many output elements as
    input elements, reverse mode (an adjoint sweep per output element) when there are fewer.
    """
    where = {s: (j, m) for j, arr in enumerate(inputs) for m, s in enumerate(arr.flat)}
    n_out = sum(o.size for o in outputs)
    derivative = tape.gradient if n_out < len(where) else tape.tangent
    entries: dict = {}
    with Progress("differentiating the expression DAG", n_out) as progress:
        for i, out in enumerate(outputs):
            for row, expr in enumerate(out.flat):
                tangent = derivative(tape.value(sympy.sympify(expr)))
                for s in sorted(tangent, key=where.__getitem__):
                    j, col = where[s]
                    d = tangent[s]
                    entries.setdefault((i, j), []).append((row, col, d))
                progress.update()
    return entries
