"""Compiled functions on dask arrays: batches beyond one machine, evaluated chunk by chunk.

``cf(x)`` with a dask array ``x`` of shape ``batch + in_shape`` returns dask arrays of shape
``batch + result_shape``: one task per chunk of the batch dimensions (the per-point dimensions
are kept whole), each a native batch call of the kernel. On a ``dask.distributed`` cluster the
task carries the compiled function's picklable spec, never code: each worker process builds
the function once (from its own disk cache, ``$SYMJAC_CACHE_DIR``, or from the spec) and keeps
it for every later chunk. A chunk computes exactly what the same points give in one local
batch call, bit for bit. ``docs/interop.md`` shows the pattern for a real cluster.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

from ..backend import diskcache, runtime
from .replay import nest

_FUNCTIONS: dict = {}  # cache name -> CompiledFunction, per process (each worker's own)
_LOCK = threading.Lock()


def _dask_array():
    try:
        import dask.array as da
    except ImportError:
        raise ImportError("symjac's dask support needs dask: pip install 'symjac[dask]'") from None
    return da


def is_dask(x) -> bool:
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(x, da.Array)


class _Remote:
    """A compiled function as a task argument: pickled as its spec, rebuilt once per process."""

    def __init__(self, cf):
        self.cf = cf
        self.name = cf._cache_name or diskcache.key(cf.spec.canonical())

    def __reduce__(self):
        return (_function, (self.name, self.cf.spec))

    def __dask_tokenize__(self):
        return self.name


def _function(name, spec):
    cf = _FUNCTIONS.get(name)
    if cf is None:
        from ..compiled import CompiledFunction

        with _LOCK:
            cf = _FUNCTIONS.get(name)
            if cf is None:
                cf = _FUNCTIONS[name] = CompiledFunction(spec)
                cf._threads = 1  # dask runs the chunks in parallel: no threads inside a task
    return _Remote(cf)


def _block(remote, n_args, *chunks):
    """One chunk: a native batch call; several results travel packed in one float64 array."""
    cf = remote.cf
    arrays = [np.ascontiguousarray(c) for c in chunks]
    raw = cf(*arrays[:n_args], v=tuple(arrays[n_args:])) if len(arrays) > n_args else cf(*arrays)
    results = _flat_raw(raw)
    if len(results) == 1:
        return np.asarray(results[0])
    batch = arrays[0].shape[: arrays[0].ndim - len(cf._in_shapes[0])]
    return np.concatenate([np.asarray(r, dtype=np.float64).reshape(batch + (-1,)) for r in results], axis=-1)


def _flat_raw(x) -> list:
    if isinstance(x, (tuple, list)):
        return [t for el in x for t in _flat_raw(el)]
    return [x]


def _batch_chunks(cf, batch, first_chunks) -> tuple:
    """Chunks of the batch dimensions: the first split near the first dask argument's chunks,
    the others whole, and every chunk but the last holding whole SIMD vectors of points.

    A batch call sends its last ``n % lanes`` points through the scalar kernel (whose libm
    results can differ in the last bit from the vector math): with whole vectors per chunk,
    exactly the points that do so in one local batch call do so here, so results match it bit
    for bit however the batch is chunked.
    """
    if not batch:
        return ()
    lanes = runtime.simd_lanes(cf.kernel.layout)
    inner = math.prod(batch[1:])
    step = lanes // math.gcd(lanes, inner) if inner else 1
    size = max(step, round(max(first_chunks) / step) * step)
    n0 = batch[0]
    first = (size,) * (n0 // size) + ((n0 % size,) if n0 % size else ())
    return (first or (0,),) + tuple((n,) for n in batch[1:])


def evaluate(cf, inputs, v=None):
    """``cf(*inputs, v=v)`` where some arguments are dask arrays: dask arrays out, same nesting."""
    da = _dask_array()
    spec = cf.spec
    if getattr(spec, "sparse", None):
        raise NotImplementedError("a sparse Jacobian over a dask batch: compile without sparse=")
    vectors = [] if v is None else list(v) if isinstance(v, (tuple, list)) else [v]
    args = list(inputs) + vectors
    shapes = [tuple(s) for s in cf.meta["layout"]["in_shapes"]]
    if len(inputs) != cf._n_args or len(args) != len(shapes):
        raise TypeError(
            f"compiled function: expected {cf._n_args} inputs and {len(shapes) - cf._n_args} vectors in v"
        )
    batch = None
    for k, (a, s) in enumerate(zip(args, shapes, strict=True)):
        a_shape = tuple(np.shape(a))
        if len(a_shape) < len(s) or a_shape[len(a_shape) - len(s) :] != s:
            raise ValueError(f"compiled function: argument {k} has shape {a_shape}; expected a batch of {s}")
        lead = a_shape[: len(a_shape) - len(s)]
        if batch is None:
            batch = lead
        elif lead != batch:
            raise ValueError(
                f"compiled function: argument {k} has batch shape {lead}, argument 0 has {batch}"
            )
    first = next(a for a in args if is_dask(a))
    batch_chunks = _batch_chunks(cf, batch, first.chunks[0] if batch else ())
    args = [
        da.asarray(a).rechunk(batch_chunks + tuple((n,) for n in s))
        for a, s in zip(args, shapes, strict=True)
    ]
    nb = len(batch)
    b_index = tuple(f"b{i}" for i in range(nb))
    pairs = []
    for k, (a, s) in enumerate(zip(args, shapes, strict=True)):
        pairs += [a, b_index + tuple(f"a{k}_{i}" for i in range(len(s)))]
    slots = [
        (tuple(shape), np.dtype(np.float64 if region == 0 else np.float32))
        for region, _, shape in cf.meta["layout"]["slots"]
    ]
    remote = _Remote(cf)
    if len(slots) == 1:
        ((shape, dtype),) = slots
        out_index = b_index + tuple(f"r{i}" for i in range(len(shape)))
        new_axes = {f"r{i}": n for i, n in enumerate(shape)}
        block = da.blockwise(
            _block,
            out_index,
            remote,
            None,
            cf._n_args,
            None,
            *pairs,
            new_axes=new_axes,
            dtype=dtype,
            concatenate=True,
        )
        return nest(cf, [block])
    sizes = [math.prod(shape) for shape, _ in slots]
    packed = da.blockwise(
        _block,
        b_index + ("r",),
        remote,
        None,
        cf._n_args,
        None,
        *pairs,
        new_axes={"r": sum(sizes)},
        dtype=np.float64,
        concatenate=True,
    )
    results, offset = [], 0
    for (shape, dtype), size in zip(slots, sizes, strict=True):
        part = packed[..., offset : offset + size].reshape(batch + shape)
        results.append(part if dtype == np.float64 else part.astype(dtype))
        offset += size
    return nest(cf, results)
