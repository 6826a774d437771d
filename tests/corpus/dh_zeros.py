"""Forward kinematics of a 3-joint arm from Denavit-Hartenberg parameters (NumPy, assembled
with np.eye and item assignment)."""

import numpy as np

DH = [  # (a, alpha, d) per joint
    (0.0, np.pi / 2, 0.3),
    (0.5, 0.0, 0.0),
    (0.4, 0.0, 0.0),
]


def dh_transform(a, alpha, d, theta):
    T = np.eye(4)
    ct, st = np.cos(theta), np.sin(theta)
    ca, sa = np.cos(alpha), np.sin(alpha)
    T[0, 0] = ct
    T[0, 1] = -st * ca
    T[0, 2] = st * sa
    T[0, 3] = a * ct
    T[1, 0] = st
    T[1, 1] = ct * ca
    T[1, 2] = -ct * sa
    T[1, 3] = a * st
    T[2, 1] = sa
    T[2, 2] = ca
    T[2, 3] = d
    return T


def f(q):
    T = np.eye(4)
    for (a, alpha, d), theta in zip(DH, q, strict=True):
        T = T @ dh_transform(a, alpha, d, theta)
    return T[:3, 3]


def inputs():
    return (np.array([0.3, -0.5, 0.9]),)


ORACLE = "fd"
