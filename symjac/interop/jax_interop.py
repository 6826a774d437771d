"""symjac and JAX: compiled functions as JAX ops, jax arrays in the functional API, jax.numpy tracing.

- ``cf.jax()`` (``CompiledFunction.jax``) runs the kernel as a ``jax.pure_callback`` inside
  ``jax.jit`` and ``jax.vmap`` (a batch is one native batch call). Its derivative rule is
  symjac's own: a ``custom_jvp`` whose tangent is the exact Jacobian of the results (another
  compiled function, built on first use from the recorded graph, and itself such an op)
  contracted with the tangents. The contraction is linear, so JAX transposes it: ``jax.grad``,
  ``jacfwd``, ``jacrev`` and higher orders all work.
- ``symjac.jacobian`` and the other functional calls accept jax arrays and return jax arrays.
  With concrete arrays they compute as for NumPy inputs; with traced ones (inside ``jax.jit``,
  ``vmap`` or ``grad``) they compile the function and call its JAX op, so they are traceable
  and differentiable by JAX (``create_graph`` is then implied; ``strict`` needs concrete values).
- ``jax.numpy`` functions called on symjac's traced tensors record symjac ops, as NumPy
  functions do: on first use, the public ``jax.numpy`` functions that NumPy also has (and the
  common ``jax.nn`` activations) are wrapped to dispatch to symjac when an argument is traced
  by symjac; otherwise they call JAX unchanged.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading

import numpy as np

from ..trace.tensor import Var
from .replay import flat, flat_results, nest


def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise ImportError("symjac's JAX support needs jax: pip install 'symjac[jax]'") from None
    return jax, jnp


# --- a compiled function as a JAX op ---------------------------------------------------------


class JaxOp:
    """A compiled function as a JAX-traceable op; see ``CompiledFunction.jax``."""

    def __init__(self, cf):
        jax, _ = _jax()
        if not hasattr(cf.spec, "graph"):
            raise NotImplementedError(
                "jax(): functions made with symjac.from_sympy have no traced graph to differentiate; "
                "compile a traced function instead"
            )
        if cf.spec.sparse:
            raise NotImplementedError(
                "jax(): a sparse Jacobian has no dense JAX result; compile without sparse="
            )
        self.cf = cf
        self.n_args = cf._n_args
        layout = cf.meta["layout"]
        self.shapes = [tuple(s) for s in layout["in_shapes"]]
        self.kernel_dtype = np.dtype(np.float32 if layout["compute"] == "float32" else np.float64)
        self.results = [
            (tuple(shape), np.dtype(np.float64 if region == 0 else np.float32))
            for region, _, shape in layout["slots"]
        ]
        self._jacobian = None
        self._lock = threading.Lock()
        self._op = jax.custom_jvp(self._evaluate)
        self._op.defjvp(self._jvp)

    def jacobian(self) -> JaxOp:
        """The op of the exact Jacobian of this op's flat results with respect to all its arguments."""
        with self._lock:
            if self._jacobian is None:
                from ..compiled import compile as compile_

                examples = [np.zeros(s, self.kernel_dtype) for s in self.shapes]
                self._jacobian = JaxOp(compile_(flat_results(self.cf.spec, self.n_args), *examples))
        return self._jacobian

    def __call__(self, *inputs, v=None):
        vectors = [] if v is None else list(v) if isinstance(v, (tuple, list)) else [v]
        if len(inputs) != self.n_args:
            raise TypeError(f"compiled jax op: expected {self.n_args} inputs, got {len(inputs)}")
        if len(inputs) + len(vectors) != len(self.shapes):
            n_v = len(self.shapes) - self.n_args
            raise TypeError(
                f"compiled jax op ({self.cf.spec.mode}) "
                + (f"needs {n_v} vectors in v" if n_v else "takes no v")
            )
        for k, (a, s) in enumerate(zip((*inputs, *vectors), self.shapes, strict=True)):
            if tuple(np.shape(a)) != s:
                raise ValueError(
                    f"compiled jax op: argument {k} has shape {tuple(np.shape(a))}; expected {s} "
                    "(for a batch of points, use jax.vmap)"
                )
        return nest(self.cf, list(self._op(*inputs, *vectors)))

    def _evaluate(self, *args):
        jax, jnp = _jax()
        out_types = tuple(
            jax.ShapeDtypeStruct(s, jax.dtypes.canonicalize_dtype(dt)) for s, dt in self.results
        )
        cf, n, kernel_dtype = self.cf, self.n_args, self.kernel_dtype

        def host(*arrays):
            arrays = [np.asarray(a, dtype=kernel_dtype) for a in arrays]
            raw = cf(*arrays[:n], v=tuple(arrays[n:])) if len(arrays) > n else cf(*arrays)
            return tuple(np.asarray(r, dtype=t.dtype) for r, t in zip(flat(raw), out_types, strict=True))

        # broadcast_all: under vmap every argument gets the batch dimensions: one native batch call.
        return jax.pure_callback(host, out_types, *args, vmap_method="broadcast_all")

    def _jvp(self, primals, tangents):
        _, jnp = _jax()
        outs = self._op(*primals)
        blocks = self.jacobian()._op(*primals)
        n_args = len(primals)
        out_tangents = []
        for i, out in enumerate(outs):
            total = jnp.zeros(out.shape, out.dtype)
            for j, t in enumerate(tangents):
                k = len(self.shapes[j])
                total = total + jnp.tensordot(blocks[i * n_args + j], t, axes=k).astype(out.dtype)
            out_tangents.append(total)
        return tuple(outs), tuple(out_tangents)


# --- the functional API with jax arrays -----------------------------------------------------------

_MODES = {
    "jacobian": "jacobian",
    "hessian": "hessian",
    "vjp": "vjp",
    "jvp": "jvp",
    "hvp": "hvp",
    "vhp": "hvp",
}


def _is_jax(x) -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def has_jax(*values) -> bool:
    """Whether any value (or tuple element) is a jax array; cheap when jax is not imported."""
    if "jax" not in sys.modules:
        return False
    return any(_is_jax(el) for v in values for el in (v if isinstance(v, (tuple, list)) else (v,)))


def functional_call(api, func, inputs, args, kwargs):
    """``api(func, inputs, *args, **kwargs)`` (a functional.py function) with jax arrays."""
    jax, jnp = _jax()
    bound = inspect.signature(api).bind(func, inputs, *args, **kwargs)
    bound.apply_defaults()
    params = bound.arguments
    leaves = jax.tree_util.tree_leaves((params["inputs"], params.get("v")))
    if not any(isinstance(x, jax.core.Tracer) for x in leaves):
        # Concrete arrays: compute exactly as for NumPy inputs, hand back jax arrays.
        to_numpy = functools.partial(jax.tree_util.tree_map, lambda x: np.asarray(x) if _is_jax(x) else x)
        params["inputs"] = to_numpy(params["inputs"])
        if params.get("v") is not None:
            params["v"] = to_numpy(params["v"])
        result = api(**params)
        return jax.tree_util.tree_map(jnp.asarray, result)
    if params.get("strict"):
        raise NotImplementedError(
            f"{api.__name__}(strict=True) needs concrete values; call it outside jax.jit/vmap/grad"
        )
    return _traced_call(api.__name__, func, params)


def _traced_call(name, func, params):
    from ..compiled import compile as compile_

    inputs = params["inputs"]
    in_tuple = isinstance(inputs, tuple)
    items = inputs if in_tuple else (inputs,)
    examples = [np.zeros(np.shape(x), np.dtype(x.dtype)) for x in items]
    value = name not in ("jacobian", "hessian")
    jax, _ = _jax()
    wrt = tuple(range(len(items))) if in_tuple else 0
    with jax.ensure_compile_time_eval():  # jax constants in func's closure stay concrete under jit
        cf = compile_(func, *examples, mode=_MODES[name], wrt=wrt, value=value)
    op = JaxOp(cf)
    if not value:
        return op(*items)
    v = params.get("v")
    if v is None:
        _, jnp = _jax()
        shapes = [s for s in op.shapes[op.n_args :]]
        if len(shapes) != 1 or int(np.prod(shapes[0])) != 1:
            what = "output" if name == "vjp" else "input"
            raise RuntimeError(f"{name}: v can only be None for a single one-element {what}")
        v = jnp.ones(shapes[0], items[0].dtype)
    return op(*items, v=v)


def constant(x) -> np.ndarray:
    """A jax array the traced function uses as a constant (a closure value), as NumPy."""
    jax, _ = _jax()
    if isinstance(x, jax.core.Tracer):
        raise TypeError(
            "a value traced by JAX (inside jax.jit, vmap or grad) is used as a constant of a function "
            "symjac traces; pass it to the symjac call as an input (symjac.jacobian(f, (x, w)) or "
            "symjac.compile(f, x, w, wrt=0)) so that it stays a traced input"
        )
    return np.asarray(x)


# --- jax.numpy on symjac's traced tensors ---------------------------------------------------------

_INSTALLED = False
_INSTALL_LOCK = threading.Lock()


def _traced(values) -> bool:
    for v in values:
        if type(v) is Var:
            return True
        if isinstance(v, (tuple, list)) and _traced(v):
            return True
    return False


class _Dispatching:
    """A jax.numpy function that records a symjac op when an argument is traced by symjac.

    An object, not a function, so that everything else (``jnp.add.at``, a jitted function's
    ``.lower``, ``__name__``) still reaches the JAX original.
    """

    __slots__ = ("__wrapped__", "_symjac_fn")

    def __init__(self, jax_fn, symjac_fn):
        self.__wrapped__ = jax_fn
        self._symjac_fn = symjac_fn

    def __call__(self, *args, **kwargs):
        if _traced(args) or _traced(kwargs.values()):
            return self._symjac_fn(*args, **kwargs)
        return self.__wrapped__(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.__wrapped__, name)

    @property
    def __doc__(self):
        return self.__wrapped__.__doc__

    def __repr__(self) -> str:
        return f"{self.__wrapped__!r} (records symjac ops on symjac's traced tensors)"


def _jax_nn():
    from ..trace import activations, api_ops, reductions

    def gelu(x, approximate=True):
        return activations.gelu(x, approximate="tanh" if approximate else "none")

    return {
        "relu": activations.relu,
        "sigmoid": api_ops.EW["sigmoid"],
        "softplus": api_ops.EW["softplus"],
        "silu": activations.silu,
        "swish": activations.silu,
        "gelu": gelu,
        "log_sigmoid": activations.logsigmoid,
        "softmax": lambda x, axis=-1: reductions.softmax(x, axis),
        "log_softmax": lambda x, axis=-1: reductions.log_softmax(x, axis),
        "logsumexp": reductions.logsumexp,
        "tanh": api_ops.EW["tanh"],
    }


def install_jnp_dispatch() -> None:
    """Make ``jax.numpy`` (and common ``jax.nn``) functions record symjac ops on traced tensors."""
    global _INSTALLED
    if _INSTALLED:
        return
    with _INSTALL_LOCK:
        if _INSTALLED:
            return
        jax, jnp = _jax()
        from ..trace import ops

        for name in dir(jnp):
            jax_fn = getattr(jnp, name)
            symjac_fn = ops.NUMPY_API.get(name)
            if name.startswith("_") or symjac_fn is None or not callable(jax_fn) or isinstance(jax_fn, type):
                continue
            if type(jax_fn) is not _Dispatching:
                setattr(jnp, name, _Dispatching(jax_fn, symjac_fn))
        for name, symjac_fn in _jax_nn().items():
            jax_fn = getattr(jax.nn, name, None)
            if jax_fn is not None and type(jax_fn) is not _Dispatching:
                setattr(jax.nn, name, _Dispatching(jax_fn, symjac_fn))
        _INSTALLED = True
