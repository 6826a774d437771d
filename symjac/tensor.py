"""Var: the traced tensor a user function receives in place of each input.

A Var knows its shape and dtype but no values. Every operation on it (operators, torch-style
methods, NumPy functions and ufuncs, torch functions) is looked up in the op table
(:mod:`symjac.ops`) and recorded as one equation of the current :class:`~symjac.trace.Trace`.
"""

from __future__ import annotations

import math

from . import errors


class Var:
    """A symbolic tensor recorded by a trace; behaves like a torch tensor or NumPy array."""

    __slots__ = ("_trace", "_node", "shape", "dtype")
    __array_priority__ = 1000  # ndarray (op) Var defers to Var's reflected operators

    def __init__(self, trace, node: int, shape: tuple[int, ...], dtype):
        self._trace = trace
        self._node = node
        self.shape = shape
        self.dtype = dtype

    # --- metadata, in both NumPy and torch spellings -------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self):
        return _Size(math.prod(self.shape), self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)

    nelement = numel

    def dim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def requires_grad(self) -> bool:
        return True

    @property
    def device(self):
        return "cpu"

    def __repr__(self) -> str:
        return f"symjac.Var(shape={self.shape}, dtype={self.dtype}, op={self._op})"

    @property
    def _op(self) -> str:
        return self._trace.meta[self._node][2]

    __hash__ = object.__hash__

    # --- what cannot be traced --------------------------------------------------------------
    def __bool__(self):
        raise errors.untraceable("bool", self)

    def __float__(self):
        raise errors.untraceable("float", self)

    def __int__(self):
        raise errors.untraceable("int", self)

    def __index__(self):
        raise errors.untraceable("index", self)

    def __complex__(self):
        raise errors.untraceable("complex", self)

    def item(self):
        raise errors.untraceable("item", self)

    def tolist(self):
        raise errors.untraceable("item", self)

    def numpy(self, *args, **kwargs):
        raise errors.untraceable("numpy", self)

    # --- dispatch protocols -----------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import ops

        if kwargs.get("out") is not None:
            raise errors.InPlaceError(
                f"numpy.{ufunc.__name__}(..., out=...) writes into an array in place, which "
                "symjac cannot trace; assign the result instead (y = numpy."
                f"{ufunc.__name__}(...))."
            )
        kwargs.pop("out", None)
        if method == "__call__":
            fn = ops.NUMPY_API.get(ufunc.__name__)
        elif method == "reduce" and ufunc.__name__ in ops.UFUNC_REDUCTIONS:
            fn = ops.NUMPY_API[ops.UFUNC_REDUCTIONS[ufunc.__name__]]
        else:
            fn = None
        if fn is None:
            name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
            raise errors.unknown_op(f"numpy.{name}", inputs)
        return fn(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import ops

        module = func.__module__ or "numpy"
        name = func.__name__ if module == "numpy" else f"{module[6:]}.{func.__name__}"
        fn = ops.NUMPY_API.get(name)
        if fn is None:
            raise errors.unknown_op(f"numpy.{name}", args)
        return fn(*args, **kwargs)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        from . import ops

        name = func.__name__
        fn = ops.TORCH_API.get(name)
        if fn is None:
            raise errors.unknown_op(f"torch.{name}", args)
        return fn(*args, **(kwargs or {}))

    # Methods and operators are attached from the op table (ops.METHODS) at import time.


class _Size(int):
    """``x.size`` is an int attribute in NumPy and a method in torch; this is both."""

    def __new__(cls, value: int, shape: tuple[int, ...]):
        obj = super().__new__(cls, value)
        obj._shape = shape
        return obj

    def __call__(self, dim: int | None = None):
        return self._shape if dim is None else self._shape[dim]


def is_var(x) -> bool:
    return type(x) is Var
