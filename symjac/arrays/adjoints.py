"""The reverse kernels' contractions: an operand's adjoint gets the transposed contraction.

``einsum(letters -> out)``'s operand ``k`` gets the contraction of the other operands' values with
the result's adjoint (a matmul's is the transposed matmul, a sum's a broadcast). The target's
last letter is register-blocked, ``ROWS`` targets at a time, each with vector accumulators over
an adjoint row; where adjoint rows are short (an MLP's 4 outputs) the vectors run along the
target's letter instead, over a weight matrix's contiguous row. Where an inf or NaN can reach
it (:mod:`symjac.arrays.finiteness`) and does, a scalar loop keeps the zero rule instead.
"""

from __future__ import annotations

import llvmlite.ir as ir

from ..backend import vecmath
from .emitter import ACCUMULATOR_LANES, CHUNK, DOUBLE, I32, I64, WHOLE_ROW, View, _c_strides
from .letters import reduce_letters

ROWS = 8  # adjoint rows per register block of a contraction (their accumulators stay in registers)


def transposed(letters_of):
    """The transpose of ``einsum(letters -> out)``: operand ``k``'s adjoint gets the contraction of
    the other operands' values with the result's adjoint."""

    def rule_(em, graph, n, sweep):
        op, args, params = graph.eqns[n]
        adjoint = sweep.adjoint
        values = [sweep.nodes[a].value for a in args]
        letters, out, sizes = letters_of(params, [v.shape for v in values])
        ybar = adjoint[n]
        out_shape = tuple(sizes[c] for c in out)
        if ybar.shape != out_shape:  # a sum's keepdims: the same rows without the kept 1s
            ybar = View(ybar.base, ybar.offset, out_shape, _c_strides(out_shape))
        for k, a in enumerate(args):
            if a not in adjoint:
                continue
            others = [i for i in range(len(args)) if i != k]
            factors = [(values[i], letters[i]) for i in others]
            ok, checked, exact = None, em.guards.get(n), None
            if factors and checked is not None:  # the fast products are exact where all is finite
                ok = em.clean_or_finite([ybar])
                for i in checked:
                    if i != k and not isinstance(values[i].base, tuple):
                        ok = em.b.and_(ok, em.finite(values[i]))
                zeros = em.structure  # which zeros may kill an inf: constants', the adjoint's
                exact = ([zeros.value(args[i]) for i in others], n in zeros.adjoints)
            _contract_rows(em, adjoint[a], letters[k], factors, (ybar, out), sizes, ok, exact)

    return rule_


def sum_letters(params, shapes):
    axes, keepdims = params
    lets, axes, out = reduce_letters(shapes[0], axes, keepdims)
    return [lets], out, dict(zip(lets, shapes[0], strict=True))


def _over(view: View, lets: str, order, sizes) -> View:
    """``view`` (indexed by ``lets``) as a view over the letters ``order``: stride 0 where a letter
    is absent or broadcast, strides added where a letter repeats (a diagonal)."""
    strides = dict.fromkeys(order, 0)
    for c, size, s in zip(lets, view.shape, view.strides, strict=True):
        strides[c] += s if size != 1 or sizes[c] == 1 else 0
    return View(view.base, view.offset, tuple(sizes[c] for c in order), tuple(strides[c] for c in order))


def _contract_rows(em, target, target_letters, factors, row, sizes, ok=None, kills=None):
    """``target[T] += sum over the other letters of prod(factors) * row`` (rows of the adjoint).

    The last target letter is register-blocked, ``ROWS`` targets at a time, each with its own
    vector accumulators, so that one adjoint row loaded serves them all. Unless ``ok`` (an i1:
    nothing multiplied is inf or NaN) holds, a scalar loop computes it instead, where a structural
    zero times an inf or NaN contributes nothing (the forward kernel's and the element road's
    rule): ``kills`` says whose zeros are, each factor's and the row's (see structural)."""
    b = em.b
    ordered = list(dict.fromkeys(target_letters))
    every = dict.fromkeys(target_letters + "".join(lets for _, lets in factors) + row[1])
    summed = [c for c in every if c not in ordered]
    order = ordered + summed
    fviews = [_over(v, lets, order, sizes) for v, lets in factors]
    rview = _over(row[0], row[1], order, sizes)
    full_t = _over(target, target_letters, order, sizes)
    tview = View(full_t.base, full_t.offset, full_t.shape[: len(ordered)], full_t.strides[: len(ordered)])
    tshape = list(tview.shape)
    inner = [sizes[c] for c in summed]
    lanes = min(em.width, WHOLE_ROW if em.width <= WHOLE_ROW else CHUNK)
    rows = max(1, min(ROWS, ACCUMULATOR_LANES // lanes))

    def block(idxs):
        def chunk(c0, vtype):
            def step(jdx, carry):
                new = []
                for idx, acc in zip(idxs, carry, strict=True):
                    full = idx + jdx
                    coef = None
                    for fv in fviews:
                        x = em.load(fv, full)
                        coef = x if coef is None else b.fmul(coef, x)
                    r = em.load_row(rview, full, c0, vtype)
                    new.append(b.fadd(acc, r) if coef is None else em.fma(em.splat(coef, vtype), r, acc))
                return new

            accs = em.nest(inner, step, [em.zeros(vtype)] * len(idxs))
            for idx, acc in zip(idxs, accs, strict=True):
                em.store_row(b.fadd(em.load_row(tview, idx, c0, vtype), acc), tview, idx, c0)

        em.chunks(chunk)

    def fast():
        if not tshape or rows == 1 or tshape[-1] < 2:
            em.nest(tshape, lambda idx, c: (block([idx]), [])[1])
            return
        lanes = vecmath.lanes("float64")
        last = len(tshape) - 1
        if (
            2 * em.width <= lanes <= tshape[-1]
            and rview.strides[last] == 0
            and any(fv.strides[last] == 1 for fv in fviews)
            and all(fv.strides[last] in (0, 1) for fv in fviews)
        ):
            # Short adjoint rows (an MLP's 4 outputs) fill a fraction of a vector: vectorise along
            # the target's last letter instead, where the factor is contiguous (a weight's row).
            done = _contract_lanes(em, tview, fviews, rview, inner, tshape, lanes)
            if done < tshape[-1]:
                em.blocks(tshape, rows, block, start=done)
            return
        em.blocks(tshape, rows, block)

    if ok is None:
        fast()
        return
    with b.if_else(ok) as (plain, exact):
        with plain:
            fast()
        with exact:
            em.taint()  # the adjoint it adds to may now hold an inf: the contractions after check
            n = len(fviews)
            em.cold(
                [tview, *fviews, rview],
                lambda sub, vs: _exact_rows(sub, vs[0], vs[1 : n + 1], vs[-1], inner, tshape, *kills),
            )


def _exact_rows(em, tview, fviews, rview, inner, tshape, constant, row_exact):
    """``_contract_rows``'s sums one double at a time, a product with a structural zero (of a
    ``constant`` factor, or of the adjoint row where ``row_exact``) being zero even where the
    other is inf or NaN."""
    b, zero = em.b, ir.Constant(DOUBLE, 0.0)

    def target(idx, carry):
        def column(j, carry):
            def step(jdx, carry):
                (acc,) = carry
                full = idx + jdx
                coef, kills = None, []
                for fv, const in zip(fviews, constant, strict=True):
                    x = em.load(fv, full)
                    coef = x if coef is None else b.fmul(coef, x)
                    if const:
                        kills.append(b.fcmp_ordered("==", x, zero))
                r = b.load(em.address(rview, full, em.width, j), typ=DOUBLE)
                if row_exact:
                    kills.append(b.fcmp_ordered("==", r, zero))
                return [em.killed_fma(coef, r, acc, em.either(kills))]

            (acc,) = em.nest(inner, step, [zero])
            at = em.address(tview, idx, em.width, j)
            b.store(b.fadd(b.load(at, typ=DOUBLE), acc), at)
            return []

        em.loop(em.width, column)
        return []

    em.nest(tshape, target)


def _contract_lanes(em, tview, fviews, rview, inner, tshape, lanes) -> int:
    """``_contract_rows`` with vectors along the target's last letter: ``blocks`` vectors of
    ``lanes`` targets, one accumulator per vector and adjoint column; returns how many targets
    along that letter it covered (whole spans), the rest being left to the row-vector loops."""
    b, m = em.b, em.width
    blocks = max(1, min(4, 8 // m, tshape[-1] // lanes))
    span = lanes * blocks
    vtype = ir.VectorType(DOUBLE, lanes)
    full = tshape[-1] // span

    def outer(idx, c):
        def spans(i, c):
            start = b.mul(i, ir.Constant(I64, span))
            firsts = [b.add(start, ir.Constant(I64, k * lanes)) for k in range(blocks)]

            def step(jdx, carry):
                new = list(carry)
                coefs = []
                for first in firsts:
                    coef = None
                    for fv in fviews:
                        if fv.strides[len(idx)] == 1:  # contiguous along the vectorised letter
                            ptr = em.pointer(em.address(fv, [*idx, first, *jdx]), vtype)
                            x = b.load(ptr, typ=vtype, align=8)
                        else:
                            x = em.splat(em.load(fv, [*idx, first, *jdx]), vtype)
                        coef = x if coef is None else b.fmul(coef, x)
                    coefs.append(coef)
                for col in range(m):
                    y = b.load(em.address(rview, [*idx, start, *jdx], m, ir.Constant(I64, col)), typ=DOUBLE)
                    y = em.splat(y, vtype)
                    for k, coef in enumerate(coefs):
                        new[k * m + col] = em.fma(coef, y, new[k * m + col])
                return new

            accs = em.nest(inner, step, [em.zeros(vtype)] * (blocks * m))
            for k, first in enumerate(firsts):
                columns = accs[k * m : (k + 1) * m]
                if tview.strides[-1] == 1:  # the block's rows follow one another: one vector
                    _add_transposed(em, tview, [*idx, first], columns, lanes)
                    continue
                for col, acc in enumerate(columns):
                    for r in range(lanes):
                        at = em.address(
                            tview, [*idx, b.add(first, ir.Constant(I64, r))], m, ir.Constant(I64, col)
                        )
                        x = b.extract_element(acc, ir.Constant(ir.IntType(32), r))
                        b.store(b.fadd(b.load(at, typ=DOUBLE), x), at)
            return []

        em.loop(full, spans)
        return []

    em.nest(tshape[:-1], outer)
    return full * span


def _add_transposed(em, tview, idx, columns, lanes):
    """Add ``columns[c][r]`` to row ``r`` (of ``m`` doubles), column ``c``, of the ``lanes`` rows
    at ``idx``, contiguous in memory: the accumulators interleaved by two shuffles, one load and
    one store (an ``m`` x ``lanes`` transpose)."""
    b, m = em.b, len(columns)
    parts = list(columns)
    while len(parts) > 1:  # concatenate: two vectors of n lanes make one of 2n
        pairs = []
        for a, c in zip(parts[::2], parts[1::2], strict=False):
            n = a.type.count
            mask = ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n)))
            pairs.append(b.shuffle_vector(a, c, mask))
        if len(parts) % 2:
            last = parts[-1]
            n = last.type.count  # pad the odd one to the others' length with zero lanes
            mask = ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n)))
            pairs.append(b.shuffle_vector(last, em.zeros(last.type), mask))
        parts = pairs
    (whole,) = parts
    size = m * lanes
    order = [c * lanes + r for r in range(lanes) for c in range(m)]
    mask = ir.Constant(ir.VectorType(I32, size), order)
    rows = b.shuffle_vector(whole, ir.Constant(whole.type, ir.Undefined), mask)
    vtype = ir.VectorType(DOUBLE, size)
    ptr = em.pointer(em.address(tview, idx, m), vtype)
    b.store(b.fadd(b.load(ptr, typ=vtype, align=8), rows), ptr, align=8)
