"""Warm per-call time of symjac.jacobian against torch.autograd.functional.jacobian.

Run: python benchmarks/run.py   (needs torch: pip install torch)

Both libraries are timed in the same process on the same inputs; the ratio is what counts
(absolute times on a shared machine are noise). symjac's first call, which traces, builds the
exact derivative and compiles the kernel, is reported separately as its build time.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from models import exp_adder, exp_reducer, ur5_pose  # noqa: E402
from timing import per_call  # noqa: E402

import symjac  # noqa: E402


def main():
    try:
        import torch
        from torch.autograd.functional import jacobian as torch_jacobian
    except ImportError:
        sys.exit("benchmarks/run.py compares against torch: pip install torch")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    problems = [
        ("seed exp_reducer (2x2)", exp_reducer, (torch.from_numpy(rng.random((2, 2))),)),
        (
            "seed exp_adder (2, 2)",
            exp_adder,
            (torch.from_numpy(rng.random(2)), torch.from_numpy(rng.random(2))),
        ),
        ("6-DOF UR5 pose (3x4 out, 6 in)", ur5_pose(torch), (torch.from_numpy(rng.uniform(-3, 3, 6)),)),
        # issue 13: the build time was the problem (the squarings unrolled: 20x larger kernels)
        ("matrix_exp (3x3)", torch.linalg.matrix_exp, (torch.from_numpy(0.7 * rng.standard_normal((3, 3))),)),
    ]
    print(f"{'problem':34s} {'build':>9s} {'symjac':>10s} {'torch':>10s} {'speedup':>8s}")
    for name, func, inputs in problems:
        args = inputs[0] if len(inputs) == 1 else inputs
        start = time.perf_counter()
        ours = symjac.jacobian(func, args)
        build = time.perf_counter() - start
        theirs = torch_jacobian(func, args)
        for a, b in zip(
            ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)
        ):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), name
        t_ours = per_call(lambda: symjac.jacobian(func, args))
        t_torch = per_call(lambda: torch_jacobian(func, args))
        print(
            f"{name:34s} {build * 1e3:7.1f}ms {t_ours * 1e6:8.1f}us {t_torch * 1e6:8.1f}us {t_torch / t_ours:7.1f}x"
        )
    # the same seed problem with NumPy inputs (no torch conversions on symjac's side)
    x = rng.random((2, 2))
    t_np = per_call(lambda: symjac.jacobian(exp_reducer, x))
    print(f"{'seed exp_reducer, NumPy inputs':34s} {'':>9s} {t_np * 1e6:8.1f}us")


if __name__ == "__main__":
    main()
