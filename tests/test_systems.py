"""Real systems in each calling style: a UR5 arm (NumPy), a cart-pole (torch), a tanh MLP (@)."""

import math
import pathlib
import sys

import numpy as np
import pytest

import symjac

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "benchmarks"))
from models import UR5_A, UR5_ALPHA, UR5_D  # noqa: E402


def ur5_numpy(q):
    """UR5 forward kinematics written with np.cos/np.sin and np.array of traced scalars."""
    T = np.eye(4)
    for i in range(6):
        ct, st = np.cos(q[i]), np.sin(q[i])
        ca, sa = math.cos(UR5_ALPHA[i]), math.sin(UR5_ALPHA[i])
        A = np.array(
            [
                [ct, -st * ca, st * sa, UR5_A[i] * ct],
                [st, ct * ca, -ct * sa, UR5_A[i] * st],
                [0.0, sa, ca, UR5_D[i]],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )
        T = T @ A
    return T[:3, 3]


def test_ur5_numpy_matches_finite_differences():
    q = np.array([0.1, -0.5, 0.8, 0.3, -1.2, 0.7])
    J = symjac.jacobian(ur5_numpy, q)
    assert J.shape == (3, 6)
    eps = 1e-6
    fd = np.stack([(ur5_numpy(q + eps * e) - ur5_numpy(q - eps * e)) / (2 * eps) for e in np.eye(6)], axis=1)
    np.testing.assert_allclose(J, fd, rtol=1e-6, atol=1e-8)
    # the last joint rotates the tool about its own axis: it cannot move the tool point
    np.testing.assert_allclose(J[:, 5], 0.0, atol=1e-15)


def test_ur5_torch_style_matches_torch():
    torch = pytest.importorskip("torch")
    from models import ur5_pose

    q = torch.tensor([0.1, -0.5, 0.8, 0.3, -1.2, 0.7], dtype=torch.float64)
    fk = ur5_pose(torch)
    torch.testing.assert_close(
        symjac.jacobian(fk, q), torch.autograd.functional.jacobian(fk, q), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        symjac.jacobian(fk, q)[:, 3, :].numpy(), symjac.jacobian(ur5_numpy, q.numpy()), atol=1e-12
    )


def cartpole(state, force):
    """Cart-pole dynamics (torch style): state (x, theta, xdot, thetadot), force (1,)."""
    g, mc, mp, length = 9.81, 1.0, 0.1, 0.5
    x, th, xd, thd = state[0], state[1], state[2], state[3]
    s, c = th.sin(), th.cos()
    total = mc + mp
    tmp = (force[0] + mp * length * thd**2 * s) / total
    thdd = (g * s - c * tmp) / (length * (4.0 / 3.0 - mp * c**2 / total))
    xdd = tmp - mp * length * thdd * c / total
    return (xd + 0 * x, thd + 0 * th, xdd, thdd)


def test_cartpole_torch_style():
    torch = pytest.importorskip("torch")
    s = torch.tensor([0.1, 0.2, -0.3, 0.4], dtype=torch.float64)
    u = torch.tensor([1.5], dtype=torch.float64)
    f = lambda s, u: torch.stack(cartpole(s, u))  # noqa: E731
    ours = symjac.jacobian(f, (s, u))
    theirs = torch.autograd.functional.jacobian(f, (s, u))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_cartpole_upright_linearisation_is_the_textbook_one():
    torch = pytest.importorskip("torch")
    f = lambda s, u: torch.stack(cartpole(s, u))  # noqa: E731
    A, B = symjac.jacobian(f, (torch.zeros(4, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)))
    g, mc, mp, length = 9.81, 1.0, 0.1, 0.5
    total = mc + mp
    denom = length * (4.0 / 3.0 - mp / total)
    a_thth = g / denom
    a_xth = -mp * length * a_thth / total
    expected_A = np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, a_xth, 0, 0], [0, a_thth, 0, 0]])
    np.testing.assert_allclose(A.numpy(), expected_A, rtol=1e-12, atol=1e-12)
    b_th = -1 / (total * denom)
    np.testing.assert_allclose(
        B.numpy()[:, 0], [0, 0, 1 / total - mp * length * b_th / total, b_th], rtol=1e-12
    )


def test_tanh_mlp_with_matmul():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    W1, b1, W2 = rng.standard_normal((8, 3)), rng.standard_normal(8), rng.standard_normal((2, 8))
    f = lambda x: np.tanh(x @ W1.T + b1) @ W2.T  # noqa: E731
    x = rng.standard_normal((5, 3))
    ours = symjac.jacobian(f, x)
    tW1, tb1, tW2 = (torch.from_numpy(a) for a in (W1, b1, W2))
    theirs = torch.autograd.functional.jacobian(
        lambda x: (x @ tW1.T + tb1).tanh() @ tW2.T, torch.from_numpy(x)
    )
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-11, atol=1e-12)
    # rows are independent points: the Jacobian is block diagonal across the batch
    assert np.all(ours[0, :, 1:, :] == 0)
