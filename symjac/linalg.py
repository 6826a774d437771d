"""Linear algebra: products (einsum, tensordot, outer, cross, kron) and small exact
decompositions (det, inv, solve, cholesky as closed-form SymPy expressions)."""

from __future__ import annotations

import numpy as np

from .api_ops import (
    EW,
    _as_var,
    _normalize_axis,
    _promote,
    lift_all,
    matmul,
    reduce_sum,
    reshape,
    stack,
)
from .ops import _LINALG_LIMIT


def einsum(subscripts, *operands, **kwargs):
    if not isinstance(subscripts, str):
        raise NotImplementedError("einsum: only the subscripts-string form is supported")
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    vs = lift_all(*operands)
    trace = vs[0]._trace
    shape = np.einsum(subscripts, *[np.zeros(v.shape, dtype=np.int8) for v in vs]).shape
    return trace.emit(
        "einsum", tuple(v._node for v in vs), (subscripts.replace(" ", ""),), shape, _promote(vs)
    )


def tensordot(a, b, axes=2):
    a, b = lift_all(a, b)
    if isinstance(axes, (int, np.integer)):
        axes_a, axes_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        axes_a, axes_b = (
            ([axes[0]] if isinstance(axes[0], int) else list(axes[0])),
            ([axes[1]] if isinstance(axes[1], int) else list(axes[1])),
        )
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    sa = [next(letters) for _ in range(a.ndim)]
    sb = [next(letters) for _ in range(b.ndim)]
    for i, j in zip(axes_a, axes_b, strict=True):
        sb[j % b.ndim] = sa[i % a.ndim]
    contracted = {sa[i % a.ndim] for i in axes_a}
    out = [c for c in sa if c not in contracted] + [c for c in sb if c not in contracted]
    return einsum(f"{''.join(sa)},{''.join(sb)}->{''.join(out)}", a, b)


def _torch_tensordot(a, b, dims=2, out=None):
    return tensordot(a, b, dims)


def vdot(a, b):
    a, b = lift_all(a, b)
    return reduce_sum(reshape(a, -1) * reshape(b, -1))


def inner(a, b):
    a, b = lift_all(a, b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    return tensordot(a, b, ([-1], [-1]))


def outer(a, b, out=None):
    a, b = (reshape(v, -1) for v in lift_all(a, b))
    return reshape(a, (-1, 1)) * reshape(b, (1, -1))


def cross(a, b, axis=-1, **kwargs):
    a, b = lift_all(a, b)
    axis = _normalize_axis(
        kwargs.get("dim", axis) if kwargs.get("dim") is not None else axis, a.ndim, "cross"
    )
    if a.shape[axis] != 3 or b.shape[axis] != 3:
        raise ValueError("cross: only 3-vectors are supported")

    def part(v, k):
        return v[(slice(None),) * axis + (k,)]

    comps = [
        part(a, 1) * part(b, 2) - part(a, 2) * part(b, 1),
        part(a, 2) * part(b, 0) - part(a, 0) * part(b, 2),
        part(a, 0) * part(b, 1) - part(a, 1) * part(b, 0),
    ]
    return stack(comps, axis)


def _torch_cross(input, other, dim=None, *, out=None):
    return cross(input, other, -1 if dim is None else dim)


def kron(a, b):
    a, b = lift_all(a, b)
    if a.ndim == 1 and b.ndim == 1:
        return reshape(outer(a, b), -1)
    if a.ndim == 2 and b.ndim == 2:
        (m, n), (p, q) = a.shape, b.shape
        prod = reshape(a, (m, 1, n, 1)) * reshape(b, (1, p, 1, q))
        return reshape(prod, (m * p, n * q))
    raise NotImplementedError("kron: only 1-d or 2-d operands are supported")


def _square(x, name):
    x = _as_var(x)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name}: expected square matrices (..., n, n), got shape {x.shape}")
    if x.shape[-1] > _LINALG_LIMIT:
        raise NotImplementedError(
            f"{name}: a {x.shape[-1]}x{x.shape[-1]} matrix is too large for an exact symbolic {name} "
            f"(limit {_LINALG_LIMIT}x{_LINALG_LIMIT}: the formula grows factorially); reformulate "
            "with a fixed-size system or solve numerically outside the traced function"
        )
    return x


def det(a):
    x = _square(a, "det")
    return x._trace.emit("linalg", (x._node,), ("det",), x.shape[:-2], x._dtype)


def inv(a):
    x = _square(a, "inv")
    return x._trace.emit("linalg", (x._node,), ("inv",), x.shape, x._dtype)


def solve(a, b):
    A, B = lift_all(a, b)
    return matmul(inv(A), B)


def cholesky(a, upper=False):
    x = _square(a, "cholesky")
    L = x._trace.emit("linalg", (x._node,), ("cholesky",), x.shape, x._dtype)
    return EW["pos"](L) if not upper else L.mT


def _np_cholesky(a, upper=False):
    return cholesky(a, upper)
