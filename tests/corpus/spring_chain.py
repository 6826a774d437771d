"""A chain of masses between two walls: np.pad adds the fixed ends, np.diff the stretches."""

import numpy as np

K, REST, MASS = 40.0, 0.25, 0.1


def f(state):
    n = state.shape[0] // 2
    x, v = state[:n], state[n:]
    ends = np.pad(x, (1, 1), constant_values=(0.0, (n + 1) * REST))
    stretch = np.diff(ends) - REST
    force = K * np.diff(stretch)
    return np.concatenate([v, force / MASS - 0.05 * v])


def inputs():
    n = 5
    x = REST * np.arange(1, n + 1) + 0.02 * np.sin(np.arange(n))
    return (np.concatenate([x, 0.1 * np.cos(np.arange(n))]),)


ORACLE = "fd"
