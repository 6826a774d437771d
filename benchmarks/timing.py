"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
import timeit


def per_call(fn, budget: float = 0.5) -> float:
    """Best-of-5 seconds per call, each repeat sized to about budget/5 seconds."""
    n = 1
    while True:
        t = timeit.timeit(fn, number=n)
        if t > budget / 25 or n > 1_000_000:
            break
        n *= 4
    number = max(1, int(n * (budget / 5) / max(t, 1e-9)))
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def best(fn, budget: float = 0.5, most: int = 200) -> float:
    """The fastest of at least 3 calls, and of as many more as fit ``budget`` seconds (at most
    ``most``): a first call's caches warmed, without timeit's repeats of a slow function."""
    times, start = [], time.perf_counter()
    while len(times) < most and (len(times) < 3 or time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
