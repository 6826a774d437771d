"""DH kinematics written with torch.tensor literals of scalar tensors (autograd does not see
through torch.tensor, so the oracle is finite differences)."""

import math

import torch

DH = [(0.0, math.pi / 2, 0.3), (0.5, 0.0, 0.0), (0.4, 0.0, 0.0)]


def dh(a, alpha, d, theta):
    ct, st = torch.cos(theta), torch.sin(theta)
    ca, sa = math.cos(alpha), math.sin(alpha)
    return torch.tensor(
        [
            [ct, -st * ca, st * sa, a * ct],
            [st, ct * ca, -ct * sa, a * st],
            [0.0, sa, ca, d],
            [0.0, 0.0, 0.0, 1.0],
        ],
        dtype=theta.dtype,
    )


def f(q):
    T = torch.eye(4, dtype=q.dtype)
    for i, (a, alpha, d) in enumerate(DH):
        T = T @ dh(a, alpha, d, q[i])
    position = T[:3, 3]
    return torch.as_tensor([position[0], position[1], position[2], T[2, 2]])


def inputs():
    return (torch.tensor([0.3, -0.5, 0.9], dtype=torch.float64),)


ORACLE = "fd"
