"""Benchmark problems, each written once against a namespace ``ns`` (NumPy, torch, JAX, CasADi)."""

import math
import types

import numpy as np
from models import UR5_A, UR5_ALPHA, UR5_D

_rng = np.random.default_rng(0)
MLP_W = [
    _rng.standard_normal((16, 4)) / 2,
    _rng.standard_normal((16, 16)) / 4,
    _rng.standard_normal((2, 16)) / 4,
]
MLP_B = [_rng.standard_normal(16) / 4, _rng.standard_normal(16) / 4]


def seed(ns, x):
    return ns.sum(ns.exp(ns.reshape(x, (2, 2))), 1)


def robertson(ns, y):
    k1, k2, k3 = 0.04, 3e7, 1e4
    return ns.stack(
        [
            -k1 * y[0] + k3 * y[1] * y[2],
            k1 * y[0] - k3 * y[1] * y[2] - k2 * y[1] ** 2,
            k2 * y[1] ** 2,
        ]
    )


def arm(ns, q):
    T = None
    for i in range(6):
        ct, st = ns.cos(q[i]), ns.sin(q[i])
        ca, sa, a, d = math.cos(UR5_ALPHA[i]), math.sin(UR5_ALPHA[i]), UR5_A[i], UR5_D[i]
        zero = 0 * ct
        A = ns.matrix(
            [
                [ct, -st * ca, st * sa, a * ct],
                [st, ct * ca, -ct * sa, a * st],
                [zero, zero + sa, zero + ca, zero + d],
                [zero, zero, zero, zero + 1],
            ]
        )
        T = A if T is None else ns.matmul(T, A)
    return ns.stack([T[0, 3], T[1, 3], T[2, 3]])


def chain(ns, s, n=10):
    x, v = s[:n], s[n:]
    stretch = x[1:] - x[:-1] - 1.0
    force = stretch + 0.1 * stretch**3
    accel = ns.concatenate([force[:1], force[1:] - force[:-1], -force[-1:]])
    return ns.concatenate([v, accel - 0.05 * v])


def mlp(ns, x):
    h = ns.tanh(ns.matmul(ns.c(MLP_W[0]), x) + ns.c(MLP_B[0]))
    h = ns.tanh(ns.matmul(ns.c(MLP_W[1]), h) + ns.c(MLP_B[1]))
    return ns.matmul(ns.c(MLP_W[2]), h)


def brusselator(n):
    """2-D Brusselator on an n x n periodic grid: 2 n^2 states, a sparse Jacobian."""
    idx = np.arange(n * n).reshape(n, n)
    shifts = [np.roll(idx, s, axis=a).ravel() for s, a in ((1, 0), (-1, 0), (1, 1), (-1, 1))]
    alpha = 0.02 * (n + 1) ** 2

    def rhs(ns, y):
        u, v = y[: n * n], y[n * n :]

        def lap(w):
            return w[shifts[0]] + w[shifts[1]] + w[shifts[2]] + w[shifts[3]] - 4 * w

        uuv = u * u * v
        return ns.concatenate([1 + uuv - 4.4 * u + alpha * lap(u), 3.4 * u - uuv + alpha * lap(v)])

    return rhs


PROBLEMS = [
    ("seed exp_reducer", seed, 4),
    ("Robertson", robertson, 3),
    ("UR5 arm", arm, 6),
    ("mass-spring chain", chain, 20),
    ("tanh MLP 4-16-16-2", mlp, 4),
    ("Brusselator N=8", brusselator(8), 128),
    ("Brusselator N=32", brusselator(32), 2048),
]


def numpy_ns():
    return types.SimpleNamespace(
        sin=np.sin,
        cos=np.cos,
        exp=np.exp,
        tanh=np.tanh,
        sum=lambda x, a: np.sum(x, axis=a),
        reshape=np.reshape,
        stack=np.stack,
        concatenate=np.concatenate,
        matmul=np.matmul,
        c=lambda a: a,
        matrix=lambda rows: np.stack([np.stack(r) for r in rows]),
    )


def torch_ns():
    import torch

    return types.SimpleNamespace(
        sin=torch.sin,
        cos=torch.cos,
        exp=torch.exp,
        tanh=torch.tanh,
        sum=lambda x, a: torch.sum(x, dim=a),
        reshape=torch.reshape,
        stack=torch.stack,
        concatenate=torch.cat,
        matmul=torch.matmul,
        c=torch.from_numpy,
        matrix=lambda rows: torch.stack([torch.stack(r) for r in rows]),
    )


def jax_ns():
    import jax.numpy as jnp

    return types.SimpleNamespace(
        sin=jnp.sin,
        cos=jnp.cos,
        exp=jnp.exp,
        tanh=jnp.tanh,
        sum=lambda x, a: jnp.sum(x, axis=a),
        reshape=jnp.reshape,
        stack=jnp.stack,
        concatenate=jnp.concatenate,
        matmul=jnp.matmul,
        c=jnp.asarray,
        matrix=lambda rows: jnp.stack([jnp.stack(r) for r in rows]),
    )


def casadi_ns():
    import casadi as ca

    def take(w, i):
        return w[list(map(int, i))] if isinstance(i, np.ndarray) else w[i]

    return types.SimpleNamespace(
        sin=ca.sin,
        cos=ca.cos,
        exp=ca.exp,
        tanh=ca.tanh,
        sum=lambda x, a: ca.sum2(x) if a == 1 else ca.sum1(x),
        reshape=lambda x, s: ca.reshape(x, s[1], s[0]).T,
        stack=lambda xs: ca.vertcat(*xs),
        concatenate=lambda xs: ca.vertcat(*xs),
        matmul=ca.mtimes,
        c=ca.DM,
        matrix=lambda rows: ca.vertcat(*[ca.horzcat(*r) for r in rows]),
        take=take,
    )
