"""Linear algebra: products (einsum, tensordot, outer, cross, kron) and small exact
decompositions (det, inv, solve, cholesky as closed-form SymPy expressions)."""

from __future__ import annotations

import numpy as np

from .api_ops import EW, _as_var, _normalize_axis, _promote, lift_all, matmul, reduce_sum, reshape, stack
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
    """numpy.kron / torch.kron for operands of any number of dims."""
    a, b = lift_all(a, b)
    ndim = max(a.ndim, b.ndim)
    sa = (1,) * (ndim - a.ndim) + a.shape
    sb = (1,) * (ndim - b.ndim) + b.shape
    # interleave: a's dims at even places, b's at odd ones, then merge each pair
    prod = reshape(a, tuple(d for n in sa for d in (n, 1))) * reshape(b, tuple(d for n in sb for d in (1, n)))
    return reshape(prod, tuple(m * n for m, n in zip(sa, sb, strict=True)))


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


# --- issue 13: batched products with scaling, distances, matrix norms, matrix exponential ----


def _matrices(x, ndim, name, what):
    if x.ndim != ndim:
        raise ValueError(f"{name}: {what} must be a {ndim}-d tensor, got shape {x.shape}")


def _scaled_sum(input, product, beta, alpha):
    # torch ignores input entirely when beta == 0 (even its NaNs)
    out = product if alpha == 1 else product * float(alpha)
    if beta == 0:
        return out
    return out + (input if beta == 1 else input * float(beta))


def bmm(input, mat2, *, out=None):
    a, b = lift_all(input, mat2)
    _matrices(a, 3, "bmm", "input")
    _matrices(b, 3, "bmm", "mat2")
    return matmul(a, b)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    c, a, b = lift_all(input, batch1, batch2)
    return _scaled_sum(c, bmm(a, b), beta, alpha)


def addbmm(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    c, a, b = lift_all(input, batch1, batch2)
    return _scaled_sum(c, reduce_sum(bmm(a, b), 0), beta, alpha)


def addmm(input, mat1, mat2, *, beta=1, alpha=1, out=None):
    c, a, b = lift_all(input, mat1, mat2)
    _matrices(a, 2, "addmm", "mat1")
    _matrices(b, 2, "addmm", "mat2")
    return _scaled_sum(c, matmul(a, b), beta, alpha)


def addmv(input, mat, vec, *, beta=1, alpha=1, out=None):
    c, a, v = lift_all(input, mat, vec)
    _matrices(a, 2, "addmv", "mat")
    _matrices(v, 1, "addmv", "vec")
    return _scaled_sum(c, matmul(a, v), beta, alpha)


def addr(input, vec1, vec2, *, beta=1, alpha=1, out=None):
    c, a, b = lift_all(input, vec1, vec2)
    return _scaled_sum(c, outer(a, b), beta, alpha)


def cdist(x1, x2, p=2.0, compute_mode=None):
    """torch.cdist: p-norm distances between the rows of x1 (..., P, M) and x2 (..., R, M)."""
    from .reductions import vector_norm

    a, b = lift_all(x1, x2)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cdist: expected (..., P, M) and (..., R, M), got {a.shape} and {b.shape}")
    if p < 0:
        raise ValueError(f"cdist: p must be non-negative, got {p}")
    gaps = reshape(a, a.shape[:-1] + (1, a.shape[-1])) - reshape(b, b.shape[:-2] + (1,) + b.shape[-2:])
    return vector_norm(gaps, float(p), -1)


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None, out=None):
    """torch.linalg.matrix_norm: 'fro', 1, -1, inf and -inf (those without singular values)."""
    from .reductions import _matrix_norm

    x = _as_var(A)
    if x.ndim < 2:
        raise ValueError(f"linalg.matrix_norm: expected a tensor with 2 or more dims, got shape {x.shape}")
    axes = tuple(_normalize_axis(d, x.ndim, "linalg.matrix_norm") for d in dim)
    return _matrix_norm(x, ord, axes, keepdim)


def matrix_exp(A):
    """torch.linalg.matrix_exp / scipy.linalg.expm (see :mod:`symjac.trace.matrixexp` for the method)."""
    from . import matrixexp  # noqa: F401  (registers the primitive)

    x = _as_var(A)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"matrix_exp: expected square matrices (..., n, n), got shape {x.shape}")
    return x._trace.emit("matrix_exp", (x._node,), (), x.shape, x.dtype)
