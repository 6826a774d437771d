"""A cart-pole linearised exactly at the upright equilibrium and stabilised with LQR."""

import numpy as np
from scipy.integrate import solve_ivp
from scipy.linalg import solve_continuous_are

import symjac

G, MC, MP, L = 9.81, 1.0, 0.1, 0.5  # gravity, cart mass, pole mass, half pole length


def cartpole(state, force, params=(MP,)):
    """state = (x, theta, xdot, thetadot); theta = 0 is upright; params = (pole mass,)."""
    mp = params[0]
    x, th, xd, thd = state[0], state[1], state[2], state[3]
    s, c = np.sin(th), np.cos(th)
    total = MC + mp
    tmp = (force[0] + mp * L * thd**2 * s) / total
    thdd = (G * s - c * tmp) / (L * (4.0 / 3.0 - mp * c**2 / total))
    xdd = tmp - mp * L * thdd * c / total
    return np.stack([xd + 0 * x, thd, xdd, thdd])


def pole_angle(state, force, params=(MP,)):
    """The measured output: the pole's angle."""
    return state[1:2]


A, B = symjac.linearize(cartpole, np.zeros(4), np.zeros(1))  # xdot = f(x, u) at (x0, u0)
print("A =\n", A, "\nB =", B.ravel())

# the pole mass as a parameter p (not differentiated) and the angle as the output y = h(x, u, p)
lin = symjac.linearize(cartpole, np.zeros(4), np.zeros(1), p=[MP], h=pole_angle)
A, B, C, D = lin
assert np.array_equal(lin[:2][0], A) and np.array_equal(C, [[0.0, 1.0, 0.0, 0.0]]) and not D.any()
Q, R = np.diag([1.0, 10.0, 1.0, 1.0]), np.array([[0.1]])
try:
    import control

    sys = lin.statespace()  # a control.StateSpace with C and D
    K, _, _ = control.lqr(sys, Q, R)
except ImportError:  # python-control is optional: the Riccati equation gives the same gain
    P = solve_continuous_are(A, B, Q, R)
    K = np.linalg.solve(R, B.T @ P)
K = np.asarray(K)
print("LQR gain K =", np.round(K.ravel(), 4))
assert np.all(np.linalg.eigvals(A - B @ K).real < 0)  # closed loop is stable

sol = solve_ivp(lambda t, s: cartpole(s, -K @ s), (0.0, 10.0), [0.2, 0.15, 0.0, 0.0], rtol=1e-8)
print("state after 10 s:", np.round(sol.y[:, -1], 6))
assert np.linalg.norm(sol.y[:, -1]) < 1e-3
