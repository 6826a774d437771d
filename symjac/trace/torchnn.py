"""torch.nn.functional forms that torch.nn modules call, built from op-table primitives.

A module's ``forward`` calls these (``nn.Linear`` calls ``F.linear``, ``nn.LayerNorm`` calls
``F.layer_norm``); on a traced tensor torch hands each call to ``__torch_function__``, which
finds it here by name. Weights are constants (a module's parameters) or traced tensors
(``torch.func.functional_call`` with traced parameters), and both work alike.
"""

from __future__ import annotations

import math

import numpy as np

from .. import errors
from . import api_ops as A
from . import linalg, reductions
from .api_ops import EW


def linear(input, weight, bias=None):
    """``F.linear``: ``input @ weight.T + bias``."""
    x, w = A.lift_all(input, weight)
    out = A.matmul(x, A.swapaxes(w, -1, -2) if w.ndim == 2 else w)
    return out if bias is None else EW["add"](out, bias)


def bilinear(input1, input2, weight, bias=None):
    """``F.bilinear``: ``y_k = x1 @ weight[k] @ x2 + bias_k``."""
    x1, x2, w = A.lift_all(input1, input2, weight)
    out = linalg.einsum("...i,kij,...j->...k", x1, w, x2)
    return out if bias is None else EW["add"](out, bias)


def _last_dims(normalized_shape, x, name):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if tuple(x.shape[x.ndim - k :]) != shape:
        raise ValueError(f"{name}: normalized_shape {shape} does not match the last dims of input {x.shape}")
    return tuple(range(x.ndim - k, x.ndim))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """``F.layer_norm``: normalize over the last dims with the biased variance, then scale and shift."""
    x = A._as_var(input)
    dims = _last_dims(normalized_shape, x, "layer_norm")
    centered = x - A.mean(x, dims, True)
    var = A.mean(centered * centered, dims, True)
    out = centered / EW["sqrt"](var + float(eps))
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """``F.rms_norm``: ``x / sqrt(mean(x**2) + eps) * weight``; eps defaults to the dtype's epsilon."""
    x = A._as_var(input)
    dims = _last_dims(normalized_shape, x, "rms_norm")
    if eps is None:
        eps = float(np.finfo(x._dtype if x._dtype is not None else np.float64).eps)
    out = x / EW["sqrt"](A.mean(x * x, dims, True) + float(eps))
    return out if weight is None else out * weight


def _p_norm(x, p, dim, keepdim):
    if p == 2:
        return EW["sqrt"](A.reduce_sum(x * x, dim, keepdim))
    if p == 1:
        return A.reduce_sum(EW["abs"](x), dim, keepdim)
    if p == math.inf:
        return reductions.amax(EW["abs"](x), dim, keepdim)
    return A.reduce_sum(EW["abs"](x) ** float(p), dim, keepdim) ** (1.0 / float(p))


def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """``F.normalize``: ``x / max(||x||_p, eps)`` along ``dim``."""
    A._reject_out({"out": out}, "normalize")
    x = A._as_var(input)
    return x / A.clamp(_p_norm(x, p, dim, True), float(eps), None)


def _reduce(loss, reduction, name):
    if reduction == "mean":
        return A.mean(loss)
    if reduction == "sum":
        return A.reduce_sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _legacy(size_average, reduce, reduction):
    # torch's deprecated size_average / reduce arguments, mapped as torch maps them.
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return "none" if not reduce else ("mean" if size_average else "sum")


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    d = EW["sub"](input, target)
    loss = d * d if weight is None else weight * d * d
    return _reduce(loss, _legacy(size_average, reduce, reduction), "mse_loss")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    loss = EW["abs"](EW["sub"](input, target))
    loss = loss if weight is None else weight * loss
    return _reduce(loss, _legacy(size_average, reduce, reduction), "l1_loss")


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    d = EW["abs"](EW["sub"](input, target))
    loss = A.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))
    loss = loss if weight is None else weight * loss
    return _reduce(loss, reduction, "huber_loss")


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    d = EW["abs"](EW["sub"](input, target))
    if beta == 0:
        loss = d
    else:
        loss = A.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    return _reduce(loss, _legacy(size_average, reduce, reduction), "smooth_l1_loss")


def dropout(input, p=0.5, training=True, inplace=False):
    """``F.dropout`` in eval mode (or p=0) is the identity; in training mode it draws at random."""
    if not training or p == 0:
        return input
    raise errors.UntraceableError(
        "symjac cannot trace torch.nn.functional.dropout in training mode: a random draw has no "
        "exact derivative. Call net.eval() before differentiating (dropout is then the identity), "
        "or pass the noise in as an input."
    )


def _torch_dropout(input, p, train):
    return dropout(input, p, train)


def mish(input, inplace=False):
    return input * EW["tanh"](EW["softplus"](input))


def softsign(input):
    return input / (EW["abs"](input) + 1.0)


def tanhshrink(input):
    return input - EW["tanh"](input)


def celu(input, alpha=1.0, inplace=False):
    x = A._as_var(input)
    return EW["maximum"](x, 0.0) + EW["minimum"](0.0, float(alpha) * (EW["exp"](x / float(alpha)) - 1.0))


def threshold(input, threshold, value, inplace=False):
    x = A._as_var(input)
    return A.where(x > threshold, x, float(value))


def softshrink(input, lambd=0.5):
    x = A._as_var(input)
    return A.where(x > lambd, x - lambd, A.where(x < -lambd, x + lambd, 0.0))


def hardshrink(input, lambd=0.5):
    x = A._as_var(input)
    return A.where(EW["abs"](x) > lambd, x, 0.0)


def glu(input, dim=-1):
    x = A._as_var(input)
    dim = A._normalize_axis(dim, x.ndim, "glu")
    n = x.shape[dim]
    if n % 2:
        raise ValueError(f"glu: dim {dim} has odd size {n}")
    front = (slice(None),) * dim
    return x[front + (slice(0, n // 2),)] * EW["sigmoid"](x[front + (slice(n // 2, n),)])


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    from .activations import _torch_softmax

    return _torch_softmax(-A._as_var(input), dim)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    a, b = A.lift_all(x1, x2)
    num = A.reduce_sum(a * b, dim)
    na = A.clamp(_p_norm(a, 2, dim, False), float(eps), None)
    nb = A.clamp(_p_norm(b, 2, dim, False), float(eps), None)
    return num / (na * nb)


TORCH_FUNCTIONAL = {
    "linear": linear,
    "bilinear": bilinear,
    "layer_norm": layer_norm,
    "rms_norm": rms_norm,
    "normalize": normalize,
    "mse_loss": mse_loss,
    "l1_loss": l1_loss,
    "huber_loss": huber_loss,
    "smooth_l1_loss": smooth_l1_loss,
    "dropout": dropout,
    "alpha_dropout": dropout,
    "feature_alpha_dropout": dropout,
    "dropout1d": dropout,
    "dropout2d": dropout,
    "dropout3d": dropout,
    "mish": mish,
    "softsign": softsign,
    "tanhshrink": tanhshrink,
    "celu": celu,
    "threshold": threshold,
    "_threshold": threshold,  # F.threshold's __name__
    "softshrink": softshrink,
    "hardshrink": hardshrink,
    "glu": glu,
    "softmin": softmin,
    "cosine_similarity": cosine_similarity,
}
