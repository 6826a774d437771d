"""The names each op answers to in the three calling styles, and the examples that test them.

``API`` is the table of non-elementwise ops: each row binds the NumPy function names, torch
function names and tensor-method names of one op to its front-end functions, and carries
examples (one call in each style) that ``tests/test_ops.py`` checks against torch and that
``docs/operations.md`` lists. Elementwise ops are rows of ``ops.ELEMENTWISE`` instead. Adding an
op is one row here (plus its front-end function when it is new).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import errors
from . import activations as act
from . import api_ops as A
from . import assembly, linalg, ops
from . import reductions as R
from . import shapes as S
from . import torchnn as nn
from .tensor import Var


@dataclass(frozen=True)
class Example:
    """One call in each style: ``numpy(np, *xs)``, ``torch(torch, *xs)``, ``method(*xs)``."""

    shapes: tuple
    numpy: object = None
    torch: object = None
    method: object = None
    low: float = -1.0
    high: float = 1.0
    oracle: object = None  # torch(torch, *xs) for the check when symjac lacks a torch form


@dataclass(frozen=True)
class Api:
    name: str
    numpy: dict = field(default_factory=dict)
    torch: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)
    examples: tuple = ()


E = Example


def _np_red(fn):
    def np_fn(a, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        if out is not None or kwargs:  # checked only when present: this runs on every warm call
            extra = {k: v for k, v in kwargs.items() if k not in ("initial", "where")}
            A._reject_out({"out": out, **extra}, "reduction")
        return fn(a, axis, keepdims)

    return np_fn


def _torch_red(fn):
    def torch_fn(input, dim=None, keepdim=False, *, dtype=None, out=None):
        if out is not None:
            A._reject_out({"out": out}, "reduction")
        return fn(input, dim, keepdim)

    return torch_fn


def _method_red(fn):
    def method(self, dim=None, keepdim=False, dtype=None, *, axis=None, keepdims=None, out=None):
        if out is not None:
            A._reject_out({"out": out}, "reduction")
        return fn(self, dim if axis is None else axis, keepdim if keepdims is None else keepdims)

    return method


def _both_red(fn):
    return {"numpy": _np_red(fn), "torch": _torch_red(fn), "method": _method_red(fn)}


SUM, PROD, MEAN = _both_red(A.reduce_sum), _both_red(A.reduce_prod), _both_red(A.mean)
AMAX, AMIN = _both_red(R.amax), _both_red(R.amin)


def _method_max(name, reduce, binary):
    torch_fn = R.torch_max if name == "max" else R.torch_min

    def method(self, dim=None, keepdim=False, *, axis=None, keepdims=None, out=None):
        if axis is not None or keepdims is not None:  # NumPy-style x.max(axis=...)
            return reduce(self, axis, bool(keepdims))
        return torch_fn(self, dim, keepdim)

    return method


def _method_var(fn):
    def method(
        self, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None, ddof=None, keepdims=None
    ):
        if axis is not None or ddof is not None or keepdims is not None:  # NumPy-style
            return fn(self, axis, ddof or 0, bool(keepdims))
        return R._torch_moment(fn)(self, dim, unbiased, keepdim, correction=correction)

    return method


def _untraceable(name, advice):
    def refuse(*args, **kwargs):
        raise errors.UntraceableError(
            f"symjac cannot trace {name} of a traced tensor: its result depends on the order of values "
            f"that are not known while tracing. {advice}"
        )

    return refuse


def _boolean(name):
    def refuse(*args, **kwargs):
        raise errors.UntraceableError(
            f"symjac cannot trace {name} of a traced tensor: it reduces to booleans, whose values "
            "are not known while tracing (and have no derivative). Choose values elementwise with "
            "symjac.where(condition, a, b), or decide outside the function and pass the flag in."
        )

    return refuse


def _random(name):
    def refuse(*args, **kwargs):
        raise errors.UntraceableError(
            f"symjac cannot trace {name} of a traced tensor: a random draw has no exact derivative "
            "and would change the recorded function on every call. Draw the noise outside the "
            "function and pass it in as an input or a captured constant."
        )

    return refuse


_ORDER_ADVICE = (
    "Use amax/amin/maximum for extreme values, symjac.where for selections, and "
    "constant index arrays for reordering."
)

API = (
    Api(
        "sum",
        {"sum": SUM["numpy"]},
        {"sum": SUM["torch"]},
        {"sum": SUM["method"]},
        (
            E(
                ((2, 3),),
                lambda np, x: np.sum(x, axis=1),
                lambda t, x: t.sum(x, dim=1),
                lambda x: x.sum(dim=1),
            ),
            E(
                ((2, 3),),
                lambda np, x: np.sum(x, axis=0, keepdims=True) * x,
                lambda t, x: t.sum(x, 0, True) * x,
            ),
        ),
    ),
    Api(
        "prod",
        {"prod": PROD["numpy"]},
        {"prod": PROD["torch"]},
        {"prod": PROD["method"]},
        (
            E(
                ((2, 3),),
                lambda np, x: np.prod(x, axis=1),
                lambda t, x: t.prod(x, dim=1),
                lambda x: x.prod(dim=1),
            ),
        ),
    ),
    Api(
        "mean",
        {"mean": MEAN["numpy"]},
        {"mean": MEAN["torch"]},
        {"mean": MEAN["method"]},
        (
            E(
                ((2, 3),),
                lambda np, x: np.mean(x**2, axis=1),
                lambda t, x: t.mean(x**2, dim=1),
                lambda x: (x**2).mean(dim=1),
            ),
        ),
    ),
    Api(
        "amax",
        {"amax": AMAX["numpy"], "max": AMAX["numpy"]},
        {"amax": AMAX["torch"], "max": R.torch_max},
        {"amax": AMAX["method"], "max": _method_max("max", R.amax, "maximum")},
        (
            E(
                ((2, 3),),
                lambda np, x: np.max(x, axis=1),
                lambda t, x: t.amax(x, dim=1),
                lambda x: x.max(dim=1).values,
            ),
            E(((4,),), lambda np, x: np.max(x) * x, lambda t, x: t.max(x) * x, lambda x: x.max() * x),
        ),
    ),
    Api(
        "amin",
        {"amin": AMIN["numpy"], "min": AMIN["numpy"]},
        {"amin": AMIN["torch"], "min": R.torch_min},
        {"amin": AMIN["method"], "min": _method_max("min", R.amin, "minimum")},
        (
            E(
                ((2, 3),),
                lambda np, x: np.min(x, axis=0),
                lambda t, x: t.amin(x, dim=0),
                lambda x: x.min(dim=0).values,
            ),
        ),
    ),
    Api(
        "norm",
        {"linalg.norm": R.norm},
        {"norm": R._torch_norm, "linalg_norm": R._linalg_norm, "linalg_vector_norm": R._linalg_vector_norm},
        {
            "norm": lambda self, p="fro", dim=None, keepdim=False, dtype=None: R._torch_norm(
                self, p, dim, keepdim
            )
        },
        (
            E(((3,),), lambda np, x: np.linalg.norm(x), lambda t, x: t.linalg.norm(x), lambda x: x.norm()),
            E(
                ((2, 3),),
                lambda np, x: np.linalg.norm(x, axis=1),
                lambda t, x: t.linalg.norm(x, dim=1),
                lambda x: x.norm(dim=1),
            ),
            E(
                ((3,),),
                lambda np, x: np.linalg.norm(x, ord=3),
                lambda t, x: t.linalg.vector_norm(x, ord=3),
                lambda x: x.norm(p=3),
            ),
            E(((3,),), lambda np, x: np.linalg.norm(x, ord=1), lambda t, x: t.linalg.vector_norm(x, ord=1)),
            E(((2, 2),), lambda np, x: np.linalg.norm(x, "fro"), lambda t, x: t.linalg.norm(x, "fro")),
        ),
    ),
    Api(
        "logsumexp",
        {},
        {"logsumexp": lambda input, dim, keepdim=False, *, out=None: R.logsumexp(input, dim, keepdim)},
        {"logsumexp": lambda self, dim, keepdim=False: R.logsumexp(self, dim, keepdim)},
        (E(((2, 3),), None, lambda t, x: t.logsumexp(x, dim=1), lambda x: x.logsumexp(1)),),
    ),
    Api(
        "var",
        {"var": R._np_moment(R.var)},
        {"var": R._torch_moment(R.var)},
        {"var": _method_var(R.var)},
        (
            E(
                ((2, 3),),
                lambda np, x: np.var(x, axis=1, ddof=1),
                lambda t, x: t.var(x, dim=1),
                lambda x: x.var(dim=1),
            ),
            E(((4,),), lambda np, x: np.var(x), lambda t, x: t.var(x, correction=0)),
        ),
    ),
    Api(
        "std",
        {"std": R._np_moment(R.std)},
        {"std": R._torch_moment(R.std)},
        {"std": _method_var(R.std)},
        (
            E(
                ((2, 3),),
                lambda np, x: np.std(x, axis=0, ddof=1),
                lambda t, x: t.std(x, dim=0),
                lambda x: x.std(dim=0),
            ),
        ),
    ),
    Api(
        "cumsum",
        {"cumsum": lambda a, axis=None, dtype=None, out=None: R.cumsum(a, axis)},
        {"cumsum": lambda input, dim, *, dtype=None, out=None: R.cumsum(input, dim)},
        {
            "cumsum": lambda self, dim=None, *, axis=None, dtype=None: R.cumsum(
                self, dim if axis is None else axis
            )
        },
        (
            E(
                ((2, 3),),
                lambda np, x: np.cumsum(x**2, axis=1),
                lambda t, x: t.cumsum(x**2, dim=1),
                lambda x: (x**2).cumsum(1),
            ),
        ),
    ),
    Api(
        "cumprod",
        {"cumprod": lambda a, axis=None, dtype=None, out=None: R.cumprod(a, axis)},
        {"cumprod": lambda input, dim, *, dtype=None, out=None: R.cumprod(input, dim)},
        {
            "cumprod": lambda self, dim=None, *, axis=None, dtype=None: R.cumprod(
                self, dim if axis is None else axis
            )
        },
        (
            E(
                ((4,),),
                lambda np, x: np.cumprod(x, axis=0),
                lambda t, x: t.cumprod(x, dim=0),
                lambda x: x.cumprod(0),
            ),
        ),
    ),
    Api(
        "trace",
        {"trace": R.trace},
        {"trace": lambda input: R.trace(input)},
        {"trace": lambda self: R.trace(self)},
        (
            E(
                ((3, 3),),
                lambda np, x: np.trace(x @ x),
                lambda t, x: t.trace(x @ x),
                lambda x: (x @ x).trace(),
            ),
        ),
    ),
    Api(
        "diagonal",
        {"diagonal": S.diagonal},
        {"diagonal": lambda input, offset=0, dim1=0, dim2=1: S.diagonal(input, offset, dim1, dim2)},
        {"diagonal": lambda self, offset=0, dim1=0, dim2=1: S.diagonal(self, offset, dim1, dim2)},
        (
            E(
                ((3, 3),),
                lambda np, x: np.diagonal(x**2, 1),
                lambda t, x: t.diagonal(x**2, 1),
                lambda x: (x**2).diagonal(1),
            ),
        ),
    ),
    Api(
        "softmax",
        {},
        {"softmax": act._torch_softmax},
        {"softmax": lambda self, dim: R.softmax(self, dim)},
        (
            E(((2, 3),), None, lambda t, x: t.softmax(x, dim=1), lambda x: x.softmax(1)),
            E(((4,),), None, lambda t, x: t.nn.functional.softmax(x, dim=0)),
        ),
    ),
    Api(
        "log_softmax",
        {},
        {"log_softmax": act._torch_log_softmax},
        {"log_softmax": lambda self, dim: R.log_softmax(self, dim)},
        (E(((2, 3),), None, lambda t, x: t.log_softmax(x, dim=1), lambda x: x.log_softmax(1)),),
    ),
    Api(
        "activations",
        {},
        {k: v for k, v in act.TORCH_ACTIVATIONS.items() if k not in ("softmax", "log_softmax")},
        {},
        (
            E(((5,),), None, lambda t, x: t.nn.functional.softplus(x * 3, beta=2.0, threshold=1.0)),
            E(((5,),), None, lambda t, x: t.nn.functional.elu(x, alpha=0.7)),
            E(((5,),), None, lambda t, x: t.nn.functional.selu(x)),
            E(((5,),), None, lambda t, x: t.nn.functional.gelu(x)),
            E(((5,),), None, lambda t, x: t.nn.functional.gelu(x, approximate="tanh")),
            E(((5,),), None, lambda t, x: t.nn.functional.leaky_relu(x, 0.1)),
            E(((5,),), None, lambda t, x: t.nn.functional.silu(x)),
            E(((5,),), None, lambda t, x: t.nn.functional.logsigmoid(x)),
            E(((5,),), None, lambda t, x: t.nn.functional.relu(x) * x),
        ),
    ),
    Api(
        "matmul",
        {"matmul": A.matmul, "dot": A.matmul},
        {
            "matmul": A.matmul,
            "__matmul__": A.matmul,
            "mm": A.matmul,
            "mv": A.matmul,
            "dot": A.matmul,
            "__rmatmul__": A._rmatmul,
        },
        {
            "matmul": A.matmul,
            "dot": A.matmul,
            "mm": A.matmul,
            "mv": A.matmul,
            "__matmul__": A.matmul,
            "__rmatmul__": A._rmatmul,
        },
        (
            E(
                ((2, 3), (3, 2)),
                lambda np, a, b: np.matmul(a, b),
                lambda t, a, b: t.matmul(a, b),
                lambda a, b: a @ b,
            ),
            E(
                ((3, 3), (3,)),
                lambda np, a, b: np.dot(a, b),
                lambda t, a, b: t.mv(a, b),
                lambda a, b: a.mv(b),
            ),
        ),
    ),
    Api(
        "einsum",
        {"einsum": linalg.einsum},
        {"einsum": linalg.einsum},
        {},
        (
            E(
                ((2, 3), (3, 4)),
                lambda np, a, b: np.einsum("ij,jk->ik", a, b),
                lambda t, a, b: t.einsum("ij,jk->ik", a, b),
            ),
            E(((3, 3),), lambda np, a: np.einsum("ii->", a * a), lambda t, a: t.einsum("ii->", a * a)),
        ),
    ),
    Api(
        "tensordot",
        {"tensordot": linalg.tensordot},
        {"tensordot": linalg._torch_tensordot},
        {},
        (
            E(
                ((2, 3, 4), (3, 4)),
                lambda np, a, b: np.tensordot(a, b, 2),
                lambda t, a, b: t.tensordot(a, b, 2),
            ),
        ),
    ),
    Api(
        "vdot",
        {"vdot": linalg.vdot},
        {"vdot": linalg.vdot},
        {},
        (E(((3,), (3,)), lambda np, a, b: np.vdot(a, b), lambda t, a, b: t.vdot(a, b)),),
    ),
    Api(
        "inner",
        {"inner": linalg.inner},
        {"inner": linalg.inner},
        {"inner": linalg.inner},
        (
            E(
                ((2, 3), (3,)),
                lambda np, a, b: np.inner(a, b),
                lambda t, a, b: t.inner(a, b),
                lambda a, b: a.inner(b),
            ),
        ),
    ),
    Api(
        "outer",
        {"outer": linalg.outer},
        {"outer": linalg.outer, "ger": linalg.outer},
        {"outer": linalg.outer},
        (
            E(
                ((2,), (3,)),
                lambda np, a, b: np.outer(a, b),
                lambda t, a, b: t.outer(a, b),
                lambda a, b: a.outer(b),
            ),
        ),
    ),
    Api(
        "cross",
        {"cross": linalg.cross},
        {"cross": linalg._torch_cross, "linalg_cross": linalg._torch_cross},
        {"cross": linalg._torch_cross},
        (E(((3,), (3,)), lambda np, a, b: np.cross(a, b), lambda t, a, b: t.linalg.cross(a, b)),),
    ),
    Api(
        "kron",
        {"kron": linalg.kron},
        {"kron": linalg.kron},
        {"kron": linalg.kron},
        (E(((2, 2), (2, 3)), lambda np, a, b: np.kron(a, b), lambda t, a, b: t.kron(a, b)),),
    ),
    Api(
        "det",
        {"linalg.det": linalg.det},
        {"det": linalg.det, "linalg_det": linalg.det},
        {"det": linalg.det},
        (E(((3, 3),), lambda np, a: np.linalg.det(a), lambda t, a: t.linalg.det(a), lambda a: a.det()),),
    ),
    Api(
        "inv",
        {"linalg.inv": linalg.inv},
        {"inverse": linalg.inv, "linalg_inv": linalg.inv},
        {"inverse": linalg.inv},
        (
            E(
                ((3, 3),),
                lambda np, a: np.linalg.inv(a + 3 * np.eye(3)),
                lambda t, a: t.linalg.inv(a + 3 * t.eye(3, dtype=t.float64)),
            ),
        ),
    ),
    Api(
        "solve",
        {"linalg.solve": linalg.solve},
        {"linalg_solve": lambda A_, B, *, left=True, out=None: linalg.solve(A_, B)},
        {},
        (
            E(
                ((2, 2), (2,)),
                lambda np, a, b: np.linalg.solve(a + 2 * np.eye(2), b),
                lambda t, a, b: t.linalg.solve(a + 2 * t.eye(2, dtype=t.float64), b),
            ),
        ),
    ),
    Api(
        "cholesky",
        {"linalg.cholesky": linalg._np_cholesky},
        {
            "linalg_cholesky": lambda A_, *, upper=False, out=None: linalg.cholesky(A_, upper),
            "cholesky": linalg.cholesky,
        },
        {"cholesky": linalg.cholesky},
        (
            E(
                ((2, 2),),
                lambda np, a: np.linalg.cholesky(a @ a.T + 2 * np.eye(2)),
                lambda t, a: t.linalg.cholesky(a @ a.T + 2 * t.eye(2, dtype=t.float64)),
            ),
        ),
    ),
    Api(
        "reshape",
        {"reshape": A._np_reshape, "ravel": lambda a, order="C": A.reshape(a, -1)},
        {
            "reshape": lambda input, shape: A.reshape(input, shape),
            "view": lambda input, *shape: A.reshape(input, *shape),
            "flatten": A.flatten,
            "ravel": lambda input: A.reshape(input, -1),
        },
        {
            "reshape": A.reshape,
            "view": A.reshape,
            "flatten": A.flatten,
            "ravel": lambda self: A.reshape(self, -1),
            "view_as": lambda self, other: A.reshape(self, other.shape),
            "reshape_as": lambda self, other: A.reshape(self, other.shape),
        },
        (
            E(
                ((2, 3),),
                lambda np, x: np.reshape(x * x, (3, 2)),
                lambda t, x: t.reshape(x * x, (3, 2)),
                lambda x: (x * x).view(3, 2),
            ),
            E(
                ((2, 3),),
                lambda np, x: np.ravel(x) ** 2,
                lambda t, x: t.flatten(x) ** 2,
                lambda x: x.flatten() ** 2,
            ),
        ),
    ),
    Api(
        "transpose",
        {"transpose": A._np_transpose, "swapaxes": A.swapaxes, "moveaxis": A.moveaxis},
        {
            "transpose": A.swapaxes,
            "swapaxes": A.swapaxes,
            "permute": lambda input, dims: A.permute(input, dims),
            "movedim": A.moveaxis,
            "moveaxis": A.moveaxis,
            "t": lambda input: A._method_transpose(input),
        },
        {
            "transpose": A._method_transpose,
            "permute": A.permute,
            "swapaxes": A.swapaxes,
            "t": lambda self: A._method_transpose(self),
            "movedim": A.moveaxis,
        },
        (
            E(
                ((2, 3, 4),),
                lambda np, x: np.transpose(x, (2, 0, 1)),
                lambda t, x: t.permute(x, (2, 0, 1)),
                lambda x: x.permute(2, 0, 1),
            ),
            E(((2, 3, 4),), lambda np, x: np.moveaxis(x, 0, -1), lambda t, x: t.movedim(x, 0, -1)),
            E(
                ((2, 3),),
                lambda np, x: np.swapaxes(x, 0, 1),
                lambda t, x: t.transpose(x, 0, 1),
                lambda x: x.T,
            ),
        ),
    ),
    Api(
        "concatenate",
        {
            "concatenate": A.concatenate,
            "stack": A.stack,
            "hstack": S.hstack,
            "vstack": S.vstack,
            "column_stack": S.column_stack,
        },
        {
            "cat": A._torch_cat,
            "concat": A._torch_cat,
            "concatenate": A._torch_cat,
            "stack": A._torch_stack,
            "hstack": S.hstack,
            "vstack": S.vstack,
            "column_stack": S.column_stack,
        },
        {},
        (
            E(((2,), (3,)), lambda np, a, b: np.concatenate([a, b**2]), lambda t, a, b: t.cat([a, b**2])),
            E(
                ((2,), (2,)),
                lambda np, a, b: np.stack([a, a * b], axis=1),
                lambda t, a, b: t.stack([a, a * b], dim=1),
            ),
            E(((2,), (2,)), lambda np, a, b: np.hstack([a, b]), lambda t, a, b: t.hstack([a, b])),
            E(((2,), (2,)), lambda np, a, b: np.vstack([a, b]), lambda t, a, b: t.vstack([a, b])),
            E(((2,), (2,)), lambda np, a, b: np.column_stack([a, b]), lambda t, a, b: t.column_stack([a, b])),
        ),
    ),
    Api(
        "split",
        {"split": S.split, "array_split": S.split},
        {"split": S.torch_split, "chunk": S.chunk},
        {
            "split": lambda self, split_size, dim=0: S.torch_split(self, split_size, dim),
            "chunk": lambda self, chunks, dim=0: S.chunk(self, chunks, dim),
        },
        (
            E(((6,),), lambda np, x: tuple(np.split(x, 3)), lambda t, x: t.split(x, 2), lambda x: x.split(2)),
            E(((5,),), None, lambda t, x: t.chunk(x, 2), lambda x: x.chunk(2)),
        ),
    ),
    Api(
        "squeeze",
        {
            "squeeze": lambda a, axis=None: A.squeeze(a, axis),
            "expand_dims": lambda a, axis: A.unsqueeze(a, axis),
        },
        {"squeeze": A.squeeze, "unsqueeze": A.unsqueeze},
        {"squeeze": A.squeeze, "unsqueeze": A.unsqueeze},
        (
            E(
                ((1, 3),),
                lambda np, x: np.expand_dims(np.squeeze(x) ** 2, 0),
                lambda t, x: t.unsqueeze(t.squeeze(x) ** 2, 0),
                lambda x: (x.squeeze() ** 2).unsqueeze(0),
            ),
        ),
    ),
    Api(
        "broadcast",
        {"broadcast_to": lambda array, shape, subok=False: A.broadcast_to(array, shape)},
        {"broadcast_to": A.broadcast_to, "expand": A.expand},
        {"expand": A.expand, "expand_as": lambda self, other: A.broadcast_to(self, other.shape)},
        (
            E(
                ((3,),),
                lambda np, x: np.broadcast_to(x, (2, 3)) * 2,
                lambda t, x: t.broadcast_to(x, (2, 3)) * 2,
                lambda x: x.expand(2, 3) * 2,
            ),
        ),
    ),
    Api(
        "flip",
        {"flip": S.flip, "roll": S.roll},
        {"flip": S._torch_flip, "roll": S._torch_roll},
        {
            "flip": lambda self, *dims: S._torch_flip(self, dims[0] if len(dims) == 1 else dims),
            "roll": lambda self, shifts, dims=None: S.roll(self, shifts, dims),
        },
        (
            E(
                ((2, 3),),
                lambda np, x: np.flip(x**2, 1),
                lambda t, x: t.flip(x**2, [1]),
                lambda x: (x**2).flip(1),
            ),
            E(
                ((4,),),
                lambda np, x: np.roll(x**2, 1),
                lambda t, x: t.roll(x**2, 1),
                lambda x: (x**2).roll(1),
            ),
        ),
    ),
    Api(
        "tile",
        {"tile": S.tile, "repeat": S.repeat},
        {"tile": S.tile, "repeat_interleave": S._torch_repeat_interleave},
        {"repeat": S._torch_repeat, "repeat_interleave": S._torch_repeat_interleave},
        (
            E(
                ((2,),),
                lambda np, x: np.tile(x**2, 3),
                lambda t, x: t.tile(x**2, (3,)),
                lambda x: (x**2).repeat(3),
            ),
            E(((2,),), lambda np, x: np.repeat(x**2, 2), lambda t, x: t.repeat_interleave(x**2, 2)),
        ),
    ),
    Api(
        "triangles",
        {"tril": S.tril, "triu": S.triu, "diag": S.diag, "diagflat": S.diagflat},
        {
            "tril": lambda input, diagonal=0: S.tril(input, diagonal),
            "triu": lambda input, diagonal=0: S.triu(input, diagonal),
            "diag": lambda input, diagonal=0: S.diag(input, diagonal),
            "diagflat": lambda input, offset=0: S.diagflat(input, offset),
        },
        {
            "tril": lambda self, diagonal=0: S.tril(self, diagonal),
            "triu": lambda self, diagonal=0: S.triu(self, diagonal),
        },
        (
            E(((3, 3),), lambda np, x: np.tril(x**2), lambda t, x: t.tril(x**2), lambda x: (x**2).tril()),
            E(((3, 3),), lambda np, x: np.triu(x, 1) * x, lambda t, x: t.triu(x, 1) * x),
            E(((3,),), lambda np, x: np.diag(x**2, 1), lambda t, x: t.diag(x**2, 1)),
            E(((3, 3),), lambda np, x: np.diag(x**2), lambda t, x: t.diag(x**2)),
        ),
    ),
    Api(
        "where",
        {"where": A.where, "clip": A._np_clip},
        {"where": A.where, "clamp": A.clamp, "clip": A.clamp},
        {"clamp": A.clamp, "clip": A.clamp},
        (
            E(((4,),), lambda np, x: np.where(x > 0, x**2, -x), lambda t, x: t.where(x > 0, x**2, -x)),
            E(
                ((5,),),
                lambda np, x: np.clip(x, -0.5, 0.5) * x,
                lambda t, x: t.clamp(x, -0.5, 0.5) * x,
                lambda x: x.clip(-0.5, 0.5) * x,
            ),
        ),
    ),
    Api(
        "like",
        {
            "zeros_like": lambda a, dtype=None, **kw: A.zeros_like(a, dtype),
            "ones_like": lambda a, dtype=None, **kw: A.ones_like(a, dtype),
            "full_like": S.full_like,
        },
        {"zeros_like": A.zeros_like, "ones_like": A.ones_like, "full_like": S.full_like},
        {},
        (
            E(
                ((3,),),
                lambda np, x: x * np.full_like(x, 2.5) + np.ones_like(x),
                lambda t, x: x * t.full_like(x, 2.5) + t.ones_like(x),
            ),
        ),
    ),
    Api(
        "metadata",
        {
            "shape": lambda a: A._as_var(a).shape,
            "ndim": lambda a: A._as_var(a).ndim,
            "size": lambda a, axis=None: A._as_var(a).numel() if axis is None else A._as_var(a).shape[axis],
        },
        {
            "numel": lambda input: A._as_var(input).numel(),
            "__getitem__": A.getitem,
            "__setitem__": A.setitem,
            "clone": lambda input, **kw: A.EW["pos"](input),
        },
        {},
    ),
    Api(
        "random",
        {},
        {
            n: _random(f"torch.{n}")
            for n in (
                "rand_like",
                "randn_like",
                "randint_like",
                "bernoulli",
                "normal",
                "poisson",
                "multinomial",
                "dropout",
            )
        },
        {n: _random(f".{n}()") for n in ("uniform_", "normal_", "bernoulli_", "random_")},
    ),
    Api(
        "sort",
        {
            n: _untraceable(f"numpy.{n}", _ORDER_ADVICE)
            for n in (
                "sort",
                "argsort",
                "argmax",
                "argmin",
                "nonzero",
                "argwhere",
                "unique",
                "searchsorted",
                "median",
            )
        },
        {
            n: _untraceable(f"torch.{n}", _ORDER_ADVICE)
            for n in (
                "sort",
                "argsort",
                "argmax",
                "argmin",
                "nonzero",
                "unique",
                "searchsorted",
                "topk",
                "median",
                "kthvalue",
            )
        },
        {
            n: _untraceable(f".{n}()", _ORDER_ADVICE)
            for n in ("sort", "argsort", "argmax", "argmin", "nonzero", "topk", "median")
        },
    ),
    Api(
        "boolean reductions",
        {n: _boolean(f"numpy.{n}") for n in ("any", "all")},
        {n: _boolean(f"torch.{n}") for n in ("any", "all")},
        {n: _boolean(f".{n}()") for n in ("any", "all")},
    ),
)

# --- issue 13: the operations practitioners reached for ---------------------------------------

from . import curves as C  # noqa: E402
from . import indexing as I  # noqa: E402
from . import scipy_ops  # noqa: E402


def _ix(t, values):
    return t.tensor(values) if t is not np else np.array(values)


def _torch_interp_oracle(t, x):
    xp = t.tensor([-1.0, -0.2, 0.3, 1.0], dtype=t.float64)
    fp = t.tensor([0.5, -1.0, 2.0, 0.0], dtype=t.float64)
    k = t.searchsorted(xp, x.detach(), right=True).clamp(1, 3)
    return fp[k - 1] + (fp[k] - fp[k - 1]) / (xp[k] - xp[k - 1]) * (x - xp[k - 1])


def _scipy():
    import scipy.linalg
    import scipy.special

    return scipy


def _cdist_oracle(p):
    return lambda t, a, b: (a.unsqueeze(-2) - b.unsqueeze(-3)).abs().pow(p).sum(-1).pow(1 / p)


def _torch_polyval_oracle(t, x):
    return 2.0 * x**3 - 1.5 * x**2 + 0.5 * x + 3.0


ISSUE13_API = (
    Api(
        "diff",
        {"diff": lambda a, n=1, axis=-1, prepend=None, append=None: S.diff(a, n, axis, prepend, append)},
        {"diff": S._torch_diff},
        {"diff": lambda self, n=1, dim=-1, prepend=None, append=None: S.diff(self, n, dim, prepend, append)},
        (
            E(((5,),), lambda np, x: np.diff(x**2), lambda t, x: t.diff(x**2), lambda x: (x**2).diff()),
            E(
                ((3, 4),),
                lambda np, x: np.diff(x**3, n=2, axis=0),
                lambda t, x: t.diff(x**3, n=2, dim=0),
                lambda x: (x**3).diff(n=2, dim=0),
            ),
            E(
                ((4,),),
                lambda np, x: np.diff(x * x, prepend=x[:1], append=0.5),
                lambda t, x: t.diff(x * x, prepend=x[:1], append=t.tensor([0.5], dtype=t.float64)),
            ),
        ),
    ),
    Api(
        "pad",
        {"pad": S.pad},
        {"pad": S.torch_pad},
        {},
        (
            E(
                ((2, 3),),
                lambda np, x: np.pad(x**2, 1, constant_values=1.5),
                lambda t, x: t.nn.functional.pad(x**2, (1, 1, 1, 1), value=1.5),
            ),
            E(
                ((2, 4),),
                lambda np, x: np.pad(x**2, ((0, 0), (2, 1)), mode="reflect"),
                lambda t, x: t.nn.functional.pad(x**2, (2, 1), mode="reflect"),
            ),
            E(
                ((2, 3),),
                lambda np, x: np.pad(x**2, ((0, 0), (2, 2)), mode="edge"),
                lambda t, x: t.nn.functional.pad(x**2, (2, 2), mode="replicate"),
            ),
            E(
                ((1, 2, 3),),
                lambda np, x: np.pad(x**2, ((0, 0), (1, 2), (2, 1)), mode="wrap"),
                lambda t, x: t.nn.functional.pad(x**2, (2, 1, 1, 2), mode="circular"),
            ),
            E(((2, 4),), None, lambda t, x: t.nn.functional.pad(x**2, (-1, 2))),
        ),
    ),
    Api(
        "atleast_nd",
        {"atleast_1d": S.atleast_1d, "atleast_2d": S.atleast_2d, "atleast_3d": S.atleast_3d},
        {"atleast_1d": S.atleast_1d, "atleast_2d": S.atleast_2d, "atleast_3d": S.atleast_3d},
        {},
        (
            E(((3,),), lambda np, x: np.atleast_2d(x**2), lambda t, x: t.atleast_2d(x**2)),
            E(((3,),), lambda np, x: np.atleast_3d(x**2), lambda t, x: t.atleast_3d(x**2)),
            E(((2, 3),), lambda np, x: np.atleast_3d(x**2), lambda t, x: t.atleast_3d(x**2)),
            E(((), (2,)), lambda np, a, b: np.atleast_1d(a, b), lambda t, a, b: t.atleast_1d(a, b)),
        ),
    ),
    Api(
        "indexing",
        {"take": I.take, "take_along_axis": I.take_along_axis},
        {
            "take": I.torch_take,
            "take_along_dim": I.take_along_dim,
            "index_select": I.index_select,
            "gather": I.torch_gather,
            "narrow": I.narrow,
            "select": I.select,
        },
        {
            "take": lambda self, index, axis=None, **kw: I.take(self, index, axis, **kw),
            "take_along_dim": lambda self, indices, dim=None: I.take_along_dim(self, indices, dim),
            "index_select": lambda self, dim, index: I.index_select(self, dim, index),
            "gather": lambda self, dim, index, **kw: I.torch_gather(self, dim, index, **kw),
            "narrow": lambda self, dim, start, length: I.narrow(self, dim, start, length),
            "select": lambda self, dim, index: I.select(self, dim, index),
        },
        (
            E(
                ((2, 3),),
                lambda np, x: np.take(x**2, _ix(np, [5, 0, 0, 2])),
                lambda t, x: t.take(x**2, _ix(t, [5, 0, 0, 2])),
                lambda x: (x**2).take(_ix(np, [5, 0, 0, 2])),
            ),
            E(
                ((3, 2),),
                lambda np, x: np.take(x**2, _ix(np, [2, 0, 2]), axis=0),
                lambda t, x: t.index_select(x**2, 0, _ix(t, [2, 0, 2])),
                lambda x: (x**2).index_select(0, _ix(np, [2, 0, 2])),
            ),
            E(
                ((2, 3),),
                lambda np, x: np.take_along_axis(x**2, _ix(np, [[0, 2], [1, 1]]), 1),
                lambda t, x: t.gather(x**2, 1, _ix(t, [[0, 2], [1, 1]])),
                lambda x: (x**2).gather(1, _ix(np, [[0, 2], [1, 1]])),
            ),
            E(
                ((2, 3),),
                lambda np, x: np.take_along_axis(x**2, _ix(np, [[1, 0, 1]]), 0),
                lambda t, x: t.take_along_dim(x**2, _ix(t, [[1, 0, 1]]), 0),
                lambda x: (x**2).take_along_dim(_ix(np, [[1, 0, 1]]), 0),
            ),
            E(((3, 2),), None, lambda t, x: t.gather(x**2, 0, _ix(t, [[2, 0]]))),
            E(
                ((4, 3),),
                lambda np, x: (x**2)[1:3],
                lambda t, x: t.narrow(x**2, 0, 1, 2),
                lambda x: (x**2).narrow(0, 1, 2),
            ),
            E(
                ((2, 3),),
                lambda np, x: (x**2)[:, -1],
                lambda t, x: t.select(x**2, 1, -1),
                lambda x: (x**2).select(1, -1),
            ),
        ),
    ),
    Api(
        "fliplr",
        {"fliplr": S.fliplr, "flipud": S.flipud},
        {"fliplr": S.fliplr, "flipud": S.flipud},
        {"fliplr": S.fliplr, "flipud": S.flipud},
        (
            E(
                ((2, 3),),
                lambda np, x: np.fliplr(x**2),
                lambda t, x: t.fliplr(x**2),
                lambda x: (x**2).fliplr(),
            ),
            E(
                ((3, 2),),
                lambda np, x: np.flipud(x**2),
                lambda t, x: t.flipud(x**2),
                lambda x: (x**2).flipud(),
            ),
        ),
    ),
    Api(
        "diag_embed",
        {},
        {"diag_embed": S.diag_embed},
        {"diag_embed": S.diag_embed},
        (
            E(((2, 3),), None, lambda t, x: t.diag_embed(x**2), lambda x: (x**2).diag_embed()),
            E(((2, 2),), None, lambda t, x: t.diag_embed(x**2, offset=-1, dim1=0, dim2=2)),
        ),
    ),
    Api(
        "expand_dims",
        {"expand_dims": S.expand_dims},
        {},
        {},
        (
            E(
                ((3,),),
                lambda np, x: np.expand_dims(x**2, (0, 2)),
                None,
                oracle=lambda t, x: (x**2).reshape(1, 3, 1),
            ),
        ),
    ),
    Api(
        "curves",
        {"polyval": C.polyval, "interp": C.interp},
        {},
        {},
        (
            E(
                ((4,),),
                lambda np, x: np.polyval(np.array([2.0, -1.5, 0.5, 3.0]), x),
                None,
                oracle=_torch_polyval_oracle,
            ),
            E(
                ((5,),),
                lambda np, x: np.interp(x, [-1.0, -0.2, 0.3, 1.0], [0.5, -1.0, 2.0, 0.0]),
                None,
                oracle=_torch_interp_oracle,
                low=-0.95,
                high=0.95,
            ),
        ),
    ),
    Api(
        "cdist",
        {},
        {"cdist": linalg.cdist},
        {},
        (
            # torch's cdist has no second derivative: the oracle spells the distances out
            E(((3, 2), (4, 2)), None, lambda t, a, b: t.cdist(a, b), oracle=_cdist_oracle(2.0)),
            E(((2, 3, 2), (2, 2, 2)), None, lambda t, a, b: t.cdist(a, b, p=1.0), oracle=_cdist_oracle(1.0)),
            E(((3, 2), (2, 2)), None, lambda t, a, b: t.cdist(a, b, p=3.0), oracle=_cdist_oracle(3.0)),
        ),
    ),
    Api(
        "addmm",
        {},
        {
            "bmm": linalg.bmm,
            "baddbmm": linalg.baddbmm,
            "addbmm": linalg.addbmm,
            "addmm": linalg.addmm,
            "addmv": linalg.addmv,
            "addr": linalg.addr,
        },
        {
            "bmm": linalg.bmm,
            "baddbmm": linalg.baddbmm,
            "addbmm": linalg.addbmm,
            "addmm": linalg.addmm,
            "addmv": linalg.addmv,
            "addr": linalg.addr,
        },
        (
            E(((2, 2, 3), (2, 3, 2)), None, lambda t, a, b: t.bmm(a, b), lambda a, b: a.bmm(b)),
            E(
                ((2, 2, 2), (2, 2, 3)),
                None,
                lambda t, a, b: t.baddbmm(a[:, :, :1], a, b, beta=0.5, alpha=2.0),
                lambda a, b: a[:, :, :1].baddbmm(a, b, beta=0.5, alpha=2.0),
            ),
            E(((2, 2, 3), (2, 3, 2)), None, lambda t, a, b: t.addbmm(a[0, :, :2], a, b, alpha=0.5)),
            E(
                ((2, 3), (3, 2)),
                None,
                lambda t, a, b: t.addmm(b[:2].T, a, b, beta=3.0),
                lambda a, b: b[:2].T.addmm(a, b, beta=3.0),
            ),
            E(((2, 3), (3,)), None, lambda t, a, b: t.addmv(a[:, 0], a, b, beta=0.0)),
            E(((2,), (3,)), None, lambda t, a, b: t.addr(a[:, None] * b, a, b, alpha=-1.0)),
        ),
    ),
    Api(
        "matrix_exp",
        {"scipy.linalg.expm": lambda A, q=None: linalg.matrix_exp(A)},
        {"linalg_matrix_exp": linalg.matrix_exp, "matrix_exp": linalg.matrix_exp},
        {"matrix_exp": linalg.matrix_exp},
        (
            # 2 x 2 keeps the Hessian's kernel small (see symjac.trace.matrixexp on sizes)
            E(
                ((2, 2),),
                lambda np, x: _scipy().linalg.expm(2.0 * x),
                lambda t, x: t.linalg.matrix_exp(2.0 * x),
            ),
        ),
    ),
    Api(
        "matrix_norm",
        {},
        {"linalg_matrix_norm": linalg.matrix_norm},
        {},
        (
            E(((2, 3),), None, lambda t, x: t.linalg.matrix_norm(x)),
            E(((2, 3, 3),), None, lambda t, x: t.linalg.matrix_norm(x, ord=1)),
            E(((3, 2),), None, lambda t, x: t.linalg.matrix_norm(x, ord=float("inf"), keepdim=True)),
        ),
    ),
    Api(
        "torch_norm",
        {},
        {},
        {},
        (
            E(((2, 3),), None, lambda t, x: t.norm(x), lambda x: x.norm()),
            E(((2, 3),), None, lambda t, x: t.norm(x, p=1, dim=1), lambda x: x.norm(p=1, dim=1)),
            E(((2, 3),), None, lambda t, x: t.norm(x, dim=(0, 1), keepdim=True)),
            E(((2, 3),), None, lambda t, x: t.norm(x, p=3.0, dim=0)),
            E(((2, 3),), None, lambda t, x: t.linalg.vector_norm(x, ord=1.5, dim=(0, 1))),
        ),
    ),
    Api(
        "special",
        {},
        {
            "special_logsumexp": lambda input, dim, keepdim=False, *, out=None: R.logsumexp(
                input, dim, keepdim
            ),
            "special_softmax": act._torch_softmax,
            "special_log_softmax": act._torch_log_softmax,
        },
        {},
        (
            E(((2, 3),), None, lambda t, x: t.special.logsumexp(x, 1)),
            E(((2, 3),), None, lambda t, x: t.special.softmax(x, dim=0)),
            E(((2, 3),), None, lambda t, x: t.special.log_softmax(x, dim=1)),
        ),
    ),
    Api(
        "scipy",
        {
            "scipy.special.logsumexp": scipy_ops.logsumexp,
            "scipy.special.softmax": scipy_ops.softmax,
            "scipy.special.log_softmax": scipy_ops.log_softmax,
        },
        {},
        {},
        (
            E(
                ((2, 3),),
                lambda np, x: _scipy().special.logsumexp(x, axis=1),
                None,
                oracle=lambda t, x: t.logsumexp(x, 1),
            ),
            E(
                ((2, 3),),
                lambda np, x: _scipy().special.logsumexp(x, b=np.array([0.5, 0.0, 2.0])),
                None,
                oracle=lambda t, x: t.logsumexp(
                    x + t.log(t.tensor([0.5, 0.0, 2.0], dtype=t.float64)), (0, 1)
                ),
            ),
            E(
                ((2, 3),),
                lambda np, x: _scipy().special.softmax(x),
                None,
                oracle=lambda t, x: t.softmax(x.reshape(-1), 0).reshape(2, 3),
            ),
            E(
                ((2, 3),),
                lambda np, x: _scipy().special.log_softmax(x, axis=0),
                None,
                oracle=lambda t, x: t.log_softmax(x, 0),
            ),
        ),
    ),
    Api(
        "methods",
        {},
        {"masked_fill": A.masked_fill},
        {
            "where": A._method_where,
            "tile": lambda self, *reps: S.tile(self, _reps(reps)),
            "diag": lambda self, diagonal=0: S.diag(self, diagonal),
            "diagflat": lambda self, offset=0: S.diagflat(self, offset),
            "moveaxis": A.moveaxis,
            "broadcast_to": A.broadcast_to,
            "vdot": linalg.vdot,
            "new_zeros": A.new_zeros,
            "new_ones": A.new_ones,
            "new_full": A.new_full,
            "zero_": A.zero_,
            "fill_": A.fill_,
            "masked_fill": A.masked_fill,
        },
        (
            E(((4,),), None, lambda t, x: t.where(x > 0, x**2, -x), lambda x: (x**2).where(x > 0, -x)),
            E(((2,),), None, lambda t, x: t.tile(x**2, (2, 2)), lambda x: (x**2).tile(2, 2)),
            E(((3,),), None, lambda t, x: t.diag(x**2, -1), lambda x: (x**2).diag(-1)),
            E(((2, 2),), None, lambda t, x: t.diagflat(x**2), lambda x: (x**2).diagflat()),
            E(((2, 3),), None, lambda t, x: t.moveaxis(x**2, 0, 1), lambda x: (x**2).moveaxis(0, 1)),
            E(
                ((3,),),
                None,
                lambda t, x: t.broadcast_to(x**2, (2, 3)),
                lambda x: (x**2).broadcast_to((2, 3)),
            ),
            E(((3,), (3,)), None, lambda t, a, b: t.vdot(a, b * a), lambda a, b: a.vdot(b * a)),
            E(
                ((3,),),
                None,
                lambda t, x: x * t.zeros(3, dtype=t.float64) + x * t.full((3,), 2.0, dtype=t.float64) + 1.0,
                lambda x: x * x.new_zeros(3) + x * x.new_full((3,), 2.0) + x.new_ones((3,)),
            ),
            E(
                ((3,),),
                None,
                lambda t, x: x**2 + 0.0 * x,
                lambda x: x**2 + x.clone().zero_(),
            ),
            E(
                ((4,),),
                None,
                lambda t, x: t.masked_fill(x**2, x > 0, 0.5),
                lambda x: (x**2).masked_fill(x > 0, 0.5),
            ),
        ),
    ),
)


def _reps(reps):
    return tuple(reps[0]) if len(reps) == 1 and isinstance(reps[0], (tuple, list)) else reps


API = API + ISSUE13_API


# Reflected operators: torch calls these names when a constant tensor is the left operand.
REFLECTED = {
    "__rsub__": A._swap(A.EW["sub"]),
    "__rtruediv__": A._swap(A.EW["div"]),
    "__rpow__": A._swap(A.EW["pow"]),
    "__rfloordiv__": A._swap(A.EW["floor_divide"]),
    "__rmod__": A._swap(A.EW["remainder"]),
}

# Methods and operators with no NumPy/torch function of their own.
METHODS = {
    **REFLECTED,
    "double": lambda self: A.cast(self, np.float64),
    "float": lambda self: A.cast(self, np.float32),
    "long": lambda self: A.cast(self, np.int64),
    "int": lambda self: A.cast(self, np.int32),
    "astype": lambda self, dtype, **kw: A.cast(self, dtype),
    "type": lambda self, dtype: A.cast(self, dtype),
    "to": A._method_to,
    "clone": lambda self, **kw: A.EW["pos"](self),
    "copy": lambda self, **kw: A.EW["pos"](self),
    "contiguous": lambda self, **kw: self,
    "cpu": lambda self: self,
    "requires_grad_": lambda self, flag=True: self,
    "__getitem__": A.getitem,
    "__setitem__": A.setitem,
    "__radd__": A._swap(A.EW["add"]),
    "__rmul__": A._swap(A.EW["mul"]),
    "__add__": A.EW["add"],
    "__sub__": A.EW["sub"],
    "__mul__": A.EW["mul"],
    "__truediv__": A.EW["div"],
    "__floordiv__": A.EW["floor_divide"],
    "__mod__": A.EW["remainder"],
    "__pow__": A.EW["pow"],
    "__neg__": A.EW["neg"],
    "__pos__": A.EW["pos"],
    "__abs__": A.EW["abs"],
    "__gt__": A.EW["greater"],
    "__ge__": A.EW["greater_equal"],
    "__lt__": A.EW["less"],
    "__le__": A.EW["less_equal"],
    "__eq__": A.EW["equal"],
    "__ne__": A.EW["not_equal"],
    "__and__": A.EW["logical_and"],
    "__or__": A.EW["logical_or"],
    "__invert__": A.EW["logical_not"],
}

TORCH_REFLECTED = {**REFLECTED, "rsub": REFLECTED["__rsub__"], "__rdiv__": REFLECTED["__rtruediv__"]}


# --- torch.nn forms and array assembly (issue 13, items 1-3) -----------------------------------
# nn modules call the F.* forms of symjac.trace.torchnn; symjac.trace.assembly makes constant arrays that
# receive traced values traced. Kept in one block so that other additions merge cleanly.

_W = np.linspace(-1.0, 1.0, 12).reshape(4, 3)  # fixed weights for the examples: (out 4, in 3)
_B = np.linspace(0.5, -0.5, 4)
_W3 = np.linspace(-1.0, 1.0, 24).reshape(2, 3, 4)  # bilinear (out 2, in1 3, in2 4)


def _t(t, a):
    return t.as_tensor(a, dtype=t.float64)


NN_API = (
    Api(
        "nn.functional",
        {},
        dict(nn.TORCH_FUNCTIONAL),
        {},
        (
            E(((2, 3),), None, lambda t, x: t.nn.functional.linear(x, _t(t, _W), _t(t, _B))),
            E(((3,),), None, lambda t, x: t.nn.functional.linear(x, _t(t, _W))),
            E(
                ((3,), (4,)),
                None,
                lambda t, x, y: t.nn.functional.bilinear(x, y, _t(t, _W3), _t(t, _B[:2])),
            ),
            E(
                ((2, 4),),
                None,
                lambda t, x: t.nn.functional.layer_norm(x, (4,), _t(t, _B), _t(t, _B[::-1].copy())),
            ),
            E(((2, 4),), None, lambda t, x: t.nn.functional.layer_norm(x, (2, 4))),
            E(((2, 4),), None, lambda t, x: t.nn.functional.rms_norm(x, (4,), _t(t, _B), 1e-6)),
            E(((2, 3),), None, lambda t, x: t.nn.functional.normalize(x, dim=1)),
            E(((2, 3),), None, lambda t, x: t.nn.functional.normalize(x, p=1.0, dim=0)),
            E(((2, 3), (2, 3)), None, lambda t, x, y: t.nn.functional.mse_loss(x, y)),
            E(((2, 3), (2, 3)), None, lambda t, x, y: t.nn.functional.mse_loss(x, y, reduction="none")),
            E(((2, 3), (2, 3)), None, lambda t, x, y: t.nn.functional.l1_loss(x, y, reduction="sum")),
            E(((5,), (5,)), None, lambda t, x, y: t.nn.functional.huber_loss(2 * x, y, delta=0.5)),
            E(((5,), (5,)), None, lambda t, x, y: t.nn.functional.smooth_l1_loss(2 * x, y, beta=0.5)),
            E(((4,),), None, lambda t, x: t.nn.functional.dropout(x, 0.3, training=False)),
            E(((5,),), None, lambda t, x: t.nn.functional.mish(2 * x)),
            E(((5,),), None, lambda t, x: t.nn.functional.softsign(2 * x)),
            E(((5,),), None, lambda t, x: t.nn.functional.tanhshrink(2 * x)),
            E(((5,),), None, lambda t, x: t.nn.functional.celu(2 * x, alpha=0.5)),
            E(((5,),), None, lambda t, x: t.nn.functional.threshold(2 * x, 0.3, -1.0)),
            E(((5,),), None, lambda t, x: t.nn.functional.softshrink(2 * x, 0.4)),
            E(((5,),), None, lambda t, x: t.nn.functional.hardshrink(2 * x, 0.4)),
            E(((2, 4),), None, lambda t, x: t.nn.functional.glu(x)),
            E(((2, 3),), None, lambda t, x: t.nn.functional.softmin(x, dim=1)),
            E(((2, 3), (2, 3)), None, lambda t, x, y: t.nn.functional.cosine_similarity(x, y)),
        ),
    ),
    Api(
        "assembly",
        {**assembly.NUMPY_API},
        {**assembly.TORCH_API},
        {**assembly.METHODS},
        (
            E(
                ((3, 3),),
                lambda np, x: _fill_diagonal_example(np, x),
                lambda t, x: x.clone().fill_diagonal_(0.0) * x,
                lambda x: x.clone().fill_diagonal_(0.0) * x,
            ),
            E(
                ((4,),),
                None,
                lambda t, x: t.masked_fill(x**2, x > 0, 0.5),
                lambda x: (x**2).masked_fill(x > 0, 0.5),
            ),
            E(
                ((3,),),
                None,
                lambda t, x: x.new_zeros(3) + x.new_ones((3,)) * x + x.new_full((3,), 2.0) * x,
                lambda x: x.new_zeros(3) + x.new_ones((3,)) * x + x.new_full((3,), 2.0) * x,
            ),
        ),
    ),
)


def _fill_diagonal_example(np, x):
    y = x * 1.0
    np.fill_diagonal(y, 0.0)
    return y * x


API = API + NN_API


def register():
    """Fill ops.NUMPY_API / TORCH_API / METHODS and attach the methods to Var."""
    for e in ops.ELEMENTWISE_OPS:
        fn = A.EW[e.name]
        for n in e.numpy:
            ops.NUMPY_API[n] = fn
        for n in e.torch:
            ops.TORCH_API[n] = fn
        for n in e.methods + e.numpy:
            ops.METHODS.setdefault(n, fn)
    for api in API:
        ops.NUMPY_API.update(api.numpy)
        ops.TORCH_API.update(api.torch)
        ops.METHODS.update(api.methods)
    ops.TORCH_API.update(TORCH_REFLECTED)
    ops.METHODS.update(METHODS)
    ops.METHODS.update(assembly.METHODS)
    for name, fn in ops.METHODS.items():
        setattr(Var, name, fn)
    Var.T = property(lambda self: A.permute(self, tuple(reversed(range(self.ndim)))))
    Var.mT = property(lambda self: A.swapaxes(self, -2, -1))


register()
