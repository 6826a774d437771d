"""symjac.compile's loop road (expand="arrays") against JAX on tanh MLPs, in one run.

Run: python benchmarks/loops.py [--elements] [--points N]

Per MLP 8->H->H->4 (H = 32, 64, 256; float64) it prints:
  build  - symjac.compile(f, x, expand="arrays", cache=False) from scratch (trace, loop program,
           LLVM O3), and JAX's first call of jit(jacfwd(f)) (trace + XLA compile + one call);
           with --elements also symjac's element road (expand="elements"; H=256 skipped, minutes)
  batch  - Jacobians per second over N points (default 20000): symjac into a preallocated
           out= buffer (one thread), JAX jit(vmap(jacfwd(f))) (its result is allocated by XLA:
           JAX has no out=), best of 5 after a warm-up call
Both libraries are warmed up on a tiny function first (imports, LLVM and XLA initialisation),
so that build times are those of the model. Results are checked against each other.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("SYMJAC_CACHE_DIR", tempfile.mkdtemp())  # never a warm disk cache


def mlp(hidden, seed=0):
    rng = np.random.default_rng(seed)
    W1, b1 = rng.standard_normal((hidden, 8)) / 3, rng.standard_normal(hidden)
    W2, b2 = rng.standard_normal((hidden, hidden)) / np.sqrt(hidden), rng.standard_normal(hidden)
    W3 = rng.standard_normal((4, hidden))

    def make(ns):
        def f(x):
            h = ns.tanh(W1 @ x + b1)
            h = ns.tanh(W2 @ h + b2)
            return W3 @ h

        return f

    return make


def best(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--elements", action="store_true", help="also the element road (slow builds)")
    parser.add_argument("--points", type=int, default=20000)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    import symjac

    jax.config.update("jax_enable_x64", True)
    symjac.compile(lambda x: np.ones((2, 2)) @ np.tanh(x + 1.0), np.zeros(2), expand="arrays", cache=False)
    jax.jit(jax.jacfwd(lambda x: jnp.ones((2, 2)) @ jnp.tanh(x + 1.0)))(jnp.zeros(2)).block_until_ready()

    n = args.points
    X = np.random.default_rng(1).standard_normal((n, 8))
    Xj = jnp.asarray(X)
    print(f"{'model':<16}{'road':<22}{'build s':>10}{'batch pts/s':>14}{'vs JAX':>9}")
    for hidden in (32, 64, 256):
        make = mlp(hidden)
        name = f"8-{hidden}-{hidden}-4"
        t = time.perf_counter()
        jf = jax.jit(jax.jacfwd(make(jnp)))
        jf(jnp.zeros(8)).block_until_ready()
        jax_build = time.perf_counter() - t
        jv = jax.jit(jax.vmap(jax.jacfwd(make(jnp))))
        jax_batch = best(lambda jv=jv: jv(Xj).block_until_ready())
        want = np.asarray(jv(Xj))
        print(f"{name:<16}{'JAX jit(jacfwd)':<22}{jax_build:>10.3f}{n / jax_batch:>14.3g}{1:>9.2f}")
        roads = [("arrays", "symjac loops")] + ([("elements", "symjac elements")] if args.elements else [])
        for expand, label in roads:
            if expand == "elements" and hidden > 64:
                continue
            t = time.perf_counter()
            cf = symjac.compile(make(np), np.zeros(8), expand=expand, cache=False)
            build = time.perf_counter() - t
            out = np.empty((n, 4, 8))
            batch = best(lambda cf=cf, out=out: cf(X, out=out))
            err = np.max(np.abs(out - want)) / max(1.0, np.max(np.abs(want)))
            assert err < 1e-12, f"{label} disagrees with JAX by {err:.2e} on {name}"
            ratio = jax_batch / batch
            print(f"{'':<16}{label:<22}{build:>10.3f}{n / batch:>14.3g}{ratio:>9.2f}")


if __name__ == "__main__":
    main()
