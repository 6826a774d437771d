"""Expand a recorded graph into SymPy expressions, one per tensor element.

Runs only when no kernel is cached for a graph. Inputs become real SymPy symbols named after the
function's parameters (``x_0_1`` is element ``[0, 1]`` of argument ``x``).
"""

from __future__ import annotations

import numpy as np
import sympy

from ..trace.graph import Graph
from ..trace.ops import PRIMITIVES, number


def input_symbols(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """An object array of real symbols ``name_i_j`` (just ``name`` for a 0-d input)."""
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        label = "_".join([name, *map(str, idx)])
        out[idx] = sympy.Symbol(label, real=True)
    return out


def expand(graph: Graph, inputs: list[np.ndarray], captures: list[np.ndarray] = ()) -> list[np.ndarray]:
    """The element expressions of every node, given the inputs' (and captures') symbols."""
    values: list = [None] * len(graph.eqns)
    for n, (op, args, params) in enumerate(graph.eqns):
        if op == "input":
            values[n] = inputs[params[0]]
        elif op == "capture":
            values[n] = captures[params[0]]
        else:
            args = [values[a] if type(a) is int else _inline_scalar(a) for a in args]
            values[n] = PRIMITIVES[op].evaluate(args, params)
    return values


def _inline_scalar(ref) -> np.ndarray:
    out = np.empty((), dtype=object)
    out[()] = number(float(ref[1]))
    return out


def output_expressions(graph: Graph, inputs, captures=()) -> list[np.ndarray]:
    """Element expressions of the graph's outputs; boolean masks become constant 0/1 values."""
    values = expand(graph, inputs, captures)
    outs = []
    for node in graph.outputs:
        arr = values[node]
        if graph.dtype(node) is not None and graph.dtype(node).kind == "b":
            from ..trace.functions import StopGradient

            arr = np.frompyfunc(lambda c: StopGradient(sympy.Piecewise((1, c), (0, True))), 1, 1)(arr)
            arr = np.asarray(arr, dtype=object).reshape(graph.shape(node))
        outs.append(arr)
    return outs
