"""Every benchmark, one command: first the drop-in's warm call against torch, then the others.

Run: python benchmarks/run.py [--quick]   (needs torch; the others' peers: pip install -e ".[bench]")

The first table, warm per-call time of symjac.jacobian against torch.autograd.functional.jacobian,
is measured here: both libraries are timed in the same process on the same inputs; the ratio is
what counts (absolute times on a shared machine are noise). symjac's first call, which traces,
builds the exact derivative and compiles the kernel, is reported separately as its build time.
Then each of the other scripts runs in its own process (``--quick`` is passed on to those that
have a quick mode): compiled.py (symjac.compile against JAX, torch, CasADi SX/MX and gcc -O3 on
issue 11's problems), dropin.py (the drop-in's first call), second.py (compiled Hessians and
hvps against JAX and torch.func), floor.py (call paths against their
floors) and dask_batch.py (a large batch with dask; smaller with --quick).
"""

from __future__ import annotations

import pathlib
import subprocess
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
        ours, theirs = (r if isinstance(r, tuple) else (r,) for r in (ours, theirs))
        for a, b in zip(ours, theirs, strict=True):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), name
        t_ours = per_call(lambda f=func, a=args: symjac.jacobian(f, a))
        t_torch = per_call(lambda f=func, a=args: torch_jacobian(f, a))
        print(
            f"{name:34s} {build * 1e3:7.1f}ms {t_ours * 1e6:8.1f}us {t_torch * 1e6:8.1f}us "
            f"{t_torch / t_ours:7.1f}x"
        )
    # the same seed problem with NumPy inputs (no torch conversions on symjac's side)
    x = rng.random((2, 2))
    t_np = per_call(lambda: symjac.jacobian(exp_reducer, x))
    print(f"{'seed exp_reducer, NumPy inputs':34s} {'':>9s} {t_np * 1e6:8.1f}us", flush=True)


def others(quick: bool) -> int:
    """Run the other benchmark scripts, each in its own process; returns how many failed."""
    here = pathlib.Path(__file__).parent
    scripts = [
        ["compiled.py"] + (["--quick"] if quick else []),
        ["dropin.py"] + (["--quick"] if quick else []),
        ["second.py"] + (["--quick"] if quick else []),
        ["floor.py"],
        ["dask_batch.py"] + (["--points", "1000000", "--chunk", "100000"] if quick else []),
    ]
    failed = 0
    for script in scripts:
        print(f"\n=== python benchmarks/{' '.join(script)}", flush=True)
        if subprocess.run([sys.executable, str(here / script[0]), *script[1:]]).returncode:
            print(f"=== benchmarks/{script[0]} FAILED", flush=True)
            failed += 1
    return failed


if __name__ == "__main__":
    main()
    sys.exit(1 if others("--quick" in sys.argv) else 0)
