"""Var: the traced tensor a user function receives in place of each input.

A Var knows its shape and dtype but no values. Every operation on it (operators, torch-style
methods, NumPy functions and ufuncs, torch functions) is looked up in the op table
(:mod:`symjac.trace.ops`) and recorded as one equation of the current :class:`~symjac.trace.graph.Trace`.
"""

from __future__ import annotations

import math

from .. import errors


class Var:
    """A symbolic tensor recorded by a trace; behaves like a torch tensor or NumPy array.

    ``_dtype`` is the NumPy dtype symjac computes in (None for a weak Python scalar); ``dtype``
    is what the user sees: the same NumPy dtype here, a ``torch.dtype`` on :class:`TorchVar`.
    No ``__slots__``: TorchVar also derives from ``torch.Tensor``, whose layout forbids them.
    """

    __array_priority__ = 1000  # ndarray (op) Var defers to Var's reflected operators

    def __init__(self, trace, node: int, shape: tuple[int, ...], dtype):
        self._trace = trace
        self._node = node
        self.shape = shape
        self._dtype = dtype

    @property
    def dtype(self):
        return self._dtype

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
        value = self._constant()
        if value is None or value.size != 1:
            raise errors.untraceable("bool", self)
        return bool(value)

    def __float__(self):
        value = self._constant()
        if value is None or value.size != 1:
            raise errors.untraceable("float", self)
        return float(value.item())

    def __int__(self):
        value = self._constant()
        if value is None or value.size != 1:
            raise errors.untraceable("int", self)
        return int(value.item())

    def __index__(self):
        raise errors.untraceable("index", self)

    def __complex__(self):
        raise errors.untraceable("complex", self)

    def item(self):
        value = self._constant()
        if value is None or value.size != 1:
            raise errors.untraceable("item", self)
        return value.item()

    def tolist(self):
        value = self._constant()
        if value is None:
            raise errors.untraceable("item", self)
        return value.tolist()

    def numpy(self, *args, **kwargs):
        value = self._constant()
        if value is None:
            raise errors.untraceable("numpy", self)
        return value.copy()

    def _constant(self):
        """The values of a constant recorded on the trace (``np.zeros(3)`` inside a traced
        function is one), or None: code may still read those as numbers."""
        op, _, params = self._trace.eqns[self._node]
        if op != "const":
            return None
        import numpy as np

        dtype, shape, data = params
        return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)

    def __getattr__(self, name):
        # Only reached when normal lookup fails: say what is missing and what to write instead.
        if name.startswith("__") or name in ("_trace", "_node", "_dtype", "shape"):
            raise AttributeError(name)
        raise errors.unknown_method(name, self)

    def __format__(self, spec):
        return repr(self)

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

        try:
            name = _TORCH_NAMES.get(func)
        except TypeError:  # an unhashable callable
            name = None
        fn = ops.TORCH_API.get(name) if name is not None else None
        if fn is not None:  # a torch function seen before: its table entry, without the checks below
            return fn(*args, **(kwargs or {}))

        name = getattr(func, "__name__", "")
        if name == "__get__":  # a Tensor property torch dispatches (x.grad, x.is_leaf, ...)
            prop = getattr(getattr(func, "__self__", None), "__name__", "?")
            raise errors.unknown_method(prop, args[0] if args else None, attribute=True)
        qualname = getattr(func, "__qualname__", "")
        if qualname.startswith(("TensorBase.", "Tensor.")):  # a Tensor method Var does not define
            fn = ops.METHODS.get(name)
            if fn is None:
                raise errors.unknown_method(name, args[0] if args else None)
            return fn(*args, **(kwargs or {}))
        fn = ops.TORCH_API.get(name)
        if fn is None:
            raise errors.unknown_op(errors.torch_name(func), args)
        try:
            _TORCH_NAMES[func] = name
        except TypeError:  # an unhashable callable: looked up by name every time
            pass
        return fn(*args, **(kwargs or {}))

    # Methods and operators are attached from the op table (ops.METHODS) at import time.


# torch function -> its name in ops.TORCH_API, filled as ``__torch_function__`` meets them
# (torch-namespace functions only: Tensor methods and properties keep their own path).
_TORCH_NAMES: dict = {}


class _Size(int):
    """``x.size`` is an int attribute in NumPy and a method in torch; this is both."""

    def __new__(cls, value: int, shape: tuple[int, ...]):
        obj = super().__new__(cls, value)
        obj._shape = shape
        return obj

    def __call__(self, dim: int | None = None):
        return self._shape if dim is None else self._shape[dim]


def is_var(x) -> bool:
    return isinstance(x, Var)


_TORCH_VAR = None


def torch_var_class():
    """The traced type under torch-style inputs: a Var that is also a ``torch.Tensor``.

    Built on first use so that the core never imports torch. Its instances are made with
    ``torch.Tensor._make_subclass`` over one shared empty tensor: no data, but
    ``isinstance(x, torch.Tensor)`` holds, every torch function and Tensor method reaches
    ``__torch_function__``, and ``torch.func.functional_call`` accepts it as a parameter.
    """
    global _TORCH_VAR
    if _TORCH_VAR is None:
        _TORCH_VAR = _build_torch_var()
    return _TORCH_VAR


def _build_torch_var():
    import numpy as np
    import torch

    empty = torch.empty(0)
    by_numpy = {
        np.dtype(n): getattr(torch, n)
        for n in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
    }

    class TorchVar(Var, torch.Tensor):
        """A Var under torch-style inputs (see :func:`torch_var_class`)."""

        # torch.Tensor's C properties would shadow the instance attributes Var sets.
        shape = property(
            lambda self: self.__dict__["shape"], lambda self, v: self.__dict__.__setitem__("shape", v)
        )
        dtype = property(lambda self: by_numpy.get(self._dtype, torch.float64))

        @staticmethod
        def new(trace, node, shape, dtype):
            v = torch.Tensor._make_subclass(TorchVar, empty)
            d = v.__dict__
            d["_trace"], d["_node"], d["shape"], d["_dtype"] = trace, node, shape, dtype
            return v

        @property
        def device(self):
            return torch.device("cpu")

        @property
        def layout(self):
            return torch.strided

        is_cuda = False
        is_sparse = False
        is_quantized = False
        is_meta = False
        is_nested = False

        def size(self, dim=None):
            return torch.Size(self.shape) if dim is None else self.shape[dim]

        def is_floating_point(self):
            return self._dtype is None or self._dtype.kind == "f"

        def is_complex(self):
            return False

        def element_size(self):
            return 8 if self._dtype is None else self._dtype.itemsize

        def get_device(self):
            return -1

        def __reduce_ex__(self, protocol):
            raise errors.UntraceableError("symjac cannot pickle or deepcopy a traced tensor")

        def __deepcopy__(self, memo):
            raise errors.UntraceableError("symjac cannot pickle or deepcopy a traced tensor; use x.clone()")

    TorchVar.__qualname__ = "TorchVar"
    TorchVar.__module__ = __name__
    return TorchVar
