"""A compiled function as a differentiable torch op: forward is its kernel, backward its compiled vjp.

``cf.torch()`` (``CompiledFunction.torch``) returns a callable that takes and returns torch
tensors, with the compiled function's nesting, and that autograd differentiates: with respect to
every argument, including runtime parameters (``wrt`` only chooses what the kernel differentiates
symbolically). The backward is itself a compiled function: the ``vjp`` of the function that
returns this one's flat results, built on first use from the recorded graph (never by calling the
user's function again) and cached on disk; under ``create_graph=True`` it runs as the same kind
of op, so derivatives of any order stay exact. Arguments broadcast over batch dimensions.
"""

from __future__ import annotations

import sys

import numpy as np

from .. import functional
from ..elements.derive import _input_specs
from .replay import flat, flat_results, nest

_FUNCTION = None


def _function():
    global _FUNCTION
    if _FUNCTION is None:
        torch = sys.modules["torch"]

        class SymjacCompiled(torch.autograd.Function):
            @staticmethod
            def forward(ctx, op, batch, *args):
                ctx.op, ctx.batch = op, batch
                ctx.save_for_backward(*args)
                arrays = [
                    functional._numeric(a.expand(batch + s)) for a, s in zip(args, op.shapes, strict=True)
                ]
                n = op.n_args
                raw = op.cf(*arrays[:n], v=tuple(arrays[n:])) if len(arrays) > n else op.cf(*arrays)
                # not np.ascontiguousarray, which makes a 0-d value (a loss) of shape (1,)
                return tuple(torch.from_numpy(np.asarray(r, order="C")) for r in flat(raw))

            @staticmethod
            def backward(ctx, *grads):
                op, batch, args = ctx.op, ctx.batch, ctx.saved_tensors
                full = [a.expand(batch + tuple(s)) for a, s in zip(args, op.shapes, strict=True)]
                backward = op.backward()
                if torch.is_grad_enabled():  # create_graph=True: the backward is differentiable too
                    backward = backward.torch()
                prods = flat(backward(*full, v=tuple(g.contiguous() for g in grads)))
                return (
                    None,
                    None,
                    *(
                        p.sum_to_size(a.shape) if p.shape != a.shape else p
                        for p, a in zip(prods, args, strict=True)
                    ),
                )

        _FUNCTION = SymjacCompiled
    return _FUNCTION


class TorchOp:
    """A compiled function as a differentiable torch op; see ``CompiledFunction.torch``."""

    def __init__(self, cf):
        spec = cf.spec
        if not hasattr(spec, "graph"):
            raise NotImplementedError(
                "torch(): functions made with symjac.from_sympy have no traced graph to differentiate; "
                "compile a traced function instead"
            )
        if spec.sparse:
            raise NotImplementedError(
                "torch(): a sparse Jacobian has no dense torch result; compile without sparse="
            )
        self.cf = cf
        self.n_args = cf._n_args
        self.shapes = [tuple(s) for s in cf.meta["layout"]["in_shapes"]]
        self._backward = None

    def backward(self):
        """The compiled vjp of this op's flat results with respect to all its arguments."""
        if self._backward is None:
            from ..compiled import compile as compile_

            spec = self.cf.spec
            dtypes = [np.dtype(dt) for _, dt in _input_specs(spec.graph)]
            dtypes += [
                np.dtype(np.float32 if self.cf.meta["layout"]["compute"] == "float32" else np.float64)
            ] * (len(self.shapes) - self.n_args)
            examples = [np.zeros(s, dt) for s, dt in zip(self.shapes, dtypes, strict=True)]
            self._backward = compile_(flat_results(spec, self.n_args), *examples, mode="vjp")
        return self._backward

    def __call__(self, *inputs, v=None):
        import torch

        if len(inputs) != self.n_args:
            raise TypeError(f"compiled torch op: expected {self.n_args} inputs, got {len(inputs)}")
        vectors = [] if v is None else list(v) if isinstance(v, (tuple, list)) else [v]
        if len(inputs) + len(vectors) != len(self.shapes):
            what = (
                "takes no v"
                if len(self.shapes) == self.n_args
                else f"needs {len(self.shapes) - self.n_args} vectors in v"
            )
            raise TypeError(f"compiled torch op ({self.cf.spec.mode}) {what}")
        args = [a if isinstance(a, torch.Tensor) else torch.as_tensor(a) for a in (*inputs, *vectors)]
        leads = []
        for k, (a, s) in enumerate(zip(args, self.shapes, strict=True)):
            if a.dim() < len(s) or tuple(a.shape[a.dim() - len(s) :]) != s:
                raise ValueError(
                    f"compiled torch op: argument {k} has shape {tuple(a.shape)}; expected {s} "
                    "or a batch of them (extra leading dimensions, broadcast between arguments)"
                )
            leads.append(tuple(a.shape[: a.dim() - len(s)]))
        batch = tuple(torch.broadcast_shapes(*leads))
        return nest(self.cf, list(_function().apply(self, batch, *args)))
