"""Functions the tests run in all three calling styles, with torch as the oracle.

Each case gives the function once per style: ``methods`` (torch-style methods, also valid
torch code) and ``fn(ns)`` written against a namespace that is NumPy or torch.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np


def _cast(a, dtype):
    return a.astype(dtype) if a.dtype.kind == "f" else a


def numpy_ns(dtype=np.float64):
    return types.SimpleNamespace(
        exp=np.exp,
        log=np.log,
        sin=np.sin,
        cos=np.cos,
        tan=np.tan,
        tanh=np.tanh,
        sqrt=np.sqrt,
        abs=np.abs,
        arctan2=np.arctan2,
        arctan=np.arctan,
        sinh=np.sinh,
        cosh=np.cosh,
        log1p=np.log1p,
        expm1=np.expm1,
        square=np.square,
        maximum=np.maximum,
        minimum=np.minimum,
        where=np.where,
        clip=np.clip,
        hypot=np.hypot,
        arcsin=np.arcsin,
        arccos=np.arccos,
        reciprocal=np.reciprocal,
        sum=lambda x, d=None, keep=False: np.sum(x, axis=d, keepdims=keep),
        mean=lambda x, d=None: np.mean(x, axis=d),
        prod=lambda x, d=None: np.prod(x, axis=d),
        matmul=np.matmul,
        dot=np.dot,
        stack=lambda xs, d=0: np.stack(xs, axis=d),
        cat=lambda xs, d=0: np.concatenate(xs, axis=d),
        reshape=np.reshape,
        swap=lambda x: np.swapaxes(x, -1, -2),
        permute=np.transpose,
        squeeze=np.squeeze,
        unsqueeze=np.expand_dims,
        power=np.power,
        pow=np.power,
        c=lambda a: _cast(a, dtype),
    )


def torch_ns(dtype=np.float64):
    import torch

    return types.SimpleNamespace(
        exp=torch.exp,
        log=torch.log,
        sin=torch.sin,
        cos=torch.cos,
        tan=torch.tan,
        tanh=torch.tanh,
        sqrt=torch.sqrt,
        abs=torch.abs,
        arctan2=torch.atan2,
        arctan=torch.atan,
        sinh=torch.sinh,
        cosh=torch.cosh,
        log1p=torch.log1p,
        expm1=torch.expm1,
        square=torch.square,
        maximum=torch.maximum,
        minimum=torch.minimum,
        where=torch.where,
        clip=torch.clamp,
        hypot=torch.hypot,
        arcsin=torch.asin,
        arccos=torch.acos,
        reciprocal=torch.reciprocal,
        sum=lambda x, d=None, keep=False: torch.sum(x) if d is None else torch.sum(x, dim=d, keepdim=keep),
        mean=lambda x, d=None: torch.mean(x) if d is None else torch.mean(x, dim=d),
        prod=lambda x, d=None: torch.prod(x) if d is None else torch.prod(x, dim=d),
        matmul=torch.matmul,
        dot=torch.matmul,
        stack=lambda xs, d=0: torch.stack(xs, dim=d),
        cat=lambda xs, d=0: torch.cat(xs, dim=d),
        reshape=torch.reshape,
        swap=lambda x: torch.transpose(x, -1, -2),
        permute=torch.permute,
        squeeze=torch.squeeze,
        unsqueeze=torch.unsqueeze,
        power=torch.pow,
        pow=torch.pow,
        c=lambda a: torch.from_numpy(_cast(a, dtype)),
    )


@dataclass
class Case:
    name: str
    shapes: list  # input shapes; a list of one shape means a single (non-tuple) input
    fn: object  # ns -> function
    methods: object = None  # torch-style method version, or None
    low: float = -1.0
    high: float = 1.0
    tuple_input: bool = False

    def inputs(self, rng, dtype=np.float64):
        xs = [rng.uniform(self.low, self.high, size=s).astype(dtype) for s in self.shapes]
        for x in xs:  # keep away from non-smooth points so finite differences and torch agree
            x[np.abs(x) < 0.05] += 0.1
        return tuple(xs) if (self.tuple_input or len(xs) > 1) else xs[0]


C = Case
CASES = [
    C("exp_reducer", [(2, 2)], lambda ns: lambda x: ns.sum(ns.exp(x), 1), lambda x: x.exp().sum(dim=1)),
    C(
        "exp_adder",
        [(2,), (2,)],
        lambda ns: lambda x, y: 2 * ns.exp(x) + 3 * y,
        lambda x, y: 2 * x.exp() + 3 * y,
    ),
    C(
        "poly",
        [(4,)],
        lambda ns: lambda x: 3 * x**3 - x**2 / 2 + 1,
        lambda x: 3 * x.pow(3) - x.pow(2) / 2 + 1,
    ),
    C("sin_cos", [(3,)], lambda ns: lambda x: ns.sin(x) * ns.cos(x), lambda x: x.sin() * x.cos()),
    C("tan", [(3,)], lambda ns: lambda x: ns.tan(x), lambda x: x.tan()),
    C("tanh_mlp", [(3,)], lambda ns: lambda x: ns.tanh(ns.matmul(ns.c(W1), x) + 0.5), None),
    C(
        "log_sqrt",
        [(3,)],
        lambda ns: lambda x: ns.log(x) + ns.sqrt(x),
        lambda x: x.log() + x.sqrt(),
        0.2,
        2.0,
    ),
    C("abs", [(5,)], lambda ns: lambda x: ns.abs(x) * x, lambda x: x.abs() * x),
    C("division", [(3,), (3,)], lambda ns: lambda x, y: x / (1 + y**2), lambda x, y: x / (1 + y**2)),
    C("rdiv", [(3,)], lambda ns: lambda x: 1 / (2 + x), lambda x: 1 / (2 + x)),
    C("neg_sub", [(3,), (3,)], lambda ns: lambda x, y: -x - (2 - y), lambda x, y: -x - (2 - y)),
    C("rpow", [(3,)], lambda ns: lambda x: 2.0**x, lambda x: 2.0**x),
    C("pow_tensor", [(3,), (3,)], lambda ns: lambda x, y: ns.power(x, y), lambda x, y: x.pow(y), 0.5, 2.0),
    C(
        "pow_half",
        [(3,)],
        lambda ns: lambda x: x**0.5 + x**-1.5 + x**2.5,
        lambda x: x**0.5 + x**-1.5 + x**2.5,
        0.5,
        2.0,
    ),
    C("sum_all", [(2, 3)], lambda ns: lambda x: ns.sum(x * x), lambda x: (x * x).sum()),
    C("sum_dim0", [(2, 3)], lambda ns: lambda x: ns.sum(ns.sin(x), 0), lambda x: x.sin().sum(dim=0)),
    C(
        "sum_keepdim",
        [(2, 3)],
        lambda ns: lambda x: ns.sum(x, 1, True) * x,
        lambda x: x.sum(dim=1, keepdim=True) * x,
    ),
    C("mean", [(2, 3)], lambda ns: lambda x: ns.mean(x**2, 1), lambda x: (x**2).mean(dim=1)),
    C("mean_all", [(4,)], lambda ns: lambda x: ns.mean(ns.exp(x)), lambda x: x.exp().mean()),
    C("prod", [(3,)], lambda ns: lambda x: ns.prod(x), lambda x: x.prod()),
    C("matvec", [(3, 3), (3,)], lambda ns: lambda A, b: ns.matmul(A, b), lambda A, b: A @ b),
    C("matmat", [(2, 3), (3, 2)], lambda ns: lambda A, B: ns.matmul(A, B), lambda A, B: A @ B),
    C("quadratic_form", [(3,)], lambda ns: lambda x: ns.matmul(x, ns.matmul(ns.c(M), x)), None),
    C("batched_matmul", [(2, 2, 3), (3,)], lambda ns: lambda A, b: ns.matmul(A, b), lambda A, b: A @ b),
    C("vector_dot", [(3,), (3,)], lambda ns: lambda a, b: ns.matmul(a, b), lambda a, b: a @ b),
    C("index", [(4,)], lambda ns: lambda x: x[1] * x[3] + x[0], lambda x: x[1] * x[3] + x[0]),
    C("slice", [(5,)], lambda ns: lambda x: x[1:4] * x[:3], lambda x: x[1:4] * x[:3]),
    C("slice2d", [(3, 4)], lambda ns: lambda x: x[:, 1:3] ** 2, lambda x: x[:, 1:3] ** 2),
    C("fancy_index", [(4,)], lambda ns: lambda x: x[ns.c(IDX)] * 2, lambda x: x[[3, 0, 0, 2]] * 2),
    C("reshape", [(2, 3)], lambda ns: lambda x: ns.reshape(x * x, (3, 2)), lambda x: (x * x).reshape(3, 2)),
    C("transpose", [(2, 3)], lambda ns: lambda x: ns.swap(ns.exp(x)), lambda x: x.exp().transpose(0, 1)),
    C("T", [(2, 3)], lambda ns: lambda x: (x * 2).T @ x, lambda x: (x * 2).T @ x),
    C(
        "permute",
        [(2, 3, 2)],
        lambda ns: lambda x: ns.permute(x**2, (2, 0, 1)),
        lambda x: (x**2).permute(2, 0, 1),
    ),
    C("stack", [(3,)], lambda ns: lambda x: ns.stack([x[0] * x[1], x[2], ns.sin(x[1])]), None),
    C("stack_dim1", [(2,), (2,)], lambda ns: lambda x, y: ns.stack([x * y, x + y], 1), None),
    C("cat", [(2,), (3,)], lambda ns: lambda x, y: ns.cat([x**2, ns.exp(y)]), None),
    C(
        "squeeze_unsqueeze",
        [(1, 3)],
        lambda ns: lambda x: ns.unsqueeze(ns.squeeze(x) ** 2, 0),
        lambda x: (x.squeeze() ** 2).unsqueeze(0),
    ),
    C(
        "multi_output",
        [(3,), (3,)],
        lambda ns: lambda x, y: (x * y, ns.sum(x) * y),
        lambda x, y: (x * y, x.sum() * y),
    ),
    C("unrelated_outputs", [(2,), (2,)], lambda ns: lambda x, y: (x, y, x, y), lambda x, y: (x, y, x, y)),
    C("one_tuple_out", [(3,)], lambda ns: lambda x: (ns.exp(x),), lambda x: (x.exp(),)),
    C("zero_dim_in", [()], lambda ns: lambda x: ns.stack([x, x * x, ns.sin(x)]), None),
    C("zero_dim_out", [(3,)], lambda ns: lambda x: ns.sum(ns.cos(x)), lambda x: x.cos().sum()),
    C("zero_dim_both", [()], lambda ns: lambda x: ns.exp(x) * x, lambda x: x.exp() * x),
    C(
        "tuple_single",
        [(3,)],
        lambda ns: lambda x: ns.sinh(x) + ns.cosh(x),
        lambda x: x.sinh() + x.cosh(),
        tuple_input=True,
    ),
    C("arctan2", [(3,), (3,)], lambda ns: lambda y, x: ns.arctan2(y, x + 2), lambda y, x: y.atan2(x + 2)),
    C(
        "inverse_trig",
        [(3,)],
        lambda ns: lambda x: ns.arcsin(x / 2) + ns.arccos(x / 3) + ns.arctan(x),
        lambda x: (x / 2).asin() + (x / 3).acos() + x.atan(),
    ),
    C(
        "log1p_expm1",
        [(3,)],
        lambda ns: lambda x: ns.log1p(x**2) * ns.expm1(x),
        lambda x: (x**2).log1p() * x.expm1(),
    ),
    C(
        "where",
        [(4,)],
        lambda ns: lambda x: ns.where(x > 0, x**2, -x),
        lambda x: (x > 0) * x**2 + (x <= 0) * -x,
    ),
    C(
        "maximum",
        [(4,), (4,)],
        lambda ns: lambda x, y: ns.maximum(x, y) * ns.minimum(x, 0.2 * y),
        lambda x, y: x.maximum(y) * x.minimum(0.2 * y),
    ),
    C("clip", [(5,)], lambda ns: lambda x: ns.clip(x, -0.5, 0.5) * x, lambda x: x.clamp(-0.5, 0.5) * x),
    C("hypot", [(3,), (3,)], lambda ns: lambda x, y: ns.hypot(x, y), lambda x, y: x.hypot(y)),
    C("closure_constant", [(3,)], lambda ns: lambda x: x * ns.c(CONST) + ns.sum(ns.c(CONST) * x**2), None),
    C(
        "reciprocal_square",
        [(3,)],
        lambda ns: lambda x: ns.reciprocal(1 + ns.square(x)),
        lambda x: (1 + x.square()).reciprocal(),
    ),
    C(
        "robot_2link",
        [(2,)],
        lambda ns: (
            lambda q: ns.stack(
                [ns.cos(q[0]) + 0.5 * ns.cos(q[0] + q[1]), ns.sin(q[0]) + 0.5 * ns.sin(q[0] + q[1])]
            )
        ),
        None,
    ),
]

_rng = np.random.default_rng(7)
W1 = _rng.standard_normal((4, 3))
M = _rng.standard_normal((3, 3))
CONST = np.array([0.5, -1.0, 2.0])
IDX = np.array([3, 0, 0, 2])
