"""Chemical kinetics, A -> B -> C and 2A + B <-> D, written as an ODE right-hand side with
np.zeros and item assignment."""

import numpy as np

k1, k2, k3f, k3r = 1.5, 0.4, 0.8, 0.1


def f(c):
    A, B, C, D = c
    r1 = k1 * A
    r2 = k2 * B
    r3 = k3f * A**2 * B - k3r * D
    dcdt = np.zeros(4)
    dcdt[0] = -r1 - 2 * r3
    dcdt[1] = r1 - r2 - r3
    dcdt[2] = r2
    dcdt[3] = r3
    return dcdt


def inputs():
    return (np.array([1.0, 0.3, 0.05, 0.2]),)


ORACLE = "fd"
