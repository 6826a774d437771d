"""Record a user function as a tensor-level graph by calling it once on traced tensors.

The recorded :class:`Graph` is hashable and includes every constant the function used, so it is
the cache key of everything built from it: two calls that record equal graphs compute the same
mathematics, and a changed closure value records a different graph (never a stale kernel).
SymPy is not touched while tracing; :mod:`symjac.expand` turns a graph into SymPy expressions
only when no kernel is cached for it.
"""

from __future__ import annotations

import numpy as np

from .tensor import Var


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


def _canonical(x):
    if type(x) is Graph:
        return x.canonical()
    if type(x) is tuple:
        return tuple(_canonical(el) for el in x)
    return x


class Trace:
    """The equations recorded while one user function runs."""

    def __init__(self, parent: Trace | None = None):
        self.eqns: list[tuple] = []
        self.meta: list[tuple] = []  # (shape, dtype, op name) per node
        self.parent = parent
        self.depth = 0 if parent is None else parent.depth + 1
        self.captures: dict[int, int] = {}  # id(outer Var) -> local node
        self.captured_vars: list = []

    def emit(self, op: str, args: tuple, params: tuple, shape: tuple, dtype: np.dtype):
        self.eqns.append((op, args, params))
        self.meta.append((shape, dtype, op))
        return Var(self, len(self.eqns) - 1, shape, dtype)

    def capture(self, var):
        """Bring a Var of an enclosing trace into this one as a free (non-input) value."""
        key = id(var)
        if key not in self.captures:
            if var._trace is not self.parent:
                var = self.parent.capture(var)
            self.eqns.append(("capture", (), (len(self.captured_vars),)))
            self.meta.append((var.shape, var.dtype, "capture"))
            self.captures[key] = len(self.eqns) - 1
            self.captured_vars.append(var)
        node = self.captures[key]
        return Var(self, node, var.shape, var.dtype)

    def graph(self, inputs, outputs) -> Graph:
        captures = tuple(self.captures.values())
        return Graph(tuple(self.eqns), tuple(inputs), tuple(outputs), captures, tuple(self.meta))
