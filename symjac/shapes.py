"""Shape operations beyond reshape/transpose/concatenate: each is a gather from the flat input.

An op that only moves, repeats or zeroes elements (flip, roll, tile, repeat, tril, diag, ...)
is computed on an index array (``np.flip(np.arange(n))``) and applied to the traced tensor as one
indexing equation: NumPy defines the semantics, symjac only records them. Index -1 means 0.
"""

from __future__ import annotations

import math

import numpy as np

from .api_ops import _as_var, _normalize_axis, concatenate, getitem, lift, lift_all, reshape


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
    from .reductions import diagonal

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
