"""Sparse tangents' structure while a sparse loop kernel is planned (:mod:`symjac.arrays.sparse_plan`):
which input columns each node's elements hold entries for, where their values live, the terms of
entries not stored yet, and the steps and scales that move them (:mod:`symjac.arrays.sparse_loops`
lowers them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .elementwise import Unsupported

ONES = 0  # the buffer of the seeds' entries: all ones, never stored
RESULT = -1  # the kernel's result array
# Stored entries (of every node together) past which the road is refused: each costs about 40
# bytes while building, as index tables and NumPy temporaries.
ENTRY_BUDGET = 20_000_000


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
    another elementwise op of the same shape where that moves fewer entries (``sparse_plan._passes``:
    its partial then scales each term, through a :class:`Composite`), or a contraction that is
    its one reader (``sparse_plan._sums_terms``)."""

    size: int
    terms: list  # (Struct, scale: None, (node, k) or ("chain", i), coef: float)
    stored: Struct | None = None
    split: tuple | None = None  # _scalable's answer, once asked
    overlap: tuple | None = None  # _overlap's answer, once asked
    owner: int | None = None  # the node whose entries these are


def _get(planner, S, n) -> Struct | None:
    """Node ``n``'s structure, its entries stored first if they are pending."""
    s = S[n]
    if type(s) is not Pending:
        return s
    if s.stored is None:
        s.stored = _store_for(planner, n, s.terms, s.size)
    return s.stored


def _store_for(planner, node, terms, size: int) -> Struct:
    """``_store``, its buffer marked as holding (a part of) ``node``'s entries."""
    reader, planner.node = planner.node, node
    try:
        return _store(planner, terms, size)
    finally:
        planner.node = reader


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
        shared = _overlap(planner, s)[1].copy()
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
        s.split = (own, _store_for(planner, s.owner, rest, s.size))
    return s.split


def _overlap(planner, s: Pending) -> tuple[int, np.ndarray]:
    """The entries of the sum of ``s``'s terms, and which of the terms' entries (in order) another
    term shares: one sort of their keys, in sorted runs (one per term), per pending node."""
    if s.overlap is None:
        keys = np.concatenate([t.rows() * planner.width + t.cols for t, _, _ in s.terms])
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        first = np.empty(len(keys), dtype=bool)
        first[:1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
        group = np.cumsum(first) - 1
        shared = np.empty(len(keys), dtype=bool)
        shared[order] = np.bincount(group)[group] > 1
        s.overlap = (int(group[-1]) + 1 if len(keys) else 0, shared)
    return s.overlap


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
    owners: dict = field(default_factory=dict)  # buffer -> the node whose entries it holds, where one does

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
    def __init__(self, width, outputs=()):
        self.width = width
        self.outputs = set(outputs)
        self.node = None  # the node whose entries new buffers hold (None: a part, or a mix)
        self.owners = {}
        self.sizes = [0]
        self.steps = []
        self.partials = {}
        self.entries = 0
        self.composites = []
        self._composite_keys = {}

    def spend(self, entries: int):
        self.entries += entries
        if self.entries > ENTRY_BUDGET:
            raise Unsupported(f"sparse tangents of over {ENTRY_BUDGET:,} entries")

    def buffer(self, size: int) -> int:
        self.sizes.append(size)
        if self.node is not None:
            self.owners[len(self.sizes) - 1] = self.node
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
        indptr, cols, places = _keyed_union(planner, structs, size)
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


def _keyed_union(planner, structs, size: int, group=None):
    """``(indptr, cols, places)``: rows of ``size`` elements holding every column of the structs'
    rows, row ``r`` of each into row ``group[r]`` (its own row without ``group``), by sorting
    the entries' keys; ``places[k]``, where each of struct ``k``'s entries lands."""
    w = planner.width
    keys = [(t.rows() if group is None else group[t.rows()]) * w + t.cols for t in structs]
    unique, inverse = _unique(np.concatenate(keys))
    return (*_rows_of_keys(planner, unique, size), np.split(inverse, np.cumsum([len(k) for k in keys])[:-1]))


def _rows_of_keys(planner, unique, size: int):
    """``(indptr, cols)`` of ``size`` rows holding the sorted keys ``row * width + col``."""
    w = planner.width
    planner.spend(len(unique))
    indptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(unique // w, minlength=size), out=indptr[1:])
    return indptr, unique % w
