"""What LLVM's optimisation pipeline costs a loop kernel's build, and what it buys its calls.

Run: python benchmarks/pipelines.py [--only NAME ...]

symjac.compile runs LLVM's O3 pipeline on every kernel. On the tanh MLPs that is about half of
the build, and the rest of LLVM's time is code generation. This script builds the same problems
with other pipelines and prints, for each, compile's build (cache=False), the batch throughput
on one thread (20,000 points into a preallocated out=), and one call's latency. Each pipeline
runs in a fresh process after a warm-up, so the builds pay no one-time start-up. Results are
checked against the O3 kernel's (to 1e-12 of the largest entry: pipelines may reassociate sums
differently). It measures a design question ("should compile build a light kernel first?"); it
does not change what symjac does.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

PIPELINES = {
    "O3 (symjac's)": None,
    "O1": 1,
    "instcombine + simplifycfg": ("instruction_combine", "simplify_cfg"),
}
DEFAULT = ["tanh MLP 8-32-32-4", "tanh MLP 8-64-64-4", "tanh MLP 8-256-256-4", "N-body N=20"]


def _use(pipeline) -> None:
    """Make symjac's LLVM step run ``pipeline``: None is O3, an int another speed level, a tuple
    the named module passes alone."""
    import llvmlite.binding as llvm

    from symjac.backend import runtime

    if pipeline is None:
        return

    def optimize(mod, loop_vectorization=True, loop_unrolling=True):
        if isinstance(pipeline, int):
            pto = llvm.create_pipeline_tuning_options(speed_level=pipeline)
            pto.loop_vectorization, pto.loop_unrolling = loop_vectorization, loop_unrolling
            pb = llvm.create_pass_builder(runtime.target_machine(), pto)
            pm = pb.getModulePassManager()
        else:
            pto = llvm.create_pipeline_tuning_options(speed_level=0)
            pb = llvm.create_pass_builder(runtime.target_machine(), pto)
            pm = llvm.create_new_module_pass_manager()
            for name in pipeline:
                getattr(pm, f"add_{name}_pass")()
        pm.run(mod, pb)

    runtime._optimize = optimize


def one(label: str, names: list[str]) -> list[dict]:
    import problems

    import symjac

    _use(PIPELINES[label])
    warm_up = lambda x: (x * x + x).sin().sum()  # noqa: E731
    symjac.compile(warm_up, np.zeros(3), cache=False, expand="arrays")(np.zeros((2, 3)))
    ns = problems.numpy_ns()
    return [_measure(symjac, name, f, n, ns) for name, f, n, _ in problems.PROBLEMS if name in names]


def _measure(symjac, name, f, n, ns) -> dict:
    start = time.perf_counter()
    cf = symjac.compile(lambda x: f(ns, x), np.full(n, 0.3), cache=False)
    build = time.perf_counter() - start
    X = np.random.default_rng(0).uniform(-1.0, 1.0, (20000, n))
    out = cf(X)
    cf._threads = 1
    batch = min(_timed(lambda: cf(X, out=out)) for _ in range(5))
    single = min(_timed(lambda: _calls(cf, X[0], 1000)) / 1000 for _ in range(5))
    rate = len(X) / batch
    return {
        "name": name,
        "road": cf.spec.road,
        "build": build,
        "rate": rate,
        "single": single,
        "J": cf(X[:3]).tolist(),
    }


def _calls(cf, x, n: int) -> None:
    for _ in range(n):  # each result dropped at once, as a caller's would be
        cf(x)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv):
    names = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--only"] or DEFAULT
    results = {}
    for label in PIPELINES:
        env = dict(os.environ, SYMJAC_CACHE_DIR=tempfile.mkdtemp(prefix="symjac-bench-"))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
        cmd = [sys.executable, __file__, "--one", label, json.dumps(names)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        results[label] = {r["name"]: r for r in json.loads(done.stdout.strip().splitlines()[-1])}
    head = (
        ("problem", 24),
        ("pipeline", 28),
        ("road", 15),
        ("build", -9),
        ("batch, 1 thread", -17),
        ("one call", -10),
    )
    print(" ".join(f"{text:{'>' if width < 0 else '<'}{abs(width)}}" for text, width in head))
    base = results["O3 (symjac's)"]
    for name in names:
        for label, rows in results.items():
            r = rows[name]
            J, ref = np.array(r["J"]), np.array(base[name]["J"])
            agree = np.max(np.abs(J - ref)) <= 1e-12 * max(1.0, np.max(np.abs(ref)))
            print(
                f"{name:24s} {label:28s} {r['road']:15s} {r['build'] * 1e3:7.1f}ms "
                f"{r['rate'] / 1e6:13.3f}M/s {r['single'] * 1e6:8.2f}us" + ("" if agree else "  DIFFERS")
            )


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        main(sys.argv[1:])
