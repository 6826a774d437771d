"""The same arm in torch: a transform built with torch.zeros(dtype=q.dtype) and slice
assignment of a rotation block."""

import math

import torch

DH = [(0.0, math.pi / 2, 0.3), (0.5, 0.0, 0.0), (0.4, 0.0, 0.0)]


def rot_z(theta):
    R = torch.zeros(3, 3, dtype=theta.dtype)
    R[0, 0] = torch.cos(theta)
    R[0, 1] = -torch.sin(theta)
    R[1, 0] = torch.sin(theta)
    R[1, 1] = torch.cos(theta)
    R[2, 2] = 1.0
    return R


def dh_transform(a, alpha, d, theta):
    Rx = torch.eye(3, dtype=theta.dtype)
    Rx[1, 1] = math.cos(alpha)
    Rx[1, 2] = -math.sin(alpha)
    Rx[2, 1] = math.sin(alpha)
    Rx[2, 2] = math.cos(alpha)
    T = torch.eye(4, dtype=theta.dtype)
    T[:3, :3] = rot_z(theta) @ Rx
    T[0, 3] = a * torch.cos(theta)
    T[1, 3] = a * torch.sin(theta)
    T[2, 3] = d
    return T


def f(q):
    T = torch.eye(4, dtype=q.dtype, device=q.device)
    for i, (a, alpha, d) in enumerate(DH):
        T = T @ dh_transform(a, alpha, d, q[i])
    return T[:3, 3]


def inputs():
    return (torch.tensor([0.3, -0.5, 0.9], dtype=torch.float64),)


ORACLE = "autograd"
