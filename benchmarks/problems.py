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


def mlp_net(sizes, act="tanh", log_softmax=False):
    """An MLP with fixed random weights: tanh, ReLU or sqrt(1 + h^2) hidden layers, optionally
    log_softmax out. The sqrt one measures the zero rule's guards (docs/compiled.md): an infinite
    partial could meet a zero weight in its contractions, so they test for one."""
    rng = np.random.default_rng(len(sizes) * 1000 + sizes[1])
    W = [rng.standard_normal((b, a)) / math.sqrt(a) for a, b in zip(sizes, sizes[1:], strict=False)]
    B = [rng.standard_normal(b) / 4 for b in sizes[1:]]

    def net(ns, x):
        h = x
        for k, (w, b) in enumerate(zip(W, B, strict=True)):
            h = ns.matmul(ns.c(w), h) + ns.c(b)
            if k < len(W) - 1:
                h = ns.tanh(h) if act == "tanh" else ns.relu(h) if act == "relu" else ns.sqrt(1 + h * h)
        if log_softmax:
            z = h - ns.amax(h)  # the usual shift; it cancels from the exact derivative
            h = z - ns.log(ns.sum(ns.exp(z), 0))
        return h

    return net


def nbody(n):
    """Gravitational N-body right-hand side (softened): state (x, y, z, vx, vy, vz), each (n,)."""
    mass = np.random.default_rng(n).uniform(0.5, 1.5, n)

    def rhs(ns, s):
        x, y, z = s[:n], s[n : 2 * n], s[2 * n : 3 * n]
        dx, dy, dz = ns.outer_diff(x), ns.outer_diff(y), ns.outer_diff(z)  # d[i, j] = r_j - r_i
        inv = (dx * dx + dy * dy + dz * dz + 0.01) ** -1.5
        m = ns.c(mass)
        return ns.concatenate(
            [s[3 * n :], ns.matmul(dx * inv, m), ns.matmul(dy * inv, m), ns.matmul(dz * inv, m)]
        )

    return rhs


# (name, function(ns, x), number of inputs, sparse result); the names are the tables' row labels.
PROBLEMS = [
    ("seed exp_reducer", seed, 4, False),
    ("Robertson", robertson, 3, False),
    ("UR5 arm", arm, 6, False),
    ("mass-spring chain", chain, 20, False),
    ("tanh MLP 4-16-16-2", mlp, 4, False),
    ("Brusselator N=8", brusselator(8), 128, True),
    ("Brusselator N=32", brusselator(32), 2048, True),
    ("Brusselator N=64", brusselator(64), 8192, True),
    ("Brusselator N=128", brusselator(128), 32768, True),
    ("tanh MLP 8-32-32-4", mlp_net([8, 32, 32, 4]), 8, False),
    ("tanh MLP 8-64-64-4", mlp_net([8, 64, 64, 4]), 8, False),
    ("tanh MLP 8-256-256-4", mlp_net([8, 256, 256, 4]), 8, False),
    ("sqrt MLP 8-64-64-4", mlp_net([8, 64, 64, 4], "sqrt"), 8, False),
    ("N-body N=20", nbody(20), 120, False),
    ("N-body N=100", nbody(100), 600, False),
    ("ReLU MLP 4-6-3 log_softmax", mlp_net([4, 6, 3], "relu", True), 4, False),
]
QUICK = ["seed exp_reducer", "Robertson", "tanh MLP 4-16-16-2", "Brusselator N=8"]


def numpy_ns():
    return types.SimpleNamespace(
        sin=np.sin,
        cos=np.cos,
        exp=np.exp,
        tanh=np.tanh,
        sqrt=np.sqrt,
        log=np.log,
        relu=lambda x: np.maximum(x, 0.0),
        amax=np.max,
        outer_diff=lambda a: a[None, :] - a[:, None],
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
        sqrt=torch.sqrt,
        log=torch.log,
        relu=torch.relu,
        amax=torch.max,
        outer_diff=lambda a: a[None, :] - a[:, None],
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
        sqrt=jnp.sqrt,
        log=jnp.log,
        relu=lambda x: jnp.maximum(x, 0.0),
        amax=jnp.max,
        outer_diff=lambda a: a[None, :] - a[:, None],
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
        sqrt=ca.sqrt,
        log=ca.log,
        relu=lambda x: ca.fmax(x, 0),
        amax=ca.mmax,
        outer_diff=lambda a: ca.repmat(a.T, a.numel(), 1) - ca.repmat(a, 1, a.numel()),
        sum=lambda x, a: ca.sum2(x) if a == 1 else ca.sum1(x),
        reshape=lambda x, s: ca.reshape(x, s[1], s[0]).T,
        stack=lambda xs: ca.vertcat(*xs),
        concatenate=lambda xs: ca.vertcat(*xs),
        matmul=ca.mtimes,
        c=ca.DM,
        matrix=lambda rows: ca.vertcat(*[ca.horzcat(*r) for r in rows]),
        take=take,
    )
