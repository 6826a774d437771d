"""torch autograd for symjac's results: ``create_graph=True`` results whose backward is symjac's.

A functional call (jacobian, hessian, vjp, jvp, hvp, vhp) with torch tensors and
``create_graph=True`` returns tensors made by one ``torch.autograd.Function``. Its backward is
the vector-Jacobian product of the results with respect to the call's tensors (inputs and ``v``),
and symjac computes it exactly: it traces a function that returns the call's own symbolic
results (the ``derived`` primitive of :mod:`symjac.functional`) and takes its ``vjp`` with
symjac, so the next derivative is built by SymPy, compiled once and cached like any other
kernel. Under ``create_graph=True`` in torch's backward that vjp is itself differentiable, so any
order works. ``../shared/torch-semantics.md`` section 5 is the behaviour followed.
"""

from __future__ import annotations

import sys

from .. import functional
from ..elements import derive
from ..trace import api_ops

_LIVE = derive._LRU(256)  # key -> for each result, the kernel inputs its entries depend on


def _dependencies(key, d) -> list[frozenset]:
    deps = _LIVE.get(key)
    if deps is None:
        where = {}
        for j, arr in enumerate(d.inputs):
            for s in arr.flat:
                where[s] = j
        deps = []
        for res in d.results:
            used = set()
            for _, e in res.entries:
                used.update(where[s] for s in e.free_symbols if s in where)
            deps.append(frozenset(used))
        deps = _LIVE.put(key, deps)
    return deps


class _Node:
    """What the backward needs: the derivation key and each result's shape and dtype."""

    __slots__ = ("key", "shapes", "dtypes", "differentiable", "values")

    def __init__(self, key, results, differentiable):
        self.key = key
        self.shapes = [tuple(r.shape) for r in results]
        self.dtypes = [functional._numeric_dtype(r) for r in results]
        self.differentiable = differentiable
        self.values = results


_FUNCTION = None


def _function():
    """The ``torch.autograd.Function`` class, made on first use (torch is an optional import)."""
    global _FUNCTION
    if _FUNCTION is None:
        torch = sys.modules["torch"]

        class SymjacDerivative(torch.autograd.Function):
            @staticmethod
            def forward(ctx, node, *args):
                ctx.node = node
                ctx.set_materialize_grads(False)  # a result nobody uses costs nothing in backward
                ctx.save_for_backward(*args)
                outs, node.values = node.values, None
                fixed = [o for o, live in zip(outs, node.differentiable, strict=True) if not live]
                if fixed:
                    ctx.mark_non_differentiable(*fixed)
                return tuple(outs)

            @staticmethod
            def backward(ctx, *grads):
                return (None, *_backward(ctx.node, ctx.saved_tensors, grads, ctx.needs_input_grad[1:]))

        _FUNCTION = SymjacDerivative
    return _FUNCTION


def attach(call, key, extra, results) -> list:
    """``results`` of the derivation ``key`` at the call's tensors, as outputs of a differentiable op.

    As torch does: gradients flow back to the user's tensors that require grad; inputs that do
    not are replaced by detached copies that do (so results still carry a ``grad_fn``); a ``v``
    that does not require grad stays constant; a result that depends on nothing differentiable
    (a linear function's Jacobian) comes back with ``requires_grad=False``.
    """
    torch = sys.modules["torch"]
    shape = getattr(call.trace, "grad_constant", None)
    if shape is not None:
        raise RuntimeError(
            f"create_graph=True: the function uses a torch tensor of shape {shape} that requires grad "
            "but is not one of the inputs, so symjac traces it as a constant and its gradient would be "
            "lost. Pass it as an input (jacobian(lambda x, w: ..., (x, w), create_graph=True); for a "
            "module, torch.func.functional_call(model, params, x)), or detach it."
        )
    n_in = len(call.inputs)
    args = []
    for j, a in enumerate(list(call.inputs) + list(extra)):
        if not isinstance(a, torch.Tensor):
            a = torch.from_numpy(a)
        if j < n_in and not a.requires_grad:
            a = a.detach().requires_grad_(True)
        args.append(a)
    deps = _dependencies(key, derive.derivation(key, call.names))
    live = {j for j, a in enumerate(args) if a.requires_grad}
    differentiable = [bool(dep & live) for dep in deps]
    if not any(differentiable):
        return results
    with torch.enable_grad():  # torch attaches the graph under no_grad() too
        return list(_function().apply(_Node(key, results, differentiable), *args))


def _backward(node, args, grads, needs):
    picked = [r for r, g in enumerate(grads) if g is not None and node.differentiable[r]]
    if not picked or not any(needs):
        return (None,) * len(args)

    def results(*traced):
        # The call's own symbolic results; their vjp is the next derivative, taken by symjac.
        trace = api_ops._find_trace(traced)
        nodes = tuple(t._node for t in traced)
        return tuple(
            trace.emit("derived", nodes, (node.key, r, True), node.shapes[r], node.dtypes[r]) for r in picked
        )

    torch = sys.modules["torch"]
    cotangents = tuple(grads[r] for r in picked)
    _, prods = functional.vjp(results, tuple(args), cotangents, create_graph=torch.is_grad_enabled())
    return tuple(p if need else None for p, need in zip(prods, needs, strict=True))
