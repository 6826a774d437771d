"""Benchmark models, written once in torch style (they run on torch tensors and symjac alike)."""

import math

# UR5 Denavit-Hartenberg parameters
UR5_D = (0.089159, 0.0, 0.0, 0.10915, 0.09465, 0.0823)
UR5_A = (0.0, -0.425, -0.39225, 0.0, 0.0, 0.0)
UR5_ALPHA = (math.pi / 2, 0.0, 0.0, math.pi / 2, -math.pi / 2, 0.0)


def exp_reducer(x):
    return x.exp().sum(dim=1)


def exp_adder(x, y):
    return 2 * x.exp() + 3 * y


def _dh(torch, theta, d, a, alpha):
    ct, st = theta.cos(), theta.sin()
    ca, sa = math.cos(alpha), math.sin(alpha)
    zero = torch.zeros_like(theta)
    one = torch.ones_like(theta)
    return torch.stack(
        [
            torch.stack([ct, -st * ca, st * sa, a * ct]),
            torch.stack([st, ct * ca, -ct * sa, a * st]),
            torch.stack([zero, zero + sa, zero + ca, zero + d]),
            torch.stack([zero, zero, zero, one]),
        ]
    )


def ur5_pose(torch):
    """Forward kinematics of a UR5 arm: joint angles (6,) -> the top 3 rows of the tool pose (3, 4)."""

    def fk(q):
        T = _dh(torch, q[0], UR5_D[0], UR5_A[0], UR5_ALPHA[0])
        for i in range(1, 6):
            T = T @ _dh(torch, q[i], UR5_D[i], UR5_A[i], UR5_ALPHA[i])
        return T[:3, :]

    return fk
