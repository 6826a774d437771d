"""Contractions and reductions as loop nests: matmul, einsum, sum, logsumexp, max and min.

Each result sums its terms in order; the innermost output axis is register-blocked so that a
tangent row loaded once serves several results, each with its own fused multiply-adds. A
contraction that an inf or NaN can reach (:mod:`symjac.arrays.finiteness`) tests the emitter's
flag and, where it is raised, takes an exact scalar loop of its own.
"""

from __future__ import annotations

import math

import llvmlite.ir as ir

from ..backend.codegen import _Lowerer
from .emitter import ACCUMULATOR_LANES, CHUNK, DOUBLE, I64, MAX_ROWS, WHOLE_ROW, Node, View, _dense
from .gathers import _reshaped
from .letters import einsum_letters, matmul_letters, reduce_letters

# --- contractions -------------------------------------------------------------------------------


def _contract(em, operands, letters, out_letters, sizes, shape, guard=None, n=None):
    """``einsum(letters -> out_letters)`` of ``operands`` (Nodes), with its tangent by the
    product rule; ``sizes`` maps each letter to its extent. With ``guard`` (the positions of the
    factors to check, see finiteness), points where an inf or NaN meets a zero take an exact loop
    (where a structural zero of node ``n``'s factors kills it, see structural).

    The innermost output axis is register-blocked: ``ROWS`` results at a time, each with its
    own accumulators, so that the fused multiply-adds of one result do not wait on each other
    and a tangent row loaded once serves them all. Each result still sums its terms in order.
    """
    b = em.b
    summed = [c for c in dict.fromkeys("".join(letters)) if c not in out_letters]
    out = _dense(em.buffer(math.prod(shape)), shape)
    live = [k for k, a in enumerate(operands) if a.tangent is not None]
    tout = _dense(em.buffer(math.prod(shape) * em.width), shape) if live else None

    def views(kind):
        # Each operand as a view over (out letters + summed letters): stride 0 where absent.
        order = list(out_letters) + summed
        result = []
        for a, lets in zip(operands, letters, strict=True):
            v = getattr(a, kind)
            if v is None:
                result.append(None)
                continue
            strides = dict.fromkeys(order, 0)
            for c, n, s in zip(lets, v.shape, v.strides, strict=True):
                strides[c] += s if n != 1 or sizes[c] == 1 else 0
            result.append(
                View(v.base, v.offset, tuple(sizes[c] for c in order), tuple(strides[c] for c in order))
            )
        return result

    vals, tans = views("value"), views("tangent")
    inner = [sizes[c] for c in summed]
    row = min(em.width, WHOLE_ROW if em.width <= WHOLE_ROW else CHUNK)
    rows = max(1, min(MAX_ROWS, ACCUMULATOR_LANES // max(row, 1)))

    def block(idxs):
        """The results at output indices ``idxs`` (a list), computed together; with one tangent
        vector per row the values accumulate in the same loop, beside the vector work."""
        together = tout is not None and em.width <= WHOLE_ROW
        vtype = ir.VectorType(DOUBLE, em.width) if together else None

        def values(jdx, carry):
            new = []
            for idx, acc in zip(idxs, carry, strict=True):
                xs = [em.load(v, idx + jdx) for v in vals]
                prod = xs[0]
                for x in xs[1:]:
                    prod = b.fmul(prod, x)
                    prod.flags.append("contract")
                total = b.fadd(acc, prod)
                total.flags += ["reassoc", "contract"]
                new.append(total)
            return new

        def tangents(jdx, carry, c0, vtype):
            new = []
            for idx, acc in zip(idxs, carry, strict=True):
                full = idx + jdx
                for k in live:
                    others = [em.load(v, full) for m, v in enumerate(vals) if m != k]
                    t = em.load_row(tans[k], full, c0, vtype)
                    if not others:
                        acc = b.fadd(acc, t)
                        continue
                    coef = others[0]
                    for x in others[1:]:
                        coef = b.fmul(coef, x)
                    acc = em.fma(em.splat(coef, vtype), t, acc)
                new.append(acc)
            return new

        zero, n = ir.Constant(DOUBLE, 0.0), len(idxs)
        c0 = ir.Constant(I64, 0)
        if together:
            both = em.nest(
                inner,
                lambda jdx, c: values(jdx, c[:n]) + tangents(jdx, c[n:], c0, vtype),
                [zero] * n + [em.zeros(vtype)] * n,
            )
            for idx, total, acc in zip(idxs, both[:n], both[n:], strict=True):
                em.store(total, out, idx)
                em.store_row(acc, tout, idx, c0)
            return
        totals = em.nest(inner, values, [zero] * n)
        for idx, total in zip(idxs, totals, strict=True):
            em.store(total, out, idx)
        if tout is None:
            return

        def chunk(c0, vtype):
            accs = em.nest(inner, lambda jdx, c: tangents(jdx, c, c0, vtype), [em.zeros(vtype)] * n)
            for idx, acc in zip(idxs, accs, strict=True):
                em.store_row(acc, tout, idx, c0)

        em.chunks(chunk)

    def results():
        if not shape or rows == 1 or shape[-1] < 2:
            em.nest(shape, lambda idx, c: (block([idx]), [])[1])
        else:
            em.blocks(shape, rows, block)

    if guard is None or not live:
        results()
        return Node(out, tout)
    # Where a tangent or a factor is inf or NaN, its products with the other's zeros are NaN,
    # but an exact zero times anything contributes nothing (the element road's and the sparse
    # road's rule): such points take a scalar loop with that rule, the rest no masks at all.
    with b.if_else(_contraction_finite(em, operands, live, guard)) as (fast, exact):
        with fast:
            results()
        with exact:
            em.taint()  # its tangent may now hold an inf: the contractions after it check too
            args, zeros = em.graph.eqns[n][1], em.structure
            constant = [zeros.value(a) for a in args]
            exact = [a in zeros.tangents for a in args]
            m = len(vals)
            em.cold(
                [*vals, *tans, out, tout],
                lambda sub, vs: _exact(
                    sub, vs[:m], vs[m : 2 * m], live, inner, shape, vs[-2], vs[-1], constant, exact
                ),
            )
    return Node(out, tout)


def _contraction_finite(em, operands, live, checked):
    """An i1 saying a contraction's fast tangent products are exact: no tangent has met an inf or
    NaN, and the factors at ``checked`` (those that can be inf or NaN) are finite."""
    b = em.b
    ok = em.clean_or_finite([operands[k].tangent for k in live])
    for m in checked:
        if any(k != m for k in live) and not isinstance(operands[m].value.base, tuple):
            ok = b.and_(ok, em.finite(operands[m].value))
    return ok


def _exact(em, vals, tans, live, inner, shape, out, tout, constant, exact):
    """A contraction's values and tangent one double at a time, each product of a structural zero
    (of a ``constant`` factor, or of a tangent that is ``exact``) with an inf or NaN in the
    tangent being zero; the others are the fast loops' multiply-adds, in order."""
    b, zero = em.b, ir.Constant(DOUBLE, 0.0)

    def product(views, full):
        xs = [em.load(v, full) for v in views]
        result = xs[0]
        for x in xs[1:]:
            result = b.fmul(result, x)
        return result

    def result(idx, carry):
        (total,) = em.nest(inner, lambda jdx, c: [b.fadd(c[0], product(vals, idx + jdx))], [zero])
        em.store(total, out, idx)

        def column(j, carry):
            def step(jdx, carry):
                (acc,) = carry
                full = idx + jdx
                for k in live:
                    t = b.load(em.address(tans[k], full, em.width, j), typ=DOUBLE)
                    if len(vals) == 1:
                        acc = b.fadd(acc, t)
                        continue
                    coef = product([v for m, v in enumerate(vals) if m != k], full)
                    kills = [b.fcmp_ordered("==", em.load(v, full), zero)
                             for m, v in enumerate(vals) if m != k and constant[m]]  # fmt: skip
                    if exact[k]:
                        kills.append(b.fcmp_ordered("==", t, zero))
                    acc = em.killed_fma(coef, t, acc, em.either(kills))
                return [acc]

            (acc,) = em.nest(inner, step, [zero])
            b.store(acc, em.address(tout, idx, em.width, j))
            return []

        em.loop(em.width, column)
        return []

    em.nest(shape, result)


def _einsum(em, op, args, params, shape, mask, module, n):
    letters, out, sizes = einsum_letters(params[0], [a.value.shape for a in args])
    return _contract(em, args, letters, out, sizes, shape, guard=em.guards.get(n), n=n)


def _matmul(em, op, args, params, shape, mask, module, n):
    letters, out, sizes = matmul_letters(*(a.value.shape for a in args))
    return _contract(em, args, letters, out, sizes, shape, guard=em.guards.get(n), n=n)


def _sum(em, op, args, params, shape, mask, module, n):
    (x,) = args
    axes, keepdims = params
    lets, axes, out = reduce_letters(x.value.shape, axes, keepdims)
    sizes = dict(zip(lets, x.value.shape, strict=True))
    node = _contract(
        em, [x], [lets], out, sizes, tuple(x.value.shape[k] for k in range(len(lets)) if k not in axes)
    )
    return _reshaped(em, node, shape)


def _reduction(kind):
    """logsumexp, max or min over axes: value, and the tangent as a weighted sum of rows (the
    softmax for logsumexp; ties split evenly for max and min, as torch's amax/amin). With
    ``partials_out`` ({0: a view of the argument's shape}) the weights are stored there too."""

    def rule_(em, op, args, params, shape, mask, module, n, partials_out=None):
        (x,) = args
        axes, keepdims = params
        lets, axes, _ = reduce_letters(x.value.shape, axes, keepdims)
        kept = tuple(k for k in range(len(lets)) if k not in axes)
        kshape = tuple(x.value.shape[k] for k in kept)
        inner = [x.value.shape[k] for k in axes]
        b = em.b
        out = _dense(em.buffer(math.prod(kshape)), kshape)
        tout = _dense(em.buffer(math.prod(kshape) * em.width), kshape) if x.tangent is not None else None
        f0, f1 = ir.Constant(DOUBLE, 0.0), ir.Constant(DOUBLE, 1.0)
        lw = _Lowerer(module, b, DOUBLE, {})

        def full(idx, jdx):
            at, it_o, it_i = [], iter(idx), iter(jdx)
            for k in range(len(lets)):
                at.append(next(it_i) if k in axes else next(it_o))
            return at

        def body(idx, c):
            pick = ">" if kind != "min" else "<"

            def top(jdx, carry):
                v = em.load(x.value, full(idx, jdx))
                keep = b.fcmp_ordered(pick, carry[0], v)
                nan = b.fcmp_unordered("uno", carry[0], carry[0])
                return [b.select(b.or_(keep, nan), carry[0], v)]

            start = ir.Constant(DOUBLE, -math.inf if kind != "min" else math.inf)
            (m,) = em.nest(inner, top, [start])
            if kind == "logsumexp":
                finite = b.fcmp_ordered("<", lw.call("llvm.fabs", True, [m]), ir.Constant(DOUBLE, math.inf))
                shift = b.select(finite, m, f0)

                def weight(jdx):
                    return lw.call("llvm.exp", True, [b.fsub(em.load(x.value, full(idx, jdx)), shift)])

                (total,) = em.nest(inner, lambda jdx, c: [b.fadd(c[0], weight(jdx))], [f0])
                em.store(b.fadd(lw.call("llvm.log", True, [total]), shift), out, idx)
                scale = b.fdiv(f1, total)
            else:
                em.store(m, out, idx)

                def tie(jdx):
                    v = em.load(x.value, full(idx, jdx))
                    return b.uitofp(b.fcmp_ordered("==", v, m), DOUBLE)

                (ties,) = em.nest(inner, lambda jdx, c: [b.fadd(c[0], tie(jdx))], [f0])
                scale = b.fdiv(f1, ties)
                weight = tie
            if partials_out:

                def put(jdx, c):
                    em.store(b.fmul(weight(jdx), scale), partials_out[0], full(idx, jdx))
                    return []

                em.nest(inner, put)
            if tout is None:
                return []

            def chunk(c0, vtype):
                def step(jdx, carry):
                    w = b.fmul(weight(jdx), scale)
                    t = em.load_row(x.tangent, full(idx, jdx), c0, vtype)
                    return [em.fma(em.splat(w, vtype), t, carry[0])]

                (acc,) = em.nest(inner, step, [em.zeros(vtype)])
                em.store_row(acc, tout, idx, c0)

            em.chunks(chunk)
            return []

        em.nest(kshape, body)
        return _reshaped(em, Node(out, tout), shape)

    return rule_
