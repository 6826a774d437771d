"""Quadrotor rigid-body dynamics, state (position, velocity, roll-pitch-yaw, body rates) and
four rotor thrusts; constants are made with dtype=x.dtype as control code does."""

import torch

MASS, ARM, KM = 1.2, 0.25, 0.02
INERTIA = (0.011, 0.011, 0.021)


def rotation(phi, theta, psi):
    cphi, sphi = torch.cos(phi), torch.sin(phi)
    cth, sth = torch.cos(theta), torch.sin(theta)
    cpsi, spsi = torch.cos(psi), torch.sin(psi)
    return torch.stack(
        [
            torch.stack([cth * cpsi, sphi * sth * cpsi - cphi * spsi, cphi * sth * cpsi + sphi * spsi]),
            torch.stack([cth * spsi, sphi * sth * spsi + cphi * cpsi, cphi * sth * spsi - sphi * cpsi]),
            torch.stack([-sth, sphi * cth, cphi * cth]),
        ]
    )


def f(x, u):
    v, rpy, omega = x[3:6], x[6:9], x[9:12]
    R = rotation(rpy[0], rpy[1], rpy[2])
    gravity = torch.tensor([0.0, 0.0, -9.81], dtype=x.dtype)
    e3 = torch.tensor([0.0, 0.0, 1.0], dtype=x.dtype)
    J = torch.diag(torch.tensor(INERTIA, dtype=x.dtype))
    J_inv = torch.diag(1.0 / torch.tensor(INERTIA, dtype=x.dtype))
    thrust = u.sum()
    acc = gravity + R @ e3 * thrust / MASS
    torque = torch.zeros(3, dtype=x.dtype)
    torque[0] = ARM * (u[1] - u[3])
    torque[1] = ARM * (u[2] - u[0])
    torque[2] = KM * (u[0] - u[1] + u[2] - u[3])
    omega_dot = J_inv @ (torque - torch.linalg.cross(omega, J @ omega))
    phi, theta = rpy[0], rpy[1]
    W = torch.zeros(3, 3, dtype=x.dtype)
    W[0, 0] = 1.0
    W[0, 1] = torch.sin(phi) * torch.tan(theta)
    W[0, 2] = torch.cos(phi) * torch.tan(theta)
    W[1, 1] = torch.cos(phi)
    W[1, 2] = -torch.sin(phi)
    W[2, 1] = torch.sin(phi) / torch.cos(theta)
    W[2, 2] = torch.cos(phi) / torch.cos(theta)
    return torch.cat([v, acc, W @ omega, omega_dot])


def inputs():
    x = torch.linspace(-0.4, 0.5, 12, dtype=torch.float64)
    u = torch.tensor([3.0, 2.9, 3.1, 3.05], dtype=torch.float64)
    return (x, u)


ORACLE = "autograd"
