"""A double pendulum from sympy.physics.mechanics, with derivatives compiled by symjac.

KanesMethod gives the mass matrix M(q) and forcing F(q, u); symjac compiles the Jacobian of the
accelerations M^-1 F exactly, and it is checked against SymPy's own derivative.
"""

import numpy as np
import sympy as sp
from sympy.physics import mechanics as me

import symjac

q = me.dynamicsymbols("q0:2")
u = me.dynamicsymbols("u0:2")
m, length, g = 1.0, 1.0, 9.81
N = me.ReferenceFrame("N")
O = me.Point("O")
O.set_vel(N, 0)
frames, points, particles, kde = [], [], [], []
prev = O
for i in range(2):
    frame = N.orientnew(f"A{i}", "Axis", [q[i], N.z])
    frame.set_ang_vel(N, u[i] * N.z)
    point = prev.locatenew(f"P{i}", length * frame.x)
    point.v2pt_theory(prev, N, frame)
    particles.append(me.Particle(f"pa{i}", point, m))
    kde.append(q[i].diff() - u[i])
    prev = point
loads = [(p.point, -m * g * N.y) for p in particles]
kane = me.KanesMethod(N, q_ind=q, u_ind=u, kd_eqs=kde)
kane.kanes_equations(particles, loads)
M, F = kane.mass_matrix, kane.forcing

# plain symbols for the state, then the accelerations
qs, us = sp.symbols("q0:2"), sp.symbols("u0:2")
subs = dict(zip(q + u, qs + us))
accel = M.xreplace(subs).LUsolve(F.xreplace(subs))
jac = symjac.from_sympy(accel, [qs, us])  # d(accel)/dq, d(accel)/du, compiled

state_q, state_u = np.array([0.3, -0.2]), np.array([0.1, 0.5])
dq, du = jac(state_q, state_u)
reference = sp.lambdify([qs, us], accel.jacobian(list(qs) + list(us)))(state_q, state_u)
np.testing.assert_allclose(np.hstack([dq, du]), reference, rtol=1e-12, atol=1e-12)
print("d(accel)/dq =\n", dq)
print("d(accel)/du =\n", du)

# linearised about hanging straight down (absolute angles from N.x; gravity along -N.y)
down_q = np.array([-np.pi / 2, -np.pi / 2])
A_q, _ = jac(down_q, np.zeros(2))
frequencies = np.sqrt(np.sort(np.linalg.eigvals(-A_q).real))
print("small-oscillation frequencies (rad/s):", np.round(frequencies, 4))
expected = np.sqrt(g / length * np.array([2 - np.sqrt(2), 2 + np.sqrt(2)]))  # textbook double pendulum
np.testing.assert_allclose(frequencies, expected, rtol=1e-10)
