"""Small models for the `symjac show` command line (and a check that they run).

symjac show examples/models.py:two_link_arm --shape 2
symjac show examples/models.py:spring_chain --shape 6 --shape 6 --spy docs/spring_chain_sparsity.png
"""

import numpy as np


def two_link_arm(q):
    """Tip position of a planar arm with links of length 1 and 0.5."""
    return np.stack(
        [
            np.cos(q[0]) + 0.5 * np.cos(q[0] + q[1]),
            np.sin(q[0]) + 0.5 * np.sin(q[0] + q[1]),
        ]
    )


def spring_chain(x, v):
    """Unit masses joined by nonlinear springs: positions x, velocities v -> (dx/dt, dv/dt)."""
    stretch = x[1:] - x[:-1] - 1.0
    force = stretch + 0.1 * stretch**3
    accel = np.concatenate([force[:1], force[1:] - force[:-1], -force[-1:]])
    return v * 1.0, accel - 0.05 * v


def exp_reducer(x):
    return x.exp().sum(dim=1)


if __name__ == "__main__":
    import symjac

    J = symjac.jacobian(two_link_arm, np.array([0.3, 0.4]))
    assert J.shape == (2, 2)
    view = symjac.symbolic(spring_chain, (6,), (6,))
    assert view.sparsity.sum() < 12 * 12 / 2  # banded: most entries are exactly zero
    print(view.report_table())
