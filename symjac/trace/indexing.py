"""Indexing by constant integer arrays: gather, take, index_select, narrow, select.

Each op is computed on the flat index array of its input (``np.take(np.arange(n), idx)``) and
recorded as one gather, so NumPy and torch define the semantics and the derivative is the
scatter SymPy reads off the gathered elements. Indices must be known while tracing.
"""

from __future__ import annotations

import numpy as np

from .. import errors
from .api_ops import _as_var, _is_torch_tensor, _normalize_axis, _torch_to_numpy, getitem
from .shapes import _flat_index, gather
from .tensor import Var


def _index_array(index, name) -> np.ndarray:
    if isinstance(index, Var):
        raise errors.untraceable("index", index)
    arr = _torch_to_numpy(index) if _is_torch_tensor(index) else np.asarray(index)
    if arr.dtype.kind not in "iu":
        raise IndexError(f"{name}: indices must be integers, got an array of dtype {arr.dtype}")
    return arr.astype(np.int64)


def take(a, indices, axis=None, out=None, mode="raise"):
    """numpy.take (``axis=None`` reads the flattened array)."""
    if out is not None:
        raise errors.InPlaceError("numpy.take(..., out=...) writes in place; assign the result instead")
    x = _as_var(a)
    flat = _flat_index(x)
    if axis is None:
        flat = flat.reshape(-1)
    else:
        axis = _normalize_axis(axis, x.ndim, "take")
    return gather(x, np.take(flat, _index_array(indices, "take"), axis=axis, mode=mode))


def torch_take(input, index):
    """torch.take: elements of the flattened input."""
    return take(input, index)


def index_select(input, dim, index):
    x = _as_var(input)
    idx = _index_array(index, "index_select")
    if idx.ndim > 1:
        raise IndexError("index_select: index must be a 0-d or 1-d tensor")
    dim = _normalize_axis(dim, x.ndim, "index_select")
    return gather(x, np.take(_flat_index(x), idx.reshape(-1), axis=dim))


def torch_gather(input, dim, index, *, sparse_grad=False, out=None):
    """torch.gather: ``out[i][j] = input[index[i][j]][j]`` for dim 0, and so on."""
    x = _as_var(input)
    idx = _index_array(index, "gather")
    dim = _normalize_axis(dim, x.ndim, "gather")
    if idx.ndim != x.ndim or any(idx.shape[d] > x.shape[d] for d in range(x.ndim) if d != dim):
        raise IndexError(
            f"gather: index of shape {idx.shape} does not fit input of shape {x.shape} at dim {dim}"
        )
    grid = list(np.indices(idx.shape, sparse=True))
    grid[dim] = idx
    return gather(x, _flat_index(x)[tuple(grid)])


def take_along_axis(arr, indices, axis=-1):
    """numpy.take_along_axis (``axis=None`` reads the flattened array)."""
    x = _as_var(arr)
    idx = _index_array(indices, "take_along_axis")
    flat = _flat_index(x)
    if axis is None:
        return gather(x, np.take_along_axis(flat.reshape(-1), idx.reshape(-1), 0))
    return gather(x, np.take_along_axis(flat, idx, _normalize_axis(axis, x.ndim, "take_along_axis")))


def take_along_dim(input, indices, dim=None, *, out=None):
    """torch.take_along_dim: broadcasts input and indices outside ``dim``."""
    x = _as_var(input)
    idx = _index_array(indices, "take_along_dim")
    flat = _flat_index(x)
    if dim is None:
        return gather(x, np.take_along_axis(flat.reshape(-1), idx.reshape(-1), 0))
    dim = _normalize_axis(dim, x.ndim, "take_along_dim")
    shape = np.broadcast_shapes(
        flat.shape[:dim] + (1,) + flat.shape[dim + 1 :], idx.shape[:dim] + (1,) + idx.shape[dim + 1 :]
    )
    flat = np.broadcast_to(flat, shape[:dim] + (flat.shape[dim],) + shape[dim + 1 :])
    idx = np.broadcast_to(idx, shape[:dim] + (idx.shape[dim],) + shape[dim + 1 :])
    return gather(x, np.take_along_axis(flat, idx, dim))


def narrow(input, dim, start, length):
    x = _as_var(input)
    dim = _normalize_axis(dim, x.ndim, "narrow")
    start = int(_index_array(start, "narrow")) if not isinstance(start, (int, np.integer)) else int(start)
    n = x.shape[dim]
    start = start + n if start < 0 else start
    if not 0 <= start <= n or length < 0 or start + length > n:
        raise IndexError(f"narrow: start {start} and length {length} exceed dimension {dim} of size {n}")
    return getitem(x, (slice(None),) * dim + (slice(start, start + int(length)),))


def select(input, dim, index):
    x = _as_var(input)
    dim = _normalize_axis(dim, x.ndim, "select")
    index = int(_index_array(index, "select"))
    if not -x.shape[dim] <= index < x.shape[dim]:
        raise IndexError(f"select: index {index} is out of range for dimension {dim} of size {x.shape[dim]}")
    return getitem(x, (slice(None),) * dim + (index,))
