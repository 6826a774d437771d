"""Planar N-body right-hand side (softened gravity) with np.fill_diagonal to drop self-forces."""

import numpy as np

G = 1.0
MASSES = np.array([1.0, 0.5, 0.8, 0.3])
SOFTENING = 1e-3


def f(state):
    n = len(MASSES)
    pos = state[: 2 * n].reshape(n, 2)
    vel = state[2 * n :].reshape(n, 2)
    delta = pos[None, :, :] - pos[:, None, :]
    dist2 = (delta**2).sum(axis=-1) + SOFTENING
    np.fill_diagonal(dist2, 1.0)  # avoid 0 ** -1.5 on the diagonal
    inv_r3 = dist2**-1.5
    np.fill_diagonal(inv_r3, 0.0)
    acc = G * (delta * (inv_r3 * MASSES[None, :])[:, :, None]).sum(axis=1)
    return np.concatenate([vel.ravel(), acc.ravel()])


def inputs():
    pos = np.array([[0.0, 0.0], [1.0, 0.2], [-0.7, 0.9], [0.3, -1.1]])
    vel = np.array([[0.0, 0.1], [-0.2, 0.5], [0.3, -0.1], [0.4, 0.2]])
    return (np.concatenate([pos.ravel(), vel.ravel()]),)


ORACLE = "fd"
