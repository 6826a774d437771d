"""The plan of a sparse loop kernel (:mod:`symjac.arrays.sparse_loops`): each op's rule for its
entries, from its operands' (see that module's docstring), run over the graph once, in NumPy."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import replace

import numpy as np

from ..elements.derive import _input_specs
from ..trace.ops import ELEMENTWISE, decode_index
from . import data, loops
from .elementwise import Unsupported
from .letters import einsum_letters, matmul_letters
from .loops import _is_mask, _scalar_rule
from .sparse import _axes, _positions, entries_per_row
from .sparse_struct import (
    ONES,
    RESULT,
    Pending,
    Plan,
    Step,
    Struct,
    _get,
    _keyed_union,
    _overlap,
    _Planner,
    _rows_of,
    _scalable,
    _stacked,
    _table,
)

GATHERS = frozenset({"reshape", "transpose", "broadcast_to", "getitem", "setitem", "concat", "stack", "cast"})
REDUCTIONS = frozenset({"sum", "max", "min", "logsumexp"})  # the last three weigh their rows
CONTRACTIONS = frozenset({"matmul", "einsum"})  # with one live operand: the other weighs its rows


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
        merged.setdefault((id(t), scale), (t, scale, []))[2].append(coef)
    # fsum: the coefficients' exact sum, rounded once (0.7 + 1.1 - 1.8 is 0, in any order)
    terms = [(t, scale, math.fsum(coefs)) for t, scale, coefs in merged.values()]
    if not terms:
        return None
    if len(terms) == 1 and terms[0][1] is None and terms[0][2] == 1.0:  # x + c: x's entries, unmoved
        return terms[0][0]
    return Pending(math.prod(shape), terms, owner=n)


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


def _unstored(planner, S, a) -> Pending | None:
    """``a``'s pending entries, where its readers may still take their terms: not stored yet,
    and not an output (which is stored at the end whatever they do)."""
    s = S[a]
    return s if type(s) is Pending and s.stored is None and a not in planner.outputs else None


def _passes(planner, S, a, p, readers: int, size: int) -> bool:
    """Whether a reader of ``a``'s pending entries takes its terms rather than its stored entries:
    where, with every reader doing so, fewer entries move (and composite scales are computed)
    than by storing them once for all readers to read."""
    s = _unstored(planner, S, a)
    if s is None:
        return False
    if p.is_Number and readers == 1:
        return True
    moved = sum(len(t.cols) for t, _, _ in s.terms)
    chains = 0 if p.is_Number else len({scale for _, scale, _ in s.terms if scale is not None})
    cost = readers * (moved + chains * size)
    if cost > moved + readers * moved:  # storing is cheaper even if no two terms share an entry
        return False
    if cost > moved + readers * max(len(t.cols) for t, _, _ in s.terms):  # it depends on the union
        return cost <= moved + readers * _overlap(planner, s)[0]
    return True


def _merged(planner, structs, group, size: int):
    """The structs' rows summed into ``size`` rows, row ``r`` into row ``group[r]``: ``(their
    structure, its buffer, the places there of each struct's entries)``."""
    indptr, cols, places = _keyed_union(planner, structs, size, group)
    return (*planner.owned(indptr, cols), places)


def _reduce(planner, graph, n, op, x, params, S) -> Struct:
    x_shape = tuple(graph.shape(x))
    axes = _axes(params[0], len(x_shape))
    kept = tuple(1 if d in axes else k for d, k in enumerate(x_shape))
    group = np.broadcast_to(_positions(kept), x_shape).ravel()
    t = _get(planner, S, x)
    out, dst, (inverse,) = _merged(planner, [t], group, math.prod(kept))
    if op == "sum":
        planner.move(dst, t, inverse)
    else:  # each entry times its element's weight (softmax, or a share of the ties)
        planner.move(dst, t, inverse, (n, 0), t.rows())
    return out


def contraction_letters(graph, op, args, params) -> tuple[list, str, dict]:
    shapes = [tuple(graph.shape(a)) for a in args]
    if op == "matmul":
        return matmul_letters(*shapes)
    return einsum_letters(params[0], shapes)


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
    return readers == 1 and _unstored(planner, S, a) is not None


def _weighable(planner, s: Pending) -> list:
    """``s``'s terms as a contraction weighs them: the entries that two unscaled terms share
    summed and stored first. ``0.7 x + 1.1 x - 1.8 x`` is exactly 0, but weighed term by term
    it is an ulp, which a large factor downstream, or sqrt's infinite partial, magnifies. Scaled
    terms' entries are run-time products whose sums cancel only by chance, as in any order of
    summation; a non-finite weight makes the output's value inf or NaN whatever the entries."""
    plain = [term for term in s.terms if term[1] is None]
    if len(plain) < 2:
        return s.terms
    own, rest = _scalable(planner, Pending(s.size, plain, owner=s.owner))
    if rest is None:
        return s.terms
    return [term for term in s.terms if term[1] is not None] + own + [(rest, None, 1.0)]


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
        terms = _weighable(planner, s)
        result, dst, places_of = _merged(planner, [t for t, _, _ in terms], group, size)
        for (t, scale, coef), places in zip(terms, places_of, strict=True):
            if scale is None:
                planner.move(dst, t, places, (n, weight), weights[t.rows()], coef)
            else:
                chained = planner.composite(scale, (n, weight), weights, len(rows))
                planner.move(dst, t, places, chained, t.rows(), coef)
        return result
    t = _get(planner, S, a).take(rows, planner)
    result, dst, (inverse,) = _merged(planner, [t], group, size)
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
        places, sources = data.assigned_positions(graph.shape(n), graph.shape(args[1]), index)
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
    return x.take(data.gather_positions(x_shape, decode_index(params[0])), planner)


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
    planner = _Planner(width, graph.outputs)
    uses = np.bincount([a for _, args, _ in graph.eqns for a in args if type(a) is int] + list(graph.outputs),
                       minlength=len(graph.eqns))  # fmt: skip
    S: list = []
    for n, (op, args, params) in enumerate(graph.eqns):
        planner.node = n
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
    planner.node = None
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
    return Plan(tuple(planner.sizes), tuple(steps), partials, pattern, nnz, inside, tuple(planner.composites),
                planner.owners)  # fmt: skip


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
