"""Build the exact per-element derivative results of a traced graph for each API mode.

A ``Derivation`` holds, for one (mode, graph) key, the symbols of every kernel input (the
function's inputs, then any vectors ``v``), the nonzero entries of every result, and the
structural facts that strict mode checks. Symbolic views, strict mode, nested calls and
create_graph's backward read it; kernels are built on the compiled road
(``functional._fast_kernel``), so this module compiles nothing.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .. import budget
from . import deep, diff
from .expand import input_symbols, output_expressions

F64 = np.dtype(np.float64)
F32 = np.dtype(np.float32)


@dataclass
class Result:
    """One result array: its shape, the dtype it is computed in, which tensor sets its final
    dtype (``("in", j)`` or ``("out", i)``), and its nonzero ``(flat index, expr)`` entries."""

    shape: tuple
    dtype: np.dtype
    ref: tuple
    entries: list


@dataclass
class Derivation:
    inputs: list  # symbol arrays of the kernel inputs: the function's inputs, then v
    input_dtypes: list  # the dtype each kernel input is computed in
    captures: list  # symbol arrays standing for values of an enclosing trace
    results: list
    info: dict = field(default_factory=dict)


def _input_specs(graph):
    specs = {}
    for op, _, params in graph.eqns:
        if op == "input":
            j, shape, dtype = params
            specs[j] = (shape, np.dtype(dtype))
    return [specs[j] for j in range(len(specs))]


def _out_dtype(graph, node) -> np.dtype:
    dt = graph.dtype(node)
    return dt if dt is not None and dt.kind == "f" else F64


def _compute_dtype(dt: np.dtype) -> np.dtype:
    return F64 if dt == F64 else F32


def derive(key, names) -> Derivation:
    """The symbolic results for ``key = (mode, graph, option)``; ``names`` (or a callable
    returning them) name the inputs' symbols."""
    mode, graph = key[0], key[1]
    specs = _input_specs(graph)
    n_in = sum(math.prod(shape) for shape, _ in specs)
    n_out = sum(math.prod(graph.shape(node)) for node in graph.outputs)
    budget.check(mode, graph, n_in, n_out, where=f"symjac.{mode}")
    names = _unique_names(names() if callable(names) else names, len(specs))
    X = [input_symbols(names[j], shape) for j, (shape, _) in enumerate(specs)]
    C = [input_symbols(_fresh(f"captured{k}", names), graph.shape(n)) for k, n in enumerate(graph.captures)]
    outs = output_expressions(graph, X, C)
    where = diff.symbol_index(X)
    in_dt = [_compute_dtype(dt) for _, dt in specs]
    out_dt = [_compute_dtype(_out_dtype(graph, node)) for node in graph.outputs]
    if mode == "jacobian":
        return _jacobian(X, C, outs, where, in_dt, out_dt, forward=key[2])
    if mode == "hessian":
        return _hessian(X, C, outs, where, in_dt, forward=key[2])
    if mode in ("vjp", "jvp"):
        return _product(mode, X, C, outs, where, in_dt, out_dt, names)
    if mode in ("hvp", "vhp"):
        return _hessian_product(mode, X, C, outs, where, in_dt, out_dt, names)
    raise ValueError(f"unknown derivative mode {mode!r}")


def _unique_names(names, n):
    """One distinct, identifier-like base name per input (``x``, ``y``; ``args0``, ``args1``)."""
    names = list(names)[:n] + [f"x{j}" for j in range(len(names), n)]
    out = []
    for j, name in enumerate(names):
        if names.count(name) > 1:
            name = f"{name}{j}"
        out.append(_fresh(name, out))
    return out


def _fresh(base: str, taken) -> str:
    """A base name whose symbols cannot equal a taken name's symbols (``x`` vs ``x_0``)."""
    taken = set(taken)
    name = base
    while name in taken or any(t.startswith(name + "_") or name.startswith(t + "_") for t in taken):
        name = "_" + name
    return name


def _block_info(entries, where, n_out, n_in):
    nonzero = {(i, j): bool(entries.get((i, j))) for i in range(n_out) for j in range(n_in)}
    constant = {
        (i, j): all(diff.is_constant(d, where) for _, _, d in entries.get((i, j), ()))
        for i in range(n_out)
        for j in range(n_in)
    }
    return nonzero, constant


def _blocks(entries, out_arrays, X, dtype_of, ref_of):
    results = []
    for i, out in enumerate(out_arrays):
        for j, x in enumerate(X):
            n = x.size
            items = [(row * n + col, d) for row, col, d in entries.get((i, j), ())]
            results.append(Result(out.shape + x.shape, dtype_of(i, j), ref_of(i, j), items))
    return results


def _values(outs, out_dt):
    return [
        Result(o.shape, out_dt[i], ("out", i), [(k, e) for k, e in enumerate(o.flat) if e != 0])
        for i, o in enumerate(outs)
    ]


def _jacobian(X, C, outs, where, in_dt, out_dt, forward):
    entries = diff.jacobian_entries(outs, X)
    if forward:
        dtype_of, ref_of = (lambda i, j: out_dt[i]), (lambda i, j: ("out", i))
    else:
        dtype_of, ref_of = (lambda i, j: in_dt[j]), (lambda i, j: ("in", j))
    nonzero, constant = _block_info(entries, where, len(outs), len(X))
    results = _blocks(entries, outs, X, dtype_of, ref_of)
    return Derivation(X, in_dt, C, results, {"nonzero": nonzero, "constant": constant})


def _gradient_info(outs, X, where):
    expr = outs[0].flat[0]
    grads = diff.gradient(expr, X)
    grad_zero = [all(g == 0 for g in gj.flat) for gj in grads]
    grad_const = [all(diff.is_constant(g, where) for g in gj.flat) for gj in grads]
    entries = diff.jacobian_entries(grads, X)
    return grads, entries, {"grad_zero": grad_zero, "grad_const": grad_const}


def _hessian(X, C, outs, where, in_dt, forward):
    grads, entries, info = _gradient_info(outs, X, where)
    nonzero, constant = _block_info(entries, where, len(X), len(X))
    info.update(nonzero=nonzero, constant=constant)
    pick = (lambda i, j: i) if forward else (lambda i, j: j)
    results = _blocks(entries, grads, X, lambda i, j: in_dt[pick(i, j)], lambda i, j: ("in", pick(i, j)))
    return Derivation(X, in_dt, C, results, info)


def _product(mode, X, C, outs, where, in_dt, out_dt, names):
    entries = diff.jacobian_entries(outs, X)
    nonzero, constant = _block_info(entries, where, len(outs), len(X))
    if mode == "vjp":
        V = [input_symbols(_fresh(f"v{i}", names), o.shape) for i, o in enumerate(outs)]
        sums = diff.contract_rows(entries, V, [x.size for x in X])
        prods = [Result(x.shape, in_dt[j], ("in", j), _nonzero(sums[j])) for j, x in enumerate(X)]
    else:
        V = [input_symbols(_fresh(f"v{j}", names), x.shape) for j, x in enumerate(X)]
        sums = diff.contract_cols(entries, V, [o.size for o in outs])
        prods = [Result(o.shape, out_dt[i], ("out", i), _nonzero(sums[i])) for i, o in enumerate(outs)]
    info = {"nonzero": nonzero, "constant": constant}
    v_dt = out_dt if mode == "vjp" else in_dt
    return Derivation(X + V, in_dt + v_dt, C, _values(outs, out_dt) + prods, info)


def _hessian_product(mode, X, C, outs, where, in_dt, out_dt, names):
    grads, entries, info = _gradient_info(outs, X, where)
    nonzero, constant = _block_info(entries, where, len(X), len(X))
    info.update(nonzero=nonzero, constant=constant)
    V = [input_symbols(_fresh(f"v{j}", names), x.shape) for j, x in enumerate(X)]
    n_in = [x.size for x in X]
    sums = (diff.contract_cols if mode == "hvp" else diff.contract_rows)(entries, V, n_in)
    prods = [Result(x.shape, in_dt[j], ("in", j), _nonzero(sums[j])) for j, x in enumerate(X)]
    return Derivation(X + V, in_dt + in_dt, C, _values(outs[:1], out_dt) + prods, info)


def _nonzero(exprs):
    return [(k, e) for k, e in enumerate(exprs) if e != 0]


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        value = self.data.get(key)  # lock-free read: dict lookups are atomic under the GIL
        if value is not None:
            try:
                self.data.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile
                pass
        return value

    def put(self, key, value):
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value


DERIVATIONS = _LRU(256)


def derivation(key, names) -> Derivation:
    d = DERIVATIONS.get(key)
    if d is None:
        d = DERIVATIONS.put(key, deep.call(derive, key, names))
    return d
