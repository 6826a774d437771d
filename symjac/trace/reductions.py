"""Reductions beyond sum/prod/mean: extrema, norms, logsumexp, moments, scans, softmax."""

from __future__ import annotations

import math

from .. import errors
from .api_ops import EW, _as_count, _as_var, _axes, _normalize_axis, reduce_sum, reduction, reshape, squeeze
from .shapes import diagonal

amax = reduction("max", has_identity=False)
amin = reduction("min", has_identity=False)


class _ValuesIndices:
    """torch.max(x, dim) returns (values, indices); the indices depend on data."""

    def __init__(self, values, name):
        self.values = values
        self._name = name

    @property
    def indices(self):
        raise errors.UntraceableError(
            f"the indices of torch.{self._name}(x, dim) depend on the data, which is not known while "
            f"tracing; use x.a{self._name}(dim) (or .values) for the values"
        )

    def __iter__(self):
        yield self.values
        yield self.indices

    def __getitem__(self, k):
        return (self.values, None)[k] if k == 0 else self.indices


def _torch_extremum(name, reduce, binary):
    def fn(input, dim=None, keepdim=False, *, out=None, other=None):
        if dim is not None and not isinstance(dim, int):  # torch.max(a, b): elementwise
            return EW[binary](input, dim)
        if other is not None:
            return EW[binary](input, other)
        if dim is None:
            return reduce(input)
        return _ValuesIndices(reduce(input, dim, keepdim), name)

    return fn


torch_max = _torch_extremum("max", amax, "maximum")
torch_min = _torch_extremum("min", amin, "minimum")


def _count(x, axes) -> int:
    return math.prod(x.shape[a] for a in axes) if x.ndim else 1


def vector_norm(x, ord=2, axis=None, keepdims=False):
    x = _as_var(x)
    if ord in (2, 2.0, None):
        return EW["norm_sqrt"](reduce_sum(x * x, axis, keepdims))
    if ord in (1, 1.0):
        return reduce_sum(EW["abs"](x), axis, keepdims)
    if ord == math.inf:
        return amax(EW["abs"](x), axis, keepdims)
    if ord == -math.inf:
        return amin(EW["abs"](x), axis, keepdims)
    if ord == 0:
        raise NotImplementedError("norm: ord=0 counts nonzeros, which is not differentiable; use a p-norm")
    return EW["norm_root"](reduce_sum(EW["abs"](x) ** float(ord), axis, keepdims), 1.0 / float(ord))


def _matrix_norm(x, ord, axes, keepdims):
    a0, a1 = axes
    if ord in (None, "fro"):
        return EW["norm_sqrt"](reduce_sum(x * x, axes, keepdims))
    if ord in (1, -1, math.inf, -math.inf):
        summed_axis, kept_axis = (a0, a1) if ord in (1, -1) else (a1, a0)
        sums = reduce_sum(EW["abs"](x), summed_axis, True)
        pick = amax if ord in (1, math.inf) else amin
        out = pick(sums, kept_axis, True)
        return out if keepdims else squeeze(out, axes)
    raise NotImplementedError(f"norm: the matrix norm ord={ord!r} needs singular values; use 'fro', 1 or inf")


def norm(x, ord=None, axis=None, keepdims=False):
    """numpy.linalg.norm: vector p-norms, and Frobenius / 1 / inf norms of matrices."""
    x = _as_var(x)
    if axis is None:
        if ord is None or x.ndim == 1:
            return vector_norm(x, 2 if ord is None else ord, tuple(range(x.ndim)), keepdims)
        axis = (0, 1)
    axes = _axes(axis, x.ndim, "norm")
    if len(axes) == 2:
        return _matrix_norm(x, ord, axes, keepdims)
    return vector_norm(x, 2 if ord is None else ord, axes, keepdims)


def _torch_norm(input, p="fro", dim=None, keepdim=False, out=None, dtype=None):
    """torch.norm (and Tensor.norm): torch.functional.norm's dispatch onto vector/matrix norms."""
    if out is not None:
        raise errors.InPlaceError("torch.norm(..., out=...) writes in place; assign the result instead")
    x = _as_var(input)
    if isinstance(dim, int):
        dim = (dim,)
    if isinstance(p, str):
        if p == "fro" and (dim is None or len(dim) <= 2):
            return vector_norm(x, 2, dim, keepdim)
        if p == "nuc":
            raise NotImplementedError("norm: the nuclear norm needs singular values; use 'fro'")
        raise ValueError(f"norm: p={p!r} is not a valid norm; use 'fro', 'nuc' or a number")
    return vector_norm(x, 2 if p is None else p, dim, keepdim)


def _linalg_norm(A, ord=None, dim=None, keepdim=False, *, out=None, dtype=None):
    return norm(A, ord, dim, keepdim)


def _linalg_vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None, out=None):
    return vector_norm(x, ord, dim, keepdim)


_logsumexp = reduction("logsumexp", has_identity=False)


def logsumexp(x, axis=None, keepdims=False):
    # One LogSumExp per reduced slice: exact formulas carry no stabilising shift (the kernel
    # applies it), and the derivative is the softmax exp(x - logsumexp).
    return _logsumexp(_as_var(x), axis, keepdims)


def var(x, axis=None, ddof=0, keepdims=False):
    x = _as_var(x)
    axes = _axes(axis, x.ndim, "var")
    mean = reduce_sum(x, axes, True) / float(_count(x, axes))
    centered = x - mean
    denom = _count(x, axes) - ddof
    return reduce_sum(centered * centered, axes, keepdims) / float(denom if denom > 0 else math.nan)


def std(x, axis=None, ddof=0, keepdims=False):
    return EW["norm_sqrt"](var(x, axis, ddof, keepdims))  # torch: subgradient 0 at variance 0


def _torch_moment(fn):
    def moment(input, dim=None, unbiased=None, keepdim=False, *, correction=None, out=None):
        if isinstance(dim, bool):  # legacy torch.var(x, unbiased)
            dim, unbiased = None, dim
        ddof = correction if correction is not None else (0 if unbiased is False else 1)
        return fn(input, dim, ddof, keepdim)

    return moment


def _np_moment(fn):
    def moment(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kwargs):
        return fn(a, axis, ddof, keepdims)

    return moment


def _scan(prim):
    def scan(x, axis=None):
        x = _as_var(x)
        if axis is None:
            x, axis = reshape(x, -1), 0
        axis = _normalize_axis(axis, x.ndim, prim)
        x, dtype = _as_count(x)
        return x._trace.emit(prim, (x._node,), (axis,), x.shape, dtype)

    return scan


cumsum = _scan("cumsum")
cumprod = _scan("cumprod")


def softmax(x, axis=-1):
    x = _as_var(x)
    return EW["exp"](x - logsumexp(x, axis, True))


def log_softmax(x, axis=-1):
    x = _as_var(x)
    return x - logsumexp(x, axis, True)


def trace(x, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    return reduce_sum(diagonal(x, offset, axis1, axis2), -1)
