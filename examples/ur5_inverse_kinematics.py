"""Inverse kinematics of a UR5 arm by Newton's method with the exact compiled Jacobian."""

import math

import numpy as np

import symjac

D = (0.089159, 0.0, 0.0, 0.10915, 0.09465, 0.0823)
A = (0.0, -0.425, -0.39225, 0.0, 0.0, 0.0)
ALPHA = (math.pi / 2, 0.0, 0.0, math.pi / 2, -math.pi / 2, 0.0)


def tool_position(q):
    """Forward kinematics (Denavit-Hartenberg), written with NumPy."""
    T = np.eye(4)
    for i in range(6):
        ct, st = np.cos(q[i]), np.sin(q[i])
        ca, sa = math.cos(ALPHA[i]), math.sin(ALPHA[i])
        T = T @ np.array([
            [ct, -st * ca, st * sa, A[i] * ct],
            [st, ct * ca, -ct * sa, A[i] * st],
            [0.0, sa, ca, D[i]],
            [0.0, 0.0, 0.0, 1.0],
        ])
    return T[:3, 3]


jacobian = symjac.compile(tool_position, np.zeros(6), value=True)  # (position, 3x6 Jacobian)
target = tool_position(np.array([0.4, -1.1, 1.3, -0.5, 1.2, 0.2]))
q = np.array([0.0, -1.0, 1.0, 0.0, 1.0, 0.0])
for step in range(20):
    position, J = jacobian(q)
    error = target - position
    print(f"step {step}: |error| = {np.linalg.norm(error):.3e}")
    if np.linalg.norm(error) < 1e-12:
        break
    q = q + np.linalg.lstsq(J, error, rcond=None)[0]  # Gauss-Newton step, minimum-norm
assert np.linalg.norm(tool_position(q) - target) < 1e-12
print("joint angles:", np.round(q, 6))
