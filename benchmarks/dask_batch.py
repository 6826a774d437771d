"""A large batch of Jacobians with dask: a 2-worker LocalCluster against local threads, same run.

Run: pip install -e ".[dask]" && python benchmarks/dask_batch.py [--points N] [--chunk C]

The problem is the Robertson system's 3x3 Jacobian. The points are generated on the workers
(``dask.array.random``) and all Jacobians are summed to one number, so the figures are what
the kernels and the scheduler cost, not moving 72 bytes per point to the client (on a real
cluster the results would stay distributed, or be reduced, too). Worker-side functions run
each chunk on one thread: dask runs the chunks in parallel. Reported:
  one core      symjac's batch call on one thread, no dask (the per-core ceiling)
  threads       dask's local threaded scheduler, 2 threads
  cluster       dask.distributed LocalCluster, 2 worker processes x 1 thread
each as points per second (random points generated, Jacobians computed and summed), and per
core; and the scheduling overhead per chunk: a graph of 1000 no-op chunks against one of 1.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from problems import numpy_ns, robertson  # noqa: E402

import symjac  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=500_000)
    args = parser.parse_args()
    import dask
    import dask.array as da
    import distributed

    f = (lambda ns: lambda y: robertson(ns, y))(numpy_ns())
    cf = symjac.compile(f, np.zeros(3))
    cf._threads = 1
    n, chunk = args.points, args.chunk
    n_chunks = -(-n // chunk)

    rng = np.random.default_rng(0)
    cf(rng.uniform(0.1, 1.0, (chunk, 3)))  # build the batch kernel
    start = time.perf_counter()
    cf(rng.uniform(0.1, 1.0, (chunk, 3))).sum()  # the same work as one chunk's task
    one_core = chunk / (time.perf_counter() - start)

    def graph():
        X = da.random.default_rng(0).uniform(0.1, 1.0, (n, 3), chunks=(chunk, 3))
        return cf(X).sum()

    def noops(count):
        return da.ones((count,), chunks=1).map_blocks(lambda b: b + 1.0)

    def timed(compute):
        compute(graph())  # warm: workers build or load the kernel, numpy warms up
        start = time.perf_counter()
        total = compute(graph())
        elapsed = time.perf_counter() - start
        # Per chunk: 1000 no-op chunks against one, so the fixed round trip cancels out.
        costs = []
        for count in (1, 1000):
            compute(noops(count))
            start = time.perf_counter()
            compute(noops(count))
            costs.append(time.perf_counter() - start)
        return n / elapsed, (costs[1] - costs[0]) / 999, total

    with dask.config.set(scheduler="threads", num_workers=2):
        threads, threads_overhead, t_total = timed(lambda g: g.compute())
    env = {"SYMJAC_CACHE_DIR": os.environ.get("SYMJAC_CACHE_DIR") or tempfile.mkdtemp(prefix="symjac-bench-")}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(pathlib.Path(__file__).parents[1]), os.environ.get("PYTHONPATH")])
    )
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=env,
            silence_logs=40,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        cluster_rate, cluster_overhead, c_total = timed(lambda g: client.compute(g, sync=True))
    assert np.array_equal(t_total, c_total), "cluster and local threads disagree"

    print(
        f"Robertson 3x3 Jacobians, {n:.0e} points in {n_chunks} chunks of {chunk}; {os.cpu_count()} CPUs here"
    )
    print(f"  {'':22s}{'points/s':>14s}{'per core':>14s}{'overhead/chunk':>16s}")
    rows = [
        ("one core, no dask", one_core, 1, None),
        ("threads (2)", threads, 2, threads_overhead),
        ("cluster (2 x 1)", cluster_rate, 2, cluster_overhead),
    ]
    for name, rate, cores, overhead in rows:
        per_chunk = "-" if overhead is None else f"{overhead * 1e3:.2f}ms"
        print(f"  {name:22s}{rate / 1e6:12.2f}M/s{rate / cores / 1e6:12.2f}M/s{per_chunk:>16s}")


if __name__ == "__main__":
    main()
