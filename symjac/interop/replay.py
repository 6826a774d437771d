"""Record a compiled function's results again from its graph: the basis of its derivative ops.

``flat_results(spec)`` is a traceable function of (inputs..., vectors...) returning what the
compiled function returns, flattened; compiling its ``vjp`` or ``jacobian`` gives the derivative
kernels of the torch op (:mod:`symjac.interop.torch_op`) and the JAX op (:mod:`symjac.interop.jax_interop`).
The user's function is never called again: the recorded graph is replayed.
"""

from __future__ import annotations

from .. import functional
from ..trace import api_ops
from ..trace.tensor import Var


def flat(x) -> list:
    if isinstance(x, (tuple, list)):
        return [t for el in x for t in flat(el)]
    return [x]


def replay(graph, values) -> list[Var]:
    """Record ``graph`` again in the trace of ``values`` (its inputs, in order); returns its outputs."""
    trace = api_ops._find_trace(values)
    nodes = {}
    for k, ((op, args, params), (shape, dtype, _)) in enumerate(zip(graph.eqns, graph.meta, strict=True)):
        if op == "input":
            nodes[k] = api_ops.lift(trace, values[params[0]])
        elif op == "capture":
            raise ValueError("a graph recorded inside another trace cannot be replayed on its own")
        else:
            refs = tuple(a if isinstance(a, tuple) else nodes[a]._node for a in args)
            nodes[k] = trace.emit(op, refs, params, shape, dtype)
    return [nodes[o] for o in graph.outputs]


def flat_results(spec, n_args):
    """A function of (inputs..., vectors...) returning the compiled function's flat results, traced."""
    graph = getattr(spec, "source", None) or spec.graph  # a second derivative's own function

    def results(*args):
        inputs, vectors = args[:n_args], args[n_args:]

        def func(*w):
            full = list(inputs)
            for k, j in enumerate(spec.wrt):
                full[j] = w[k]
            outs = replay(graph, full)
            return tuple(outs) if spec.out_tuple else outs[0]

        w = tuple(inputs[j] for j in spec.wrt)
        w = w if spec.wrt_tuple else w[0]
        if spec.mode in ("jacobian", "hessian"):
            res = getattr(functional, spec.mode)(func, w, create_graph=True)
        else:
            res = getattr(functional, spec.mode)(func, w, tuple(vectors), create_graph=True)[1]
        out = flat(res)
        if spec.value:
            out = replay(graph, list(inputs)) + out
        return tuple(out)

    return results


def nest(cf, results):
    """Flat results (in kernel order) nested as the compiled function ``cf`` nests its own."""
    spec, meta = cf.spec, cf.meta
    n_value = meta["n_out"] if spec.value else 0
    values, rest = results[:n_value], results[n_value:]
    if spec.mode in ("jacobian", "hessian"):
        n_rows, n_cols = meta["nest"]
        rows_tuple = spec.out_tuple if spec.mode == "jacobian" else spec.wrt_tuple
        result = functional._nest(rest, n_rows, n_cols, rows_tuple, spec.wrt_tuple)
    else:
        result = functional._pack(rest, spec.out_tuple if spec.mode == "jvp" else spec.wrt_tuple)
    return (functional._pack(values, spec.out_tuple), result) if spec.value else result
