"""Shape operations beyond reshape/transpose/concatenate: each is a gather from the flat input.

An op that only moves, repeats or zeroes elements (flip, roll, tile, repeat, tril, diag, ...)
is computed on an index array (``np.flip(np.arange(n))``) and applied to the traced tensor as one
indexing equation: NumPy defines the semantics, symjac only records them. Index -1 means 0.
"""

from __future__ import annotations

import math

import numpy as np

from .api_ops import _as_var, _normalize_axis, broadcast_to, concatenate, getitem, lift, lift_all, reshape


def _flat_index(x) -> np.ndarray:
    return np.arange(math.prod(x.shape)).reshape(x.shape)


def gather(x, index: np.ndarray):
    """Elements of flat x at ``index`` (an int array of the result's shape); -1 gives 0."""
    x = _as_var(x)
    flat = reshape(x, -1)
    index = np.asarray(index, dtype=np.int64)
    if (index < 0).any():
        flat = concatenate([flat, lift(x._trace, np.zeros(1, dtype=x._dtype))], 0)
        index = np.where(index < 0, flat.shape[0] - 1, index)
    return getitem(flat, index)


def flip(x, axis=None):
    x = _as_var(x)
    return gather(x, np.flip(_flat_index(x), axis))


def _torch_flip(input, dims):
    return flip(input, tuple(dims) if isinstance(dims, (list, tuple)) else dims)


def roll(x, shift, axis=None):
    x = _as_var(x)
    return gather(x, np.roll(_flat_index(x), shift, axis))


def _torch_roll(input, shifts, dims=None):
    return roll(input, shifts, dims)


def tile(x, reps):
    x = _as_var(x)
    return gather(x, np.tile(_flat_index(x), reps))


def _torch_repeat(self, *sizes):
    # torch's Tensor.repeat is NumPy's tile
    sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
    return tile(self, sizes)


def repeat(x, repeats, axis=None):
    x = _as_var(x)
    return gather(x, np.repeat(_flat_index(x), repeats, axis))


def _torch_repeat_interleave(input, repeats, dim=None, *, output_size=None):
    return repeat(input, repeats, dim)


def _masked(x, keep: np.ndarray):
    return gather(x, np.where(keep, _flat_index(x), -1))


def tril(x, k=0):
    x = _as_var(x)
    rows, cols = x.shape[-2], x.shape[-1]
    keep = np.broadcast_to(np.tril(np.ones((rows, cols), dtype=bool), k), x.shape)
    return _masked(x, keep)


def triu(x, k=0):
    x = _as_var(x)
    rows, cols = x.shape[-2], x.shape[-1]
    keep = np.broadcast_to(np.triu(np.ones((rows, cols), dtype=bool), k), x.shape)
    return _masked(x, keep)


def diag(x, k=0):
    x = _as_var(x)
    if x.ndim == 2:
        return diagonal(x, k)
    if x.ndim != 1:
        raise ValueError("diag: input must be 1-d or 2-d")
    n = x.shape[0] + abs(k)
    index = np.full((n, n), -1, dtype=np.int64)
    rows = np.arange(x.shape[0]) + max(-k, 0)
    index[rows, rows + k] = np.arange(x.shape[0])
    return gather(x, index)


def diagflat(x, k=0):
    return diag(reshape(_as_var(x), -1), k)


def split(x, indices_or_sections, axis=0):
    """numpy.split / array_split: sections (an int) or split indices (a list)."""
    x = _as_var(x)
    axis = _normalize_axis(axis, x.ndim, "split")
    parts = (
        np.array_split(np.arange(x.shape[axis]), indices_or_sections)
        if isinstance(indices_or_sections, (int, np.integer))
        else np.split(np.arange(x.shape[axis]), indices_or_sections)
    )
    return [_take_range(x, axis, p) for p in parts]


def _take_range(x, axis, positions):
    start = int(positions[0]) if len(positions) else 0
    key = (slice(None),) * axis + (slice(start, start + len(positions)),)
    return getitem(x, key)


def torch_split(tensor, split_size_or_sections, dim=0):
    """torch.split: chunk sizes (an int for equal chunks, or a list of sizes)."""
    x = _as_var(tensor)
    dim = _normalize_axis(dim, x.ndim, "split")
    n = x.shape[dim]
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = int(split_size_or_sections)
        sizes = [min(size, n - s) for s in range(0, n, size)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n}")
    starts = np.cumsum([0] + sizes[:-1])
    return tuple(_take_range(x, dim, np.arange(s, s + k)) for s, k in zip(starts, sizes, strict=True))


def chunk(input, chunks, dim=0):
    x = _as_var(input)
    n = x.shape[_normalize_axis(dim, x.ndim, "chunk")]
    return torch_split(x, max(1, math.ceil(n / chunks)), dim)


def hstack(tup, **kwargs):
    vs = lift_all(*tup)
    return concatenate(vs, 0 if all(v.ndim == 1 for v in vs) else 1)


def vstack(tup, **kwargs):
    vs = lift_all(*tup)
    vs = [reshape(v, (1,) + v.shape) if v.ndim < 2 else v for v in vs]
    return concatenate(vs, 0)


def column_stack(tup):
    vs = lift_all(*tup)
    vs = [reshape(v, v.shape + (1,)) if v.ndim < 2 else v for v in vs]
    return concatenate(vs, 1)


def full_like(x, fill_value, dtype=None, **kwargs):
    x = _as_var(x)
    return lift(x._trace, np.full(x.shape, fill_value, dtype=dtype or x._dtype))


# --- issue 13: differences, padding, at-least-n-d, flips, diagonal embedding -----------------


def _int_tuple(value, name):
    if isinstance(value, (int, np.integer)):
        return (int(value),)
    try:
        return tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(
            f"{name}: expected an int or a sequence of ints, got {type(value).__name__}"
        ) from None


def diff(x, n=1, axis=-1, prepend=None, append=None):
    """numpy.diff / torch.diff: the n-th forward difference along ``axis``."""
    x = _as_var(x)
    if x.ndim == 0:
        raise ValueError("diff: requires an input with at least one dimension")
    axis = _normalize_axis(axis, x.ndim, "diff")
    if n < 0:
        raise ValueError(f"diff: order n must be non-negative, got {n}")
    parts = []
    for extra in (prepend, append):
        if extra is None:
            parts.append(None)
            continue
        e = lift(x._trace, extra)
        if e.ndim == 0:  # NumPy broadcasts a scalar to one slice along axis
            e = broadcast_to(e, x.shape[:axis] + (1,) + x.shape[axis + 1 :])
        parts.append(e)
    x = concatenate([p for p in (parts[0], x, parts[1]) if p is not None], axis)
    for _ in range(n):
        head = (slice(None),) * axis
        x = getitem(x, head + (slice(1, None),)) - getitem(x, head + (slice(None, -1),))
    return x


def _torch_diff(input, n=1, dim=-1, prepend=None, append=None):
    return diff(input, n, dim, prepend, append)


_NUMPY_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")


def pad(array, pad_width, mode="constant", constant_values=0, **kwargs):
    """numpy.pad for the modes that only move elements, and constant padding."""
    x = _as_var(array)
    if callable(mode) or mode not in _NUMPY_PAD_MODES:
        raise NotImplementedError(f"numpy.pad: mode {mode!r} is not supported; use one of {_NUMPY_PAD_MODES}")
    if kwargs:
        raise TypeError(f"numpy.pad: unsupported keyword arguments {sorted(kwargs)}")
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (x.ndim, 2))
    return _pad(x, [tuple(w) for w in widths], mode, constant_values)


def _pad(x, widths, mode, value):
    flat = _flat_index(x)
    if mode != "constant":
        return gather(x, np.pad(flat, widths, mode=mode))
    index = np.pad(flat, widths, mode="constant", constant_values=-1)
    out = gather(x, index)
    fill = np.broadcast_to(np.asarray(value, dtype=float), (x.ndim, 2)) if np.ndim(value) else None
    if fill is None and float(value) == 0.0:
        return out
    filled = np.zeros(index.shape)
    if fill is None:
        filled[index < 0] = float(value)
    else:  # NumPy's per-axis (before, after) values: later axes paint over earlier ones
        for d, (before, after) in enumerate(widths):
            head = (slice(None),) * d
            filled[head + (slice(0, before),)] = fill[d, 0]
            filled[head + (slice(filled.shape[d] - after, None),)] = fill[d, 1]
        filled[index >= 0] = 0.0
    return out + lift(x._trace, filled.astype(x._dtype if x._dtype is not None else np.float64))


_TORCH_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def torch_pad(input, pad, mode="constant", value=None):
    """torch.nn.functional.pad: ``pad`` lists (before, after) pairs from the last dim backwards."""
    x = _as_var(input)
    if mode not in _TORCH_PAD_MODES:
        raise NotImplementedError(
            f"F.pad: mode {mode!r} is not supported; use one of {sorted(_TORCH_PAD_MODES)}"
        )
    pad = _int_tuple(pad, "F.pad")
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"F.pad: padding length {len(pad)} must be even and at most 2 * {x.ndim}")
    widths = [(0, 0)] * x.ndim
    for k in range(len(pad) // 2):
        widths[x.ndim - 1 - k] = (pad[2 * k], pad[2 * k + 1])
    if any(w < 0 for pair in widths for w in pair):  # negative padding crops
        key = tuple(slice(max(-b, 0), n - max(-a, 0)) for (b, a), n in zip(widths, x.shape, strict=True))
        x = getitem(x, key)
        widths = [(max(b, 0), max(a, 0)) for b, a in widths]
    return _pad(x, widths, _TORCH_PAD_MODES[mode], 0.0 if value is None else value)


def _atleast_shape(shape, ndim):
    # NumPy's rules: atleast_2d puts a vector in a row; atleast_3d puts it in (1, N, 1).
    if len(shape) >= ndim:
        return shape
    if ndim == 3 and len(shape) >= 1:
        return ((1,) + shape + (1,)) if len(shape) == 1 else shape + (1,)
    return (1,) * (ndim - len(shape)) + shape


def _atleast(ndim):
    def atleast(*arys):
        if len(arys) == 1 and isinstance(arys[0], (list, tuple)):
            arys = tuple(arys[0])
        outs = [reshape(v, _atleast_shape(v.shape, ndim)) for v in lift_all(*arys)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    atleast.__name__ = f"atleast_{ndim}d"
    return atleast


atleast_1d, atleast_2d, atleast_3d = _atleast(1), _atleast(2), _atleast(3)


def fliplr(x):
    x = _as_var(x)
    if x.ndim < 2:
        raise ValueError("fliplr: input must be at least 2-d")
    return flip(x, 1)


def flipud(x):
    x = _as_var(x)
    if x.ndim < 1:
        raise ValueError("flipud: input must be at least 1-d")
    return flip(x, 0)


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """torch.diag_embed: the last dim of input becomes a diagonal of two new dims."""
    x = _as_var(input)
    n = x.shape[-1] + abs(offset) if x.ndim else 1
    ndim = x.ndim + 1
    d1, d2 = _normalize_axis(dim1, ndim, "diag_embed"), _normalize_axis(dim2, ndim, "diag_embed")
    if d1 == d2:
        raise ValueError("diag_embed: dim1 and dim2 cannot be the same")
    flat = _flat_index(x)
    batch = flat.shape[:-1]
    index = np.full(batch + (n, n), -1, dtype=np.int64)
    k = np.arange(x.shape[-1])
    rows, cols = k + max(-offset, 0), k + max(offset, 0)
    index[..., rows, cols] = flat
    # the (n, n) pair sits last; move it to (d1, d2) as torch places it
    order = [None] * ndim
    order[d1], order[d2] = ndim - 2, ndim - 1
    rest = iter(range(ndim - 2))
    order = [next(rest) if o is None else o for o in order]
    return gather(x, np.transpose(index, order))


def expand_dims(a, axis):
    """numpy.expand_dims with an int or a tuple of axes."""
    x = _as_var(a)
    axes = _int_tuple(axis, "expand_dims")
    ndim = x.ndim + len(axes)
    positions = sorted(_normalize_axis(d, ndim, "expand_dims") for d in axes)
    if len(set(positions)) != len(positions):
        raise ValueError(f"expand_dims: repeated axis in {axis}")
    dims = iter(x.shape)
    return reshape(x, tuple(1 if d in positions else next(dims) for d in range(ndim)))


def diagonal(x, offset=0, axis1=0, axis2=1):
    x = _as_var(x)
    a1, a2 = _normalize_axis(axis1, x.ndim, "diagonal"), _normalize_axis(axis2, x.ndim, "diagonal")
    index = diagonal_index(x.shape, offset, a1, a2)
    return gather(x, index)


def diagonal_index(shape, offset, a1, a2):
    flat = np.arange(math.prod(shape)).reshape(shape)
    return np.diagonal(flat, offset, a1, a2)
