"""Sparse tangents: the array road for stencils, particle systems and other local models.

A Jacobian seed is the identity, and most models keep it sparse for a long way: a stencil's
value at a grid point reads five neighbours, a pair force two particles. Dense tangents carry
``size x width`` numbers per operation, mostly zeros (a 2 x 64^2 grid: 67 million per op); here
a tangent is :class:`Rows`, one sparse row per element, and each rule is a row operation:

- gathers (indexing, transpose, broadcasting, concatenation, assignment) pick rows by an index
  map, the op applied to ``arange(size)``;
- reductions (sum, max, min, logsumexp) merge weighted rows;
- elementwise ops scale each row by its partial derivative and add the arguments' rows.

A structural zero is never multiplied, as on the per-element road: an infinite partial leaves a
structural zero a zero. Ops without a sparse rule (matmul, einsum, products, cumulative sums)
and tangents that fill up (more than ``DENSE_FRACTION`` of their entries) continue dense.

Rows are NumPy arrays, not SciPy's: the few operations needed are a handful of vectorised NumPy
calls each, and importing ``scipy.sparse`` (0.3 s) costs more than a whole first call on a
2 x 32^2 grid.
"""

from __future__ import annotations

import math
import mmap

import numpy as np

from ..trace.ops import ELEMENTWISE, decode_index
from . import structural

# Seeds are sparse from this width on; below it a dense tangent is a few cache lines per element.
SPARSE_FROM = 64
# A sparse tangent with more entries than this fraction of its dense size continues dense.
DENSE_FRACTION = 0.25
# Dense results of at least this many bytes are built on pages mapped only where written.
UNTOUCHED_FROM = 1 << 24
# The cost model's price of one stored entry, relative to one dense tangent element: row
# operations move an index and a value, and gather through index arrays.
ENTRY_COST = 4.0


class Rows:
    """A ``(rows, width)`` matrix by rows: row ``r``'s entries are ``indices`` / ``data`` in
    ``indptr[r]:indptr[r + 1]``. A column may appear twice in a row (the entries add up), so
    that adding rows is a concatenation; :meth:`compact` merges them."""

    __slots__ = ("indptr", "indices", "data", "width")

    def __init__(self, indptr, indices, data, width: int):
        self.indptr, self.indices, self.data, self.width = indptr, indices, data, width

    @classmethod
    def identity(cls, start: int, size: int, width: int) -> Rows:
        """Rows ``start .. start + size`` of the ``width x width`` identity: one input's seed."""
        return cls(np.arange(size + 1), np.arange(start, start + size), np.ones(size), width)

    @classmethod
    def zeros(cls, rows: int, width: int) -> Rows:
        return cls(np.zeros(rows + 1, dtype=np.int64), np.zeros(0, np.int64), np.zeros(0), width)

    @property
    def rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.data)

    def row_of_entry(self) -> np.ndarray:
        return np.repeat(np.arange(self.rows), np.diff(self.indptr))

    def take(self, rows) -> Rows:
        """Row ``rows[i]`` of ``self`` as row ``i``."""
        rows = np.ravel(rows)
        lengths = np.diff(self.indptr)[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        source = np.repeat(self.indptr[rows] - indptr[:-1], lengths) + np.arange(indptr[-1])
        return Rows(indptr, self.indices[source], self.data[source], self.width)

    def scaled(self, scale: np.ndarray, scale_exact, entries_exact) -> Rows:
        """Row ``r`` times ``scale[r]``; a structural zero times an inf or NaN is 0 in both
        orders, as in the dense rule (:func:`symjac.arrays.forward.scaled`)."""
        s = scale[self.row_of_entry()]
        data = s * self.data
        if not np.isfinite(data).all():
            zeros = (s == 0) & ~np.isfinite(self.data), (self.data == 0) & ~np.isfinite(s)
            kill = np.zeros(len(data), dtype=bool)
            if zeros[0].any():
                kill |= zeros[0] & structural.where(scale_exact, np.shape(scale))[self.row_of_entry()]
            if zeros[1].any() and structural.resolve(entries_exact):
                kill |= zeros[1]
            if ((zeros[0] | zeros[1]) & ~kill).any():
                structural.undecided()
            data[kill] = 0.0
        return Rows(self.indptr, self.indices, data, self.width)

    def __add__(self, other: Rows) -> Rows:
        """Row by row, ``self``'s entries then ``other``'s (no sort: each lands at its place)."""
        indptr = self.indptr + other.indptr
        mine, theirs = np.diff(self.indptr), np.diff(other.indptr)
        at_a = np.repeat(indptr[:-1] - self.indptr[:-1], mine) + np.arange(self.nnz)
        at_b = np.repeat(indptr[:-1] + mine - other.indptr[:-1], theirs) + np.arange(other.nnz)
        indices = np.empty(len(at_a) + len(at_b), dtype=np.int64)
        data = np.empty(len(indices))
        indices[at_a], indices[at_b] = self.indices, other.indices
        data[at_a], data[at_b] = self.data, other.data
        return Rows(indptr, indices, data, self.width)

    @staticmethod
    def stacked(parts: list[Rows]) -> Rows:
        offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
        indptr = np.concatenate([[0]] + [p.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)])
        return Rows(
            indptr,
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.data for p in parts]),
            parts[0].width,
        )

    def merged(self, group: np.ndarray, n_groups: int) -> Rows:
        """Rows summed into ``n_groups`` rows, row ``r`` into row ``group[r]``."""
        order = np.argsort(group, kind="stable")
        out = self.take(order)
        counts = np.bincount(group, weights=np.diff(self.indptr), minlength=n_groups).astype(np.int64)
        indptr = np.zeros(n_groups + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return Rows(indptr, out.indices, out.data, self.width).compact()

    def compact(self) -> Rows:
        """One entry per column of each row (duplicates added), when that saves entries."""
        keys = self.row_of_entry() * self.width + self.indices
        unique, inverse = np.unique(keys, return_inverse=True)
        if len(unique) == len(keys):
            return self
        data = np.bincount(inverse, weights=self.data, minlength=len(unique))
        indptr = np.zeros(self.rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(unique // self.width, minlength=self.rows), out=indptr[1:])
        return Rows(indptr, unique % self.width, data, self.width)

    def toarray(self, untouched: bool = False) -> np.ndarray:
        """The dense matrix; ``untouched``: on pages mapped only where written (a result the
        caller gets, not a tangent that the next rule reads whole)."""
        rows = self.compact()
        shape = (self.rows, self.width)
        out = untouched_zeros(shape) if untouched else np.zeros(shape)
        out[rows.row_of_entry(), rows.indices] = rows.data
        return out


def untouched_zeros(shape) -> np.ndarray:
    """Zeros whose memory is mapped only where it is written.

    A 2 x 64^2 grid's dense Jacobian is 537 MB, of which its rows write a few pages each. NumPy
    asks for huge pages for large arrays (``MADV_HUGEPAGE``), so each first write zeroed 2 MB:
    1.1 s in a fresh process, against 0.03 s on a private anonymous mapping's 4 KB pages. Its
    unwritten pages read as the one zero page; private, so a forked child's writes stay its own.
    """
    nbytes = math.prod(shape) * 8
    if nbytes < UNTOUCHED_FROM or not hasattr(mmap, "MAP_PRIVATE"):  # Windows: no MADV_HUGEPAGE
        return np.zeros(shape)
    try:
        pages = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except OSError:
        raise MemoryError(f"cannot allocate {nbytes:,} bytes for a {shape} result") from None
    if hasattr(mmap, "MADV_NOHUGEPAGE"):  # a machine whose huge pages are "always" on
        pages.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(pages, dtype=np.float64).reshape(shape)


def is_sparse(t) -> bool:
    return type(t) is Rows


def dense(t: Rows, shape, width: int) -> np.ndarray:
    return t.toarray().reshape(tuple(shape) + (width,))


def flat(t, size: int, width: int) -> Rows:
    """``t`` as rows; an absent tangent is zero. (Dense tangents never meet sparse ones here:
    the evaluator makes both dense first.)"""
    return Rows.zeros(size, width) if t is None else t


def settle(t, shape, width: int):
    """A rule's sparse result for a node of ``shape``, dense once it has filled up."""
    if type(t) is Rows and t.nnz > DENSE_FRACTION * t.rows * width:
        return dense(t, shape, width)
    return t


def _positions(shape) -> np.ndarray:
    return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)


def scaled_sum(terms, shape, width: int) -> Rows:
    """``sum(p * t for p, t, ... in terms)`` for partials ``p`` (broadcast to ``shape``) and
    tangents of their arguments (of the argument's shape), as the dense elementwise rule computes
    it; each term's last two entries say whether ``p``'s and ``t``'s zeros are structural."""
    total = None
    for p, t, arg_shape, p_exact, t_exact in terms:
        t = flat(t, math.prod(arg_shape), width)
        if tuple(arg_shape) != tuple(shape):
            t = t.take(np.broadcast_to(_positions(arg_shape), shape))
        term = t.scaled(np.broadcast_to(p, shape).ravel(), _flat(p_exact, shape), t_exact)
        total = term if total is None else total + term
    return total


def _flat(exact, shape):
    """A ``structural_at`` answer (or a function giving one) as a lazy flat mask over ``shape``."""
    return lambda: structural.where(exact, shape).ravel()


def _reduced(x_shape, axes, weights, t: Rows, selects=False) -> Rows:
    """``t`` summed over ``axes``, each row times its weight (whose zeros are structural where
    they ``select``: max and min's elements that are not the extremum)."""
    out = tuple(1 if d in axes else n for d, n in enumerate(x_shape))
    if weights is not None:
        t = t.scaled(np.broadcast_to(weights, x_shape).ravel(), selects, False)
    group = np.broadcast_to(_positions(out), x_shape).ravel()
    return t.merged(group, math.prod(out))


def _sum(vals, tans, params, shape, value, width):
    (x,), (t,), (axes, _) = vals, tans, params
    return _reduced(x.shape, _axes(axes, x.ndim), None, t)


def _axes(axes, ndim):
    if axes is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (axes if isinstance(axes, tuple | list) else (axes,)))


def _extremum(vals, tans, params, shape, value, width):
    (x,), (t,), (axes, _) = vals, tans, params
    axes = _axes(axes, x.ndim)
    m = np.reshape(value, tuple(1 if d in axes else n for d, n in enumerate(x.shape)))
    tied = x == m  # split evenly between ties, as the dense rule
    return _reduced(x.shape, axes, tied / np.sum(tied, axis=axes, keepdims=True), t, selects=True)


def _logsumexp(vals, tans, params, shape, value, width):
    (x,), (t,), (axes, _) = vals, tans, params
    axes = _axes(axes, x.ndim)
    lse = np.reshape(value, tuple(1 if d in axes else n for d, n in enumerate(x.shape)))
    softmax = np.exp(x - np.where(np.isfinite(lse), lse, 0.0))
    if not np.isfinite(lse).all():  # all -inf: the dense rule's weights, exp(x - max) / total
        top = np.max(x, axis=axes, keepdims=True)
        w = np.exp(x - np.where(np.isfinite(top), top, 0.0))
        softmax = w / np.sum(w, axis=axes, keepdims=True)
    return _reduced(x.shape, axes, softmax, t)


def _getitem(vals, tans, params, shape, value, width):
    (x,), (t,) = vals, tans
    return t.take(_positions(x.shape)[decode_index(params[0])])


def _setitem(vals, tans, params, shape, value, width):
    (x, y), (tx, ty) = vals, tans
    y_shape = np.shape(y)
    positions = _positions(x.shape).copy()
    positions[decode_index(params[0])] = x.size + _positions(y_shape)
    return Rows.stacked([flat(tx, x.size, width), flat(ty, math.prod(y_shape), width)]).take(positions)


def _joined(kind):
    join = np.concatenate if kind == "concat" else np.stack

    def rule_(vals, tans, params, shape, value, width):
        offsets = np.cumsum([0] + [np.size(v) for v in vals])
        positions = join(
            [at + _positions(np.shape(v)) for at, v in zip(offsets, vals, strict=False)], params[0]
        )
        parts = [flat(t, np.size(v), width) for v, t in zip(vals, tans, strict=True)]
        return Rows.stacked(parts).take(positions)

    return rule_


def _cast(vals, tans, params, shape, value, width):
    return tans[0] if np.asarray(value).dtype.kind == "f" else None


RULES = {
    "reshape": lambda v, t, p, s, value, w: t[0],
    "transpose": lambda v, t, p, s, value, w: t[0].take(_positions(v[0].shape).transpose(p[0])),
    "broadcast_to": lambda v, t, p, s, value, w: t[0].take(np.broadcast_to(_positions(v[0].shape), s)),
    "getitem": _getitem,
    "setitem": _setitem,
    "concat": _joined("concat"),
    "stack": _joined("stack"),
    "sum": _sum,
    "max": _extremum,
    "min": _extremum,
    "logsumexp": _logsumexp,
    "cast": _cast,
}


def entries_per_row(graph, width: int) -> list[float]:
    """For each node, about how many entries a row of its tangent holds (at most ``width``):
    the seed's one, grown by the elements each op combines. An upper bound (dependencies are
    counted as if they never overlapped), so the cost model errs towards dense."""
    per_row: list[float] = []
    seeded = set(graph.inputs)
    for n, (op, args, _) in enumerate(graph.eqns):
        ins = [per_row[a] for a in args if type(a) is int]
        if op == "input":
            k = 1.0 if n in seeded else 0.0
        elif op in ("const", "scalar"):
            k = 0.0
        elif op in ELEMENTWISE:
            k = sum(ins)
        elif op in ("setitem", "concat", "stack"):
            k = max(ins, default=0.0)
        elif op in ("sum", "max", "min", "logsumexp"):  # each row sums the rows it reduces over
            k = sum(ins) * math.prod(graph.shape(args[0])) / max(1, math.prod(graph.shape(n)))
        elif op in RULES:
            k = ins[0] if ins else 0.0
        else:  # no sparse rule: the tangent continues dense
            k = float(width)
        per_row.append(min(float(width), k))
    return per_row
