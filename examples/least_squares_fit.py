"""Fit a damped oscillation to noisy data with least_squares and the exact compiled Jacobian."""

import numpy as np
from scipy.optimize import least_squares

import symjac

t = np.linspace(0.0, 10.0, 200)
true = np.array([2.0, 0.3, 1.7, 0.4])  # amplitude, decay, frequency, phase
rng = np.random.default_rng(0)
data = true[0] * np.exp(-true[1] * t) * np.cos(true[2] * t + true[3]) + 0.01 * rng.standard_normal(t.size)


def residuals(p, t, data):
    return p[0] * np.exp(-p[1] * t) * np.cos(p[2] * t + p[3]) - data


jac = symjac.least_squares_jacobian(residuals, np.ones(4), args=(t, data))
fit = least_squares(residuals, [1.0, 0.1, 1.5, 0.0], jac=jac, args=(t, data))
fd = least_squares(residuals, [1.0, 0.1, 1.5, 0.0], args=(t, data))
print("fitted:", np.round(fit.x, 4), " true:", true)
print(f"Jacobian evaluations: exact {fit.njev}, finite differences {fd.njev} (+{fd.njev * 4} extra residual calls)")
np.testing.assert_allclose(fit.x, true, rtol=0.02)
np.testing.assert_allclose(fit.x, fd.x, rtol=1e-5)
