"""Sparse loop kernels: ``compile``'s sparse Jacobians (``sparse="csr"/"csc"``), and dense ones
from sparse tangents (the ``"sparse-loops"`` road), as array-level loops.

Which input columns a node's element depends on does not depend on the values, so each node's
sparsity structure is computed once, when building, in NumPy (:class:`Struct`, one sorted row of
columns per element), and the kernel computes only the entries' values. Every op's entries come
from its operands' by *steps*, ``dst[dpos[i]] (+)= coef * scale[sidx[i]] * src[spos[i]]`` over
constant index tables:

- elementwise ops scale their arguments' entries by the partial derivatives, which the value
  loops of :mod:`symjac.arrays.loops` write to arrays beside the values (a constant partial is
  ``coef``); a zero partial kills any entry and a zero entry any partial (inf and NaN
  included), as on the dense loop road. An op's entries are not stored where its readers can
  take its terms for less (:class:`Pending`): the chain rule's factors are then multiplied per
  element, not per entry (:class:`Composite`);
- sums add the entries of the rows they reduce; max, min and logsumexp weigh them first (a
  share of the ties, the softmax), with the weights the value loops store; a matmul or einsum
  with one operand that does not depend on the inputs weighs the other's rows by its elements
  (``A @ m``: row ``i`` sums ``m[j]`` times row ``(i, j)``), under the same zero rule;
- gathers (indexing with slices or index arrays, index assignment, reshape, transpose,
  broadcasting, concatenation, stack) are no code: their entries are positions in their
  operands' buffers, folded into the steps that read them.

The last steps write the outputs' entries, in CSR or CSC order, straight into the result (or at
their places in the dense Jacobian blocks, which the caller zeroes: there, entries that would
only be copied are added in place, :func:`_fold_into_result`). The
pattern is structural (connectivity): an entry whose derivative is identically zero although
the element reads that input (``x * np.array([0.0, 1.0])``) is kept, with the value 0.0,
where the element road folds it away.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

import llvmlite.ir as ir
import numpy as np

from ..elements.derive import _input_specs
from ..trace.ops import ELEMENTWISE, decode_index
from . import loops
from .elementwise import Unsupported
from .loops import DOUBLE, _dense, _is_mask, _scalar_rule, load_index
from .sparse import _axes, _positions, entries_per_row

ONES = 0  # the buffer of the seeds' entries: all ones, never stored
RESULT = -1  # the kernel's result array
GATHERS = frozenset({"reshape", "transpose", "broadcast_to", "getitem", "setitem", "concat", "stack", "cast"})
REDUCTIONS = frozenset({"sum", "max", "min", "logsumexp"})  # the last three weigh their rows
CONTRACTIONS = frozenset({"matmul", "einsum"})  # with one live operand: the other weighs its rows
# Stored entries (of every node together) past which the road is refused: each costs about 40
# bytes while building, as index tables and NumPy temporaries.
ENTRY_BUDGET = 20_000_000


def unsupported(graph, wrt) -> str | None:
    """Why ``graph``'s Jacobian with respect to inputs ``wrt`` cannot be a sparse loop kernel."""
    why = loops.unsupported(graph)
    if why:
        return why
    live = _dependent(graph, wrt)
    for n, (op, args, params) in enumerate(graph.eqns):
        if n not in live or op in ("input", *REDUCTIONS, *GATHERS) or op in ELEMENTWISE:
            continue
        if op not in CONTRACTIONS:
            return f"{op} (no sparse loop rule)"
        if sum(1 for a in args if a in live) > 1:
            return f"{op} of two operands that depend on the inputs (no sparse loop rule)"
        if len(args) != 2:
            return f"{op} of {len(args)} operands (no sparse loop rule)"
        if op == "einsum":
            letters = params[0].replace(" ", "").split("->")[0].split(",")
            if any(len(set(lets)) < len(lets) for lets in letters):
                return "einsum with a repeated index in one operand (no sparse loop rule)"
    return None


def _dependent(graph, wrt) -> set:
    live = set()
    for n, (op, args, params) in enumerate(graph.eqns):
        dt = graph.dtype(n)
        if op == "input":
            if params[0] in wrt:
                live.add(n)
        elif any(type(a) is int and a in live for a in args) and not (dt is not None and dt.kind == "b"):
            live.add(n)
    return live


# --- structure ----------------------------------------------------------------------------------


@dataclass
class Struct:
    """A node's sparse tangent by rows: element ``r``'s entries are ``indptr[r]:indptr[r + 1]``,
    entry ``k`` in input column ``cols[k]`` (increasing within a row), its value held at
    ``buffers[buf[k]][off[k]]``. Where the entries are whole buffers in order (``pieces``: a
    stored node's, or a concatenation of them), ``buf`` and ``off`` are built only if read."""

    indptr: np.ndarray
    cols: np.ndarray
    _buf: np.ndarray | None
    _off: np.ndarray | None
    single: bool = False  # one entry per row (a seed and its gathers): indptr is arange
    pieces: tuple | None = None  # ((buffer, entries), ...), each buffer whole, in order

    @property
    def buf(self) -> np.ndarray:
        if self._buf is None:
            self._buf = np.repeat(
                np.array([b for b, _ in self.pieces], dtype=np.int64), [n for _, n in self.pieces]
            )
        return self._buf

    @property
    def off(self) -> np.ndarray:
        if self._off is None:
            self._off = np.concatenate([np.arange(n, dtype=np.int64) for _, n in self.pieces])
        return self._off

    def distinct_pieces(self) -> bool:
        return self.pieces is not None and len({b for b, _ in self.pieces}) == len(self.pieces)

    def rows(self) -> np.ndarray:
        if self.single:
            return np.arange(len(self.cols))
        return np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))

    def take(self, rows, planner) -> Struct:
        """Row ``rows[i]`` as row ``i`` (no data moves: the entries keep their places)."""
        if self.single:
            planner.spend(len(rows))
            at = np.arange(len(rows) + 1)
            return Struct(at, self.cols[rows], self.buf[rows], self.off[rows], single=True)
        lengths = np.diff(self.indptr)[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        planner.spend(int(indptr[-1]))
        source = np.repeat(self.indptr[rows] - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Struct(indptr, self.cols[source], self.buf[source], self.off[source])


def _empty(rows: int) -> Struct:
    none = np.zeros(0, dtype=np.int64)
    return Struct(np.zeros(rows + 1, dtype=np.int64), none, none, none)


@dataclass
class Pending:
    """Entries not stored yet: the sum of each term's ``coef * scale * entries``, stored when
    first read (``_get``), unless its readers take its terms instead: a linear elementwise op of
    the same shape that is its one reader (so ``a + b + c - 4 * d`` stores one array, not four),
    another elementwise op of the same shape where that moves fewer entries (``_passes``: its
    partial then scales each term, through a :class:`Composite`), or a contraction that is its
    one reader (``_sums_terms``)."""

    size: int
    terms: list  # (Struct, scale: None, (node, k) or ("chain", i), coef: float)
    stored: Struct | None = None
    split: tuple | None = None  # _scalable's answer, once asked


def _get(planner, S, n) -> Struct | None:
    """Node ``n``'s structure, its entries stored first if they are pending."""
    s = S[n]
    if type(s) is not Pending:
        return s
    if s.stored is None:
        s.stored = _store(planner, s.terms, s.size)
    return s.stored


def _store(planner, terms, size: int) -> Struct:
    """The sum of ``terms`` in a buffer of its own."""
    indptr, cols, places = _union(planner, [t for t, _, _ in terms], size)
    stored, dst = planner.owned(indptr, cols)
    for (t, scale, coef), dpos in zip(terms, places, strict=True):
        planner.move(dst, t, dpos, scale, None if scale is None else t.rows(), coef)
    return stored


def _scalable(planner, s: Pending) -> tuple[list, Struct | None]:
    """``s``'s terms as a reader that scales each by a partial (or weight) takes them: where
    no other term shares the entry, and the sum of the rest, stored. The zero rule acts on a
    sum (``sqrt(x - x)``: the entry 1 - 1 is 0, and kills sqrt's infinite partial); taken apart,
    inf - inf would be NaN. A term of coefficient 0 is stored for the same reason."""
    if s.split is None:
        terms = s.terms
        if len(terms) == 1 and terms[0][2] != 0.0:
            s.split = (terms, None)
            return s.split
        w = planner.width
        keys = np.concatenate([t.rows() * w + t.cols for t, _, _ in terms])
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = counts[inverse] > 1
        for (t, _, coef), at in zip(terms, np.cumsum([0] + [len(t.cols) for t, _, _ in terms]), strict=False):
            if coef == 0.0:
                shared[at : at + len(t.cols)] = True
        if not shared.any():
            s.split = (terms, None)
            return s.split
        own, rest = [], []
        cuts = np.cumsum([len(t.cols) for t, _, _ in terms])[:-1]
        for (t, scale, coef), mask in zip(terms, np.split(shared, cuts), strict=True):
            if not mask.all():
                own.append((_restrict(t, ~mask), scale, coef))
            if mask.any():
                rest.append((_restrict(t, mask), scale, coef))
        s.split = (own, _store(planner, rest, s.size))
    return s.split


def _restrict(t: Struct, keep) -> Struct:
    """``t`` with only the entries ``keep`` marks."""
    indptr = np.zeros(len(t.indptr), dtype=np.int64)
    np.cumsum(np.bincount(t.rows()[keep], minlength=len(t.indptr) - 1), out=indptr[1:])
    return Struct(indptr, t.cols[keep], t.buf[keep], t.off[keep])


def _rows_of(planner, graph, S, n) -> Struct:
    """Node ``n``'s structure, empty rows where it does not depend on the inputs."""
    return _empty(math.prod(graph.shape(n))) if S[n] is None else _get(planner, S, n)


def _stacked(parts) -> Struct:
    if len(parts) == 1:
        return parts[0]
    indptr = np.concatenate([[0]] + [np.diff(p.indptr) for p in parts]).cumsum()
    cols = np.concatenate([p.cols for p in parts])
    if all(p.pieces is not None for p in parts):
        return Struct(indptr, cols, None, None, pieces=tuple(x for p in parts for x in p.pieces))
    return Struct(indptr, cols, *(np.concatenate([getattr(p, f) for p in parts]) for f in ("buf", "off")))


@dataclass(frozen=True)
class Step:
    """``dst[dpos[i]] (+)= coef * scale[sidx[i]] * src[spos[i]]`` for ``i < count``; a table that
    is None is the identity, a scale ``(node, k)`` node's partial on argument k, ``("chain", i)``
    the plan's composite i (None: 1)."""

    dst: int
    src: int
    count: int
    dpos: np.ndarray | None
    spos: np.ndarray | None
    sidx: np.ndarray | None
    scale: tuple | None = None
    coef: float = 1.0
    accumulate: bool = False  # adds into the result (zeroed by the caller), not stores

    def tables(self):
        return [t for t in (self.dpos, self.spos, self.sidx) if t is not None]


@dataclass(frozen=True)
class Plan:
    """Everything the kernel needs beyond the values: buffers, steps and the result's pattern."""

    sizes: tuple  # entries of each buffer (ONES's unused)
    steps: tuple
    partials: dict  # node -> arguments whose partial derivatives the steps read
    pattern: dict  # {kind, shape, indices, indptr}, as compiled._sparse
    nnz: int
    inside: dict  # buffer -> where it lies in the result, for those the result holds as they are
    composites: tuple = ()  # Composite scales, each computed once before the steps

    @property
    def work(self) -> int:
        """About how many operations the steps and composites cost one point."""
        return sum(st.count for st in self.steps) + sum(c.size for c in self.composites)

    def tables(self):
        for st in self.steps:
            yield from st.tables()
        for c in self.composites:
            if c.table is not None:
                yield c.table


@dataclass(frozen=True)
class Composite:
    """A product of two scales, ``a[e] * b[table[e]]`` for ``e < size`` (a zero either side kills
    the other, as in a step): one factor of the chain rule, computed once per element instead of
    once per entry of the tangent it scales (``dx * r**-1.5``: the power's 6 entries a pair are
    not stored; the product scales ``r``'s by ``dx * d(r**-1.5)/dr``)."""

    a: tuple
    b: tuple
    table: np.ndarray | None
    size: int


class _Planner:
    def __init__(self, width):
        self.width = width
        self.sizes = [0]
        self.steps = []
        self.partials = {}
        self.entries = 0
        self.composites = []
        self._composite_keys = {}
        self.outputs = set()

    def spend(self, entries: int):
        self.entries += entries
        if self.entries > ENTRY_BUDGET:
            raise Unsupported(f"sparse tangents of over {ENTRY_BUDGET:,} entries")

    def buffer(self, size: int) -> int:
        self.sizes.append(size)
        return len(self.sizes) - 1

    def use(self, scale) -> None:
        """Have the value loops store the partial derivative ``scale`` (node, argument) reads."""
        if scale is not None and scale[0] != "chain":
            self.partials.setdefault(scale[0], set()).add(scale[1])

    def composite(self, a, b, table, size: int) -> tuple:
        """The scale ``a[e] * b[table[e]]`` (``e < size``), each product computed once."""
        table = _table(table)
        key = (a, b, None if table is None else table.tobytes())
        if key not in self._composite_keys:
            self.use(a)
            self.use(b)
            self.composites.append(Composite(a, b, table, size))
            self._composite_keys[key] = ("chain", len(self.composites) - 1)
        return self._composite_keys[key]

    def move(self, dst: int, entries: Struct, dpos, scale=None, sidx=None, coef=1.0):
        """Steps adding ``coef * scale * entries`` at ``dst[dpos]``, one per source buffer."""
        if not len(entries.cols):
            return
        self.use(scale)
        if entries.distinct_pieces():  # each buffer's entries are a stretch, in order: no masks
            start = 0
            for b, n in entries.pieces:
                d = np.arange(start, start + n) if dpos is None else dpos[start : start + n]
                i = None if sidx is None else sidx[start : start + n]
                if n:
                    self.steps.append(Step(dst, b, n, _table(d), None, _table(i), scale, coef))
                start += n
            return
        single = entries.buf[0] == entries.buf.min() == entries.buf.max()
        for b in [int(entries.buf[0])] if single else np.flatnonzero(np.bincount(entries.buf)).tolist():
            pick = slice(None) if single else entries.buf == b
            d = np.arange(len(entries.buf))[pick] if dpos is None else dpos[pick]
            s = None if b == ONES else entries.off[pick]
            i = None if sidx is None else sidx[pick]
            self.steps.append(Step(dst, b, len(d), _table(d), _table(s), _table(i), scale, coef))

    def owned(self, indptr, cols) -> tuple[Struct, int]:
        """A node's entries in a buffer of their own, in order; and that buffer."""
        dst = self.buffer(len(cols))
        return Struct(indptr, cols, None, None, pieces=((dst, len(cols)),)), dst


def _table(a):
    """``a`` as an index table, or None where it is the identity."""
    if a is None or (len(a) and a[0] == 0 and a[-1] == len(a) - 1 and np.array_equal(a, np.arange(len(a)))):
        return None
    return np.ascontiguousarray(a, dtype=np.int64)


def _unique(keys):
    """``np.unique(keys, return_inverse=True)``, by a stable sort: keys come in sorted runs (one
    per term), which it merges rather than sorts again."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.empty(len(keys), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


SINGLES_COMPARED = 12  # structs of one entry a row united by comparisons (their square) past which by sorting


def _union(planner, terms, size):
    """Rows of ``size`` elements holding every column of the terms' rows; each term's positions."""
    first = terms[0]
    if all(
        t.indptr is first.indptr
        or (np.array_equal(t.indptr, first.indptr) and np.array_equal(t.cols, first.cols))
        for t in terms[1:]
    ):
        return first.indptr, first.cols, [None] * len(terms)
    structs = list({id(t): t for t in terms}.values())  # a struct read by two terms is placed once
    if len(structs) <= SINGLES_COMPARED and all(t.single and len(t.cols) == size for t in structs):
        indptr, cols, places = _union_of_singles(planner, structs, size)
    else:
        w = planner.width
        unique, inverse = _unique(np.concatenate([t.rows() * w + t.cols for t in structs]))
        indptr, cols = _rows_of_keys(planner, unique, size)
        places = np.split(inverse, np.cumsum([len(t.cols) for t in structs])[:-1])
    at = {id(t): k for k, t in enumerate(structs)}
    return indptr, cols, [places[at[id(t)]] for t in terms]


def _union_of_singles(planner, structs, size):
    """``_union`` of a few structs of one entry a row (a stencil's shifted seeds), by comparing
    their columns row-wise, not by sorting every entry's key: an entry's place is the number of
    distinct columns before its own in its row."""
    cols = [t.cols for t in structs]
    first = [np.ones(size, dtype=bool)]  # the first struct in its row with that column
    for k in range(1, len(cols)):
        repeat = np.zeros(size, dtype=bool)
        for j in range(k):
            repeat |= cols[j] == cols[k]
        first.append(~repeat)
    before = [
        sum((first[j] & (cols[j] < cols[k])).astype(np.int64) for j in range(len(cols)))
        for k in range(len(cols))
    ]
    indptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(sum(f.astype(np.int64) for f in first), out=indptr[1:])
    planner.spend(int(indptr[-1]))
    places = [indptr[:-1] + b for b in before]
    union = np.empty(indptr[-1], dtype=np.int64)
    for c, f, at in zip(cols, first, places, strict=True):
        union[at[f]] = c[f]
    return indptr, union, places


def _rows_of_keys(planner, unique, size: int):
    """``(indptr, cols)`` of ``size`` rows holding the sorted keys ``row * width + col``."""
    w = planner.width
    planner.spend(len(unique))
    indptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(unique // w, minlength=size), out=indptr[1:])
    return indptr, unique % w


def _elementwise(planner, graph, n, op, args, S, uses) -> Struct | Pending | None:
    shape = tuple(graph.shape(n))
    syms, _, partials = _scalar_rule(op, tuple(_is_mask(graph, a) for a in args))
    scalars = {x: float(a[1]) for x, a in zip(syms, args, strict=True) if type(a) is not int}
    terms = []
    for k, a, p, times in _live_partials(args, syms, partials, S):
        if scalars:  # 4 * w: the partial 4 is a constant, not an array of fours
            fixed = p.subs(scalars)
            p = fixed if fixed.is_Number and fixed.is_finite else p
        if p.is_Number and p == 0:
            continue
        same = tuple(graph.shape(a)) == shape
        if same and _passes(planner, S, a, p, uses[a], math.prod(shape)):
            if p.is_Number:  # a finite, nonzero factor: the sum's terms scale alike
                terms += [(t, scale, float(p) * times * coef) for t, scale, coef in S[a].terms]
                continue
            own, rest = _scalable(planner, S[a])
            for t, scale, coef in own:
                chained = (
                    (n, k) if scale is None else planner.composite((n, k), scale, None, math.prod(shape))
                )
                terms.append((t, chained, times * coef))
            if rest is not None:
                terms.append((rest, (n, k), float(times)))
            continue
        t = _get(planner, S, a)
        if not same:
            t = t.take(np.broadcast_to(_positions(graph.shape(a)), shape).ravel(), planner)
        terms.append((t, None, float(p) * times) if p.is_Number else (t, (n, k), float(times)))
    merged: dict = {}  # -4.4 * u - 4 * a * u: one term of u's entries, not two
    for t, scale, coef in terms:
        key = (id(t), scale)
        merged[key] = (t, scale, merged[key][2] + coef) if key in merged else (t, scale, coef)
    terms = list(merged.values())
    if not terms:
        return None
    if len(terms) == 1 and terms[0][1] is None and terms[0][2] == 1.0:  # x + c: x's entries, unmoved
        return terms[0][0]
    return Pending(math.prod(shape), terms)


def _live_partials(args, syms, partials, S):
    """``(k, argument, partial, times)`` of each argument that depends on the inputs; an argument
    read twice with equal polynomial partials (``d * d``: ``d`` and ``d``) once, ``times`` 2, so
    that its entries move once."""
    same = {syms[k]: syms[args.index(a)] for k, a in enumerate(args) if type(a) is int}
    live = {}
    for k, a in enumerate(args):
        if type(a) is not int or S[a] is None or partials[k] is None:
            continue
        first = args.index(a)
        # Polynomial partials only: maximum(x, x)'s two are equal as formulas but not at NaN,
        # where the kernel's comparisons pick neither.
        if (
            first in live
            and partials[k].is_polynomial(*syms)
            and partials[k].xreplace(same) == partials[first].xreplace(same)
        ):
            live[first][3] += 1
        else:
            live[k] = [k, a, partials[k], 1]
    return [tuple(v) for v in live.values()]


def _passes(planner, S, a, p, readers: int, size: int) -> bool:
    """Whether a reader of ``a``'s pending entries takes its terms rather than its stored entries:
    where, with every reader doing so, fewer entries move (and composite scales are computed)
    than by storing them once for all readers to read."""
    s = S[a]
    if type(s) is not Pending or s.stored is not None or a in planner.outputs:
        return False
    if p.is_Number and readers == 1:
        return True
    moved = sum(len(t.cols) for t, _, _ in s.terms)
    chains = 0 if p.is_Number else len({scale for _, scale, _ in s.terms if scale is not None})
    cost = readers * (moved + chains * size)
    if cost > moved + readers * moved:  # storing is cheaper even if no two terms share an entry
        return False
    if cost > moved + readers * max(len(t.cols) for t, _, _ in s.terms):  # it depends on the union
        keys = np.concatenate([t.rows() * planner.width + t.cols for t, _, _ in s.terms])
        return cost <= moved + readers * len(np.unique(keys))
    return True


def _merged(planner, t: Struct, group, size: int):
    """Rows ``t``'s summed into ``size`` rows, row ``r`` into row ``group[r]``: ``(their
    structure, its buffer, the place there of each of t's entries)``."""
    w = planner.width
    unique, inverse = _unique(group[t.rows()] * w + t.cols)
    return (*planner.owned(*_rows_of_keys(planner, unique, size)), inverse)


def _reduce(planner, graph, n, op, x, params, S) -> Struct:
    x_shape = tuple(graph.shape(x))
    axes = _axes(params[0], len(x_shape))
    kept = tuple(1 if d in axes else k for d, k in enumerate(x_shape))
    group = np.broadcast_to(_positions(kept), x_shape).ravel()
    t = _get(planner, S, x)
    out, dst, inverse = _merged(planner, t, group, math.prod(kept))
    if op == "sum":
        planner.move(dst, t, inverse)
    else:  # each entry times its element's weight (softmax, or a share of the ties)
        planner.move(dst, t, inverse, (n, 0), t.rows())
    return out


def contraction_letters(graph, op, args, params) -> tuple[list, str, dict]:
    shapes = [tuple(graph.shape(a)) for a in args]
    if op == "matmul":
        return loops.matmul_letters(*shapes)
    return loops.einsum_letters(params[0], shapes)


def entries_bound(graph, width: int) -> float:
    """About how many entries the plan moves, without planning it: each node's elements times an
    upper bound on its rows' entries (``sparse.entries_per_row``), except that a contraction
    moves a row of its live operand for every point of its grid (a 256 x 256 layer: 65,536
    rows, not 256)."""
    per_row = entries_per_row(graph, width)
    total = 0.0
    for n, (op, args, params) in enumerate(graph.eqns):
        if op in CONTRACTIONS and len(args) == 2 and all(type(a) is int for a in args):
            _, _, sizes = contraction_letters(graph, op, args, params)
            total += math.prod(sizes.values()) * max(per_row[a] for a in args)
        else:
            total += math.prod(graph.shape(n)) * per_row[n]
    return total


def _grid(shape, lets: str, order: list, sizes: dict) -> np.ndarray:
    """The flat position in an operand of ``shape`` (axes ``lets``) of each point of the grid
    of letters ``order`` (extents ``sizes``), as a flat array in C order."""
    present = [c for c in order if c in lets]
    positions = _positions(shape).transpose([lets.index(c) for c in present])
    positions = positions.reshape([shape[lets.index(c)] if c in lets else 1 for c in order])
    return np.broadcast_to(positions, [sizes[c] for c in order]).ravel()


def _sums_terms(planner, S, a, readers: int) -> bool:
    """Whether a contraction sums the terms of ``a``'s pending entries, scaling each by its
    weights, rather than the entries stored: where it is their one reader."""
    s = S[a]
    return type(s) is Pending and s.stored is None and readers == 1 and a not in planner.outputs


def _contraction(planner, graph, n, op, args, params, S, uses) -> Struct:
    """``A @ B`` (or einsum) where only A depends on the inputs: a weighted sum of A's rows, the
    weights B's elements (read from B's values, under the zero rule). Where A's entries are
    pending and this is their one reader, its terms are summed instead, their scales times the
    weights (``(dx * r**-1.5) @ m``: the product's entries are never stored)."""
    letters, out, sizes = contraction_letters(graph, op, args, params)
    live = 0 if S[args[0]] is not None else 1
    weight = 1 - live
    order = list(out) + [c for c in dict.fromkeys("".join(letters)) if c not in out]
    rows = _grid(graph.shape(args[live]), letters[live], order, sizes)
    weights = _grid(graph.shape(args[weight]), letters[weight], order, sizes)
    size = math.prod(graph.shape(n))
    group = np.repeat(np.arange(size), len(rows) // max(size, 1))  # the grid's output letters lead
    a = args[live]
    s = S[a]
    if _sums_terms(planner, S, a, uses[a]) and _table(rows) is None:
        # Not _scalable: the weights are data, and a non-finite weight makes the output's value
        # inf or NaN whatever the entries; finite ones scale the terms as they would their sum.
        terms = s.terms
        w = planner.width
        unique, inverse = _unique(np.concatenate([group[t.rows()] * w + t.cols for t, _, _ in terms]))
        result, dst = planner.owned(*_rows_of_keys(planner, unique, size))
        cuts = np.cumsum([len(t.cols) for t, _, _ in terms])[:-1]
        for (t, scale, coef), places in zip(terms, np.split(inverse, cuts), strict=True):
            if scale is None:
                planner.move(dst, t, places, (n, weight), weights[t.rows()], coef)
            else:
                chained = planner.composite(scale, (n, weight), weights, len(rows))
                planner.move(dst, t, places, chained, t.rows(), coef)
        return result
    t = _get(planner, S, a).take(rows, planner)
    result, dst, inverse = _merged(planner, t, group, size)
    planner.move(dst, t, inverse, (n, weight), weights[t.rows()])
    return result


def _gather(planner, graph, n, op, args, params, S) -> Struct | None:
    if op in ("concat", "stack"):
        offsets = np.cumsum([0] + [math.prod(graph.shape(a)) for a in args])
        join = np.concatenate if op == "concat" else np.stack
        starts = zip(offsets, args, strict=False)
        places = join([o + _positions(graph.shape(a)) for o, a in starts], params[0])
        whole = _stacked([_rows_of(planner, graph, S, a) for a in args])
        places = places.ravel()
        if not len(places) or (places[0] == 0 and np.array_equal(places, np.arange(len(places)))):
            return whole  # joined along the first axis: the rows are in place already
        return whole.take(places, planner)
    if op == "setitem":  # x's rows, and y's (after x's) at the places assigned
        size = math.prod(graph.shape(n))
        index = decode_index(params[0])
        places, sources = loops.assigned_positions(graph.shape(n), graph.shape(args[1]), index)
        rows = np.arange(size)
        rows[places] = size + sources
        return _stacked([_rows_of(planner, graph, S, a) for a in args]).take(rows, planner)
    if S[args[0]] is None or (op == "cast" and graph.dtype(n) is not None and graph.dtype(n).kind == "b"):
        return None
    x = _get(planner, S, args[0])
    x_shape = tuple(graph.shape(args[0]))
    if op in ("reshape", "cast"):
        return x
    if op == "transpose":
        return x.take(_positions(x_shape).transpose(params[0]).ravel(), planner)
    if op == "broadcast_to":
        return x.take(np.broadcast_to(_positions(x_shape), tuple(graph.shape(n))).ravel(), planner)
    return x.take(loops.gather_positions(x_shape, decode_index(params[0])), planner)


_PLANS: OrderedDict = OrderedDict()  # the last plans: the road's choice, the build and a load share one
_PLANS_LOCK = threading.Lock()


def plan(graph, wrt, kind: str) -> Plan:
    """The sparse kernel's plan for ``graph``'s Jacobian; raises Unsupported (naming why)."""
    key = (graph, tuple(wrt), kind)
    with _PLANS_LOCK:
        if key in _PLANS:
            _PLANS.move_to_end(key)
            return _PLANS[key]
    why = unsupported(graph, wrt)
    if why:
        raise Unsupported(why)
    result = _plan(graph, tuple(wrt), kind)
    with _PLANS_LOCK:
        _PLANS[key] = result
        while len(_PLANS) > 2:
            _PLANS.popitem(last=False)
    return result


def _plan(graph, wrt, kind) -> Plan:
    specs = _input_specs(graph)
    col0, width = {}, 0
    for j in wrt:
        col0[j] = width
        width += math.prod(specs[j][0])
    planner = _Planner(width)
    planner.outputs = set(graph.outputs)
    uses = np.bincount([a for _, args, _ in graph.eqns for a in args if type(a) is int] + list(graph.outputs),
                       minlength=len(graph.eqns))  # fmt: skip
    S: list = []
    for n, (op, args, params) in enumerate(graph.eqns):
        if op == "input":
            size = math.prod(specs[params[0]][0])
            if params[0] in col0:
                at = np.arange(size, dtype=np.int64)
                seed = Struct(np.arange(size + 1), col0[params[0]] + at, np.zeros(size, np.int64), at, True)
                S.append(seed)
            else:
                S.append(None)
        elif not any(type(a) is int and S[a] is not None for a in args):
            S.append(None)
        elif op in ELEMENTWISE:
            S.append(_elementwise(planner, graph, n, op, args, S, uses))
        elif op in REDUCTIONS:
            S.append(_reduce(planner, graph, n, op, args[0], params, S))
        elif op in CONTRACTIONS:
            S.append(_contraction(planner, graph, n, op, args, params, S, uses))
        else:
            S.append(_gather(planner, graph, n, op, args, params, S))
    whole = _stacked([_rows_of(planner, graph, S, o) for o in graph.outputs])
    n_rows, nnz = len(whole.indptr) - 1, len(whole.cols)
    if kind == "dense":
        indptr, indices, place = [], [], _dense_places(graph, specs, wrt, whole)
    elif kind == "csr":
        indptr, indices, place = whole.indptr, whole.cols, None
    else:
        rows = whole.rows()
        order = np.lexsort((rows, whole.cols))
        place = np.empty(nnz, dtype=np.int64)
        place[order] = np.arange(nnz)
        indices = rows[order]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(whole.cols, minlength=width))])
    inside = {}
    if kind == "csr" and whole.distinct_pieces():  # stored outputs, in order: computed in place
        for (b, _), start in zip(whole.pieces, np.cumsum([0] + [n for _, n in whole.pieces]), strict=False):
            inside[b] = int(start)
    else:
        planner.move(RESULT, whole, place)
    all_steps = _fold_into_result(planner.steps, planner.sizes) if kind == "dense" else planner.steps
    # A buffer that the result holds whole and in order (an output's entries in CSR order) is
    # computed in place there, not copied; never one added into the result, whose places other
    # terms then add to while the buffer is still read.
    steps = []
    for st in all_steps:
        if st.dst == RESULT and not st.accumulate and st.src not in inside and _whole(st, planner.sizes):
            inside[st.src] = 0 if st.dpos is None else int(st.dpos[0])
        else:
            steps.append(st)
    pattern = {  # arrays: the disk cache writes them as JSON lists
        "kind": kind,
        "shape": [int(n_rows), int(width)],
        "indices": np.asarray(indices, dtype=np.int64),
        "indptr": np.asarray(indptr, dtype=np.int64),
    }
    partials = {n: tuple(sorted(ks)) for n, ks in planner.partials.items()}
    return Plan(tuple(planner.sizes), tuple(steps), partials, pattern, nnz, inside, tuple(planner.composites))


def _dense_places(graph, specs, wrt, whole: Struct) -> np.ndarray:
    """Each entry's place in the dense Jacobian blocks, laid out as the dense loop road lays them
    out: for each output, for each input in ``wrt``, an ``out.shape + in.shape`` block."""
    out_sizes = [math.prod(graph.shape(o)) for o in graph.outputs]
    in_sizes = [math.prod(specs[j][0]) for j in wrt]
    row0, col0 = np.cumsum([0, *out_sizes]), np.cumsum([0, *in_sizes])
    rows = whole.rows()
    o = np.searchsorted(row0, rows, side="right") - 1
    j = np.searchsorted(col0, whole.cols, side="right") - 1
    block = row0[o] * col0[-1] + np.asarray(out_sizes)[o] * col0[j]
    return block + (rows - row0[o]) * np.asarray(in_sizes)[j] + (whole.cols - col0[j])


def _fold_into_result(steps, sizes) -> list:
    """A dense result is zeroed before the kernel runs, so a buffer read only by its copy into
    the result needs no place of its own: the steps that fill it add into the result at the
    copy's places. N-body's three accelerations (1,200 entries each): their buffers, zeroing
    and copies go."""
    readers: dict = {}
    for st in steps:
        readers[st.src] = readers.get(st.src, 0) + 1
    copies = {
        st.src: st
        for st in steps
        if st.dst == RESULT and st.src != ONES and readers[st.src] == 1 and st.scale is None
        and st.coef == 1.0 and st.spos is None and st.count == sizes[st.src]
    }  # fmt: skip
    folded = []
    for st in steps:
        if st.dst in copies:
            to = copies[st.dst].dpos
            at = np.arange(st.count) if st.dpos is None else st.dpos
            folded.append(replace(st, dst=RESULT, dpos=_table(at if to is None else to[at]), accumulate=True))
        elif not (st.dst == RESULT and st.src in copies):
            folded.append(st)
    return folded


def _whole(st: Step, sizes) -> bool:
    """Whether ``st`` copies all of its source, in order, to consecutive places."""
    if st.src == ONES or st.scale is not None or st.coef != 1.0 or st.spos is not None:
        return False
    steps = st.dpos is None or np.array_equal(np.diff(st.dpos), np.ones(st.count - 1))
    return st.count == sizes[st.src] and steps


# --- the kernel ---------------------------------------------------------------------------------


def _needed(graph, plan_: Plan, value: bool) -> set:
    """The nodes whose values the kernel computes: those the partials and results read."""
    want = set(graph.outputs) if value else set()
    for n, ks in plan_.partials.items():  # a contraction's weights: the values of its operand
        op, args, _ = graph.eqns[n]
        want.update([args[k] for k in ks] if op in CONTRACTIONS else [n])
    keep = set()
    for n in range(len(graph.eqns) - 1, -1, -1):
        if n in want:
            keep.add(n)
            want.update(a for a in graph.eqns[n][1] if type(a) is int)
    return keep


def build_module(module, graph, wrt, value: bool, kind: str, name="symjac_kernel"):
    """Add ``void name(in, out64, out32)`` computing the outputs' values (with ``value``), then
    the Jacobian's nonzeros in ``kind`` order (``"dense"``: at their places in the dense blocks,
    leaving the others as they are); returns the result shapes and the doubles."""
    p = plan(graph, wrt, kind)
    em, (inp, out64, _) = loops.kernel_function(module, name, 0)
    partials = {}
    for n, ks in p.partials.items():
        op, args, _ = graph.eqns[n]
        # A reduction's weights have its argument's shape, a contraction's its operand's.
        shapes = {k: tuple(graph.shape(args[k] if op in CONTRACTIONS else args[0] if op in REDUCTIONS else n))
                  for k in ks}  # fmt: skip
        partials[n] = {k: _dense(em.buffer(math.prod(shape)), shape) for k, shape in shapes.items()}
    value_loops = {n: v for n, v in partials.items() if graph.eqns[n][0] not in CONTRACTIONS}
    nodes = loops.emit_nodes(em, graph, inp, lambda j, shape: None, _needed(graph, p, value), value_loops)
    for n in partials.keys() - value_loops.keys():
        for k, view in partials[n].items():
            loops._copy_values(em, nodes[graph.eqns[n][1][k]].value, view)
    outs = [nodes[o] for o in graph.outputs]
    shapes, offset = loops.store_values(em, outs, out64) if value else ([], 0)
    result = em.b.gep(out64, [ir.Constant(loops.I64, offset)], source_etype=DOUBLE)
    used = ({st.dst for st in p.steps} | {st.src for st in p.steps}) - {ONES, RESULT} - p.inside.keys()
    buffers = {k: em.buffer(p.sizes[k]) for k in sorted(used)}
    for k, at in p.inside.items():
        buffers[k] = em.b.gep(result, [ir.Constant(loops.I64, at)], source_etype=DOUBLE)
    buffers[RESULT] = result
    scales = {}
    for i, c in enumerate(p.composites):
        scales["chain", i] = _composite(em, c, *(scales[k] if k[0] == "chain" else partials[k[0]][k[1]].base
                                                 for k in (c.a, c.b)))  # fmt: skip
    written = {RESULT}  # a result entry is stored once, or added to where the caller zeroed it
    for group in _fused(p):
        shared = {st.dst for st in group if sum(o.dst == st.dst for o in group) > 1}
        assigns = []
        for step in group:
            fresh = step.dst not in written
            assign = (step.dst == RESULT and not step.accumulate) or (
                fresh and step.dpos is None and step.count == p.sizes[step.dst] and step.dst not in shared
            )
            if fresh and not assign:
                em.zero(buffers[step.dst], p.sizes[step.dst])
            written.add(step.dst)
            assigns.append(assign)
        ptrs = [None if st.scale is None else scales[st.scale] if st.scale[0] == "chain"
                else partials[st.scale[0]][st.scale[1]].base for st in group]  # fmt: skip
        _steps(em, group, [buffers[st.dst] for st in group], buffers.get(group[0].src), ptrs, assigns)
    em.finish()
    if kind != "dense":
        return [*shapes, (p.nnz,)], offset + p.nnz
    specs = _input_specs(graph)
    blocks = [tuple(graph.shape(o)) + tuple(specs[j][0]) for o in graph.outputs for j in wrt]
    return [*shapes, *blocks], offset + sum(math.prod(s) for s in blocks)


def _kill_product(b, x, y):
    """``x * y``, zero where either is (an inf or NaN times a zero partial is no entry)."""
    zero = ir.Constant(DOUBLE, 0.0)
    kill = b.or_(b.fcmp_ordered("==", x, zero), b.fcmp_ordered("==", y, zero))
    return b.select(kill, zero, b.fmul(x, y))


def _composite(em, c: Composite, a, b):
    """A buffer holding composite ``c``, from its factors' arrays ``a`` and ``b``."""
    out = em.buffer(c.size)
    table = None if c.table is None else loops.index_table(em.module, c.table)

    def body(i, _):
        x = em.b.load(em.b.gep(a, [i], source_etype=DOUBLE), typ=DOUBLE)
        j = i if table is None else load_index(em.b, table, i)
        y = em.b.load(em.b.gep(b, [j], source_etype=DOUBLE), typ=DOUBLE)
        em.b.store(_kill_product(em.b, x, y), em.b.gep(out, [i], source_etype=DOUBLE))
        return []

    em.loop(c.size, body)
    return out


FUSE_BACK = 8  # groups searched back for a step to join (the plans have tens of steps)


def _fused(p: Plan) -> list:
    """The steps in groups that run as one loop: steps of one count reading the same entries
    (source, positions and scale positions) load them once. A step joins an earlier group only
    where no step run between them writes what it reads or reads what it writes; additions into
    one buffer may change order (the last bit of a sum, as any order of the plan's terms)."""

    def alias(b):  # a buffer the result holds is a part of the result
        return RESULT if b in p.inside else b

    def same(x, y):
        return x is y or (x is not None and y is not None and np.array_equal(x, y))

    groups: list = []
    for st in p.steps:
        into = None
        for g in range(len(groups) - 1, max(len(groups) - FUSE_BACK, 0) - 1, -1):
            head = groups[g][0]
            if (
                (head.src, head.count) == (st.src, st.count)
                and same(head.spos, st.spos)
                and same(head.sidx, st.sidx)
            ):
                into = groups[g]
                break
            if any(alias(o.dst) == alias(st.src) or alias(o.src) == alias(st.dst) for o in groups[g]):
                break  # st cannot run before this group
        if into is None:
            groups.append([st])
        else:
            into.append(st)
    return groups


def _steps(em, group, dsts, src, scales, assigns):
    """One loop running ``group``'s steps (see :class:`Step`), each into its ``dsts`` buffer."""
    b = em.b
    module = em.module
    head = group[0]
    spos = None if head.spos is None else loops.index_table(module, head.spos)
    sidx = None if head.sidx is None else loops.index_table(module, head.sidx)
    dpos = [None if st.dpos is None else loops.index_table(module, st.dpos) for st in group]

    def at(ptr, table, i):
        return b.gep(ptr, [i if table is None else load_index(b, table, i)], source_etype=DOUBLE)

    def body(i, c):
        x = None if head.src == ONES else b.load(at(src, spos, i), typ=DOUBLE)
        k = i if sidx is None else load_index(b, sidx, i)
        for st, dst, scale, assign, table in zip(group, dsts, scales, assigns, dpos, strict=True):
            coef = ir.Constant(DOUBLE, st.coef)
            if scale is None:
                term = coef if x is None else x if st.coef == 1.0 else b.fmul(coef, x)
            else:
                p = b.load(b.gep(scale, [k], source_etype=DOUBLE), typ=DOUBLE)
                # A zero partial kills an inf/NaN entry, a zero entry an inf/NaN partial.
                term = p if x is None else _kill_product(b, p, x)
                if st.coef != 1.0:
                    term = b.fmul(coef, term)
            where = at(dst, table, i)
            b.store(term if assign else b.fadd(b.load(where, typ=DOUBLE), term), where)
        return []

    em.loop(head.count, body)


def compile_object(graph, wrt, value: bool, kind: str):
    """``(object code, IR, optimised IR, layout, pattern)`` of the sparse loop kernel (``kind``
    "csr", "csc", or "dense": the dense Jacobian, whose layout is not ``full``)."""
    from ..backend import runtime

    module = runtime._module("symjac_kernel")
    shapes, n64 = build_module(module, graph, wrt, value, kind)
    # Unrolled, the Brusselators' few loops batch 13% faster (2 x 32^2); N-body's many pair loops
    # take 40% longer to build (N=20: 277 against 161 ms) to gain 4% a call and 8% a batch.
    # LLVM's loop vectoriser finds nothing to gain in loops through position tables: without it
    # N-body N=20 builds as fast and calls 13% faster (28.5 against 32.6 us), the grids the same.
    unroll = kind != "dense"
    built = loops.native(module, graph, shapes, n64, unroll=unroll, full=kind != "dense", vectorize=False)
    return (*built, plan(graph, wrt, kind).pattern)


def bind(graph, wrt, kind: str) -> set:
    """Bind every array a cached sparse kernel of ``graph`` may read (recomputed from the graph,
    never read from the cache); returns their symbols."""
    names = loops.bind_data(graph)
    for t in plan(graph, wrt, kind).tables():
        if t.size >= loops.DATA_FROM:
            names.add(loops._data_symbol(t.astype(np.int32)))
    return names
