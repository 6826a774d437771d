"""Record a user function as a tensor-level graph by calling it once on traced tensors.

The recorded :class:`Graph` is hashable and includes every constant the function used, so it is
the cache key of everything built from it: two calls that record equal graphs compute the same
mathematics, and a changed closure value records a different graph (never a stale kernel).
SymPy is not touched while tracing; :mod:`symjac.elements.expand` turns a graph into SymPy expressions
only when no kernel is cached for it.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from .tensor import Var, torch_var_class


class Graph:
    """A recorded function: equations in order, then which nodes are inputs and outputs.

    Each equation is ``(op_name, arguments, params)``; node ``k`` is the result of equation
    ``k``. An argument is a node id or an inline Python scalar ``("s", value)``. ``inputs`` and
    ``outputs`` index nodes; ``captures`` are nodes that stand for values of an enclosing trace
    (nested calls). ``meta`` holds (shape, dtype, op) per node, a function of the equations, so
    it is not part of equality. Graphs are immutable and hash once.
    """

    __slots__ = ("eqns", "inputs", "outputs", "captures", "meta", "_hash")

    def __init__(self, eqns: tuple, inputs: tuple, outputs: tuple, captures: tuple = (), meta: tuple = ()):
        self.eqns = eqns
        self.inputs = inputs
        self.outputs = outputs
        self.captures = captures
        self.meta = meta
        self._hash = hash((eqns, inputs, outputs, captures))

    def __reduce__(self):
        # Rebuilt, not restored: string hashes differ between processes, so the hash is recomputed.
        return (Graph, (self.eqns, self.inputs, self.outputs, self.captures, self.meta))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return (
            type(other) is Graph
            and self._hash == other._hash
            and self.eqns == other.eqns
            and self.inputs == other.inputs
            and self.outputs == other.outputs
            and self.captures == other.captures
        )

    def __repr__(self) -> str:
        return f"Graph({len(self.eqns)} equations, inputs={self.inputs}, outputs={self.outputs})"

    def canonical(self) -> tuple:
        """Everything that defines the graph, nested graphs (nested calls' keys) spelled out in
        full: its repr is a cache key (a Graph's own repr is only a summary)."""
        return ("Graph", _canonical(self.eqns), self.inputs, self.outputs, self.captures)

    def shape(self, node: int) -> tuple[int, ...]:
        return self.meta[node][0]

    def dtype(self, node: int):
        return self.meta[node][1]


class _Digest(str):
    """Bytes in a cache key by their SHA-256 (an index array's data). Printed ``sha256<...>``,
    unlike any string, bytes or number: repr of a grid's four 128 KB shift tables took 20 ms."""

    def __repr__(self) -> str:
        return f"sha256<{self}>"


def _canonical(x):
    if type(x) is Graph:
        return x.canonical()
    if type(x) is tuple:
        return tuple(_canonical(el) for el in x)
    if type(x) is bytes and len(x) > 64:
        return _Digest(hashlib.sha256(x).hexdigest())
    return x


class Trace:
    """The equations recorded while one user function runs."""

    def __init__(self, parent: Trace | None = None, params: bool = False, torch_style: bool = False):
        self.eqns: list[tuple] = []
        self.meta: list[tuple] = []  # (shape, dtype, op name) per node
        self.parent = parent
        self.depth = 0 if parent is None else parent.depth + 1
        self.captures: dict[int, int] = {}  # id(outer Var) -> local node
        self.captured_vars: list = []
        # Captured arrays recorded as data (kernel inputs after the function's own), or None
        # when every constant is recorded by value (compile, symbolic views, nested calls).
        self.param_values: list[np.ndarray] | None = [] if params and parent is None else None
        self._param_of: dict[int, tuple] = {}  # id(user's array) -> (array, node, snapshot)
        self.n_inputs = 0
        # Under torch-style inputs every traced value is a torch.Tensor subclass (tensor.py).
        self.torch_style = torch_style
        self._new = torch_var_class().new if torch_style else Var

    def emit(self, op: str, args: tuple, params: tuple, shape: tuple, dtype: np.dtype):
        # np.dtype instances are of subclasses (np.dtypes.Float64DType): isinstance, not type().
        if dtype is not None and not isinstance(dtype, np.dtype):
            dtype = numpy_dtype(dtype)
        self.eqns.append((op, args, params))
        self.meta.append((shape, dtype, op))
        return self._new(self, len(self.eqns) - 1, shape, dtype)

    def capture(self, var):
        """Bring a Var of an enclosing trace into this one as a free (non-input) value."""
        key = id(var)
        if key not in self.captures:
            if var._trace is not self.parent:
                var = self.parent.capture(var)
            self.eqns.append(("capture", (), (len(self.captured_vars),)))
            self.meta.append((var.shape, var._dtype, "capture"))
            self.captures[key] = len(self.eqns) - 1
            self.captured_vars.append(var)
        node = self.captures[key]
        return self._new(self, node, var.shape, var._dtype)

    def param(self, original, x: np.ndarray):
        """The node standing for captured array ``x`` as data: an extra, undifferentiated input.

        ``original`` is the user's object; keeping it alive keeps its id unique for the trace, so
        reusing one array reuses one node. A reuse after an in-place change gets a new node.
        """
        seen = self._param_of.get(id(original))
        if seen is not None and seen[2].shape == x.shape and np.array_equal(seen[2], x):
            return self._new(self, seen[1], x.shape, x.dtype)
        snapshot = np.array(x, copy=True, order="C")
        j = self.n_inputs + len(self.param_values)
        var = self.emit("input", (), (j, x.shape, x.dtype), x.shape, x.dtype)
        self.param_values.append(snapshot)
        self._param_of[id(original)] = (original, var._node, snapshot)
        return var

    def graph(self, inputs, outputs) -> Graph:
        captures = tuple(self.captures.values())
        return Graph(tuple(self.eqns), tuple(inputs), tuple(outputs), captures, tuple(self.meta))


def numpy_dtype(dtype) -> np.dtype:
    """The NumPy dtype for a NumPy or torch dtype (bfloat16, which NumPy lacks, as float32)."""
    text = str(dtype)
    if text.startswith("torch."):
        name = text[6:]
        aliases = {
            "double": "float64",
            "float": "float32",
            "half": "float16",
            "long": "int64",
            "int": "int32",
        }
        return np.dtype(np.float32) if name == "bfloat16" else np.dtype(aliases.get(name, name))
    return np.dtype(dtype)


_ACTIVE = threading.local()


def _stack() -> list:
    try:
        return _ACTIVE.stack
    except AttributeError:
        stack = _ACTIVE.stack = []
        return stack


def current() -> Trace | None:
    """The innermost trace running in this thread (None outside traced calls)."""
    stack = getattr(_ACTIVE, "stack", None)
    return stack[-1] if stack else None


def push(trace: Trace) -> None:
    """Make ``trace`` the current trace of this thread (until :func:`pop`)."""
    _stack().append(trace)


def pop() -> None:
    _ACTIVE.stack.pop()


class active:
    """Context manager: ``trace`` is the current trace of this thread while the function runs."""

    def __init__(self, trace: Trace):
        self.trace = trace

    def __enter__(self):
        push(self.trace)
        return self.trace

    def __exit__(self, *exc):
        pop()
        return False
