"""symjac.compile against its peers, all measured in this one run.

Run: pip install -e ".[bench]" && python benchmarks/compiled.py [--quick]

Per problem it prints:
  build     - symjac.compile from scratch (trace, exact derivative, LLVM; no disk cache)
              and JAX's first call of jit(jacfwd) (trace + XLA compile); then the first batch
              call of each (symjac builds its batch kernel: SIMD, or the unrolled kernel of a
              rolled one; JAX compiles jit(vmap(...)))
  latency   - one Jacobian at one point: the bare call floor (a kernel with one zero store,
              called the same way), symjac, torch.autograd.functional (vectorize=True), torch.func.jacrev,
              JAX jit, CasADi Function, SymEngine Lambdify and SymPy lambdify (both given
              symjac's exact Jacobian, with cse=True)
  batch     - points per second over a batch: symjac (one thread, and all cores), the same CSE'd
              expressions as C compiled with gcc -O3 -march=native (single thread), JAX
              jit(vmap(jacfwd)) and CasADi Function.map
The Brusselators are compiled with sparse="csr" (CasADi also returns only the nonzeros).
Peers that are not installed, or too slow for a problem's size, print "-".
"""

from __future__ import annotations

import ctypes
import functools
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import timing  # noqa: E402
from problems import PROBLEMS, casadi_ns, jax_ns, numpy_ns, torch_ns  # noqa: E402

import symjac  # noqa: E402

per_call = functools.partial(timing.per_call, budget=0.3)  # seven problems, many peers: keep it short


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


def c_limit(cf, X, tmp):
    """Points/s of the CSE'd program as C (gcc -O3 -march=native), one thread."""
    cf.write_c(tmp, "jac")
    layout = cf.kernel.layout
    loop = pathlib.Path(tmp) / "loop.c"
    loop.write_text(
        '#include "jac.h"\n'
        "void batch(const double *in, double *out, long n) {\n"
        f"    for (long i = 0; i < n; ++i) jac(in + i * {layout.n_in}, out + i * {layout.n64}, 0);\n"
        "}\n"
    )
    lib = pathlib.Path(tmp) / "libjac.so"
    cmd = [
        "gcc",
        "-O3",
        "-march=native",
        "-shared",
        "-fPIC",
        "-o",
        str(lib),
        str(pathlib.Path(tmp) / "jac.c"),
        str(loop),
        "-lm",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    fn = ctypes.CDLL(str(lib)).batch
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
    n = X.shape[0]

    def run():
        out = np.zeros((n, layout.n64))
        fn(X.ctypes.data, out.ctypes.data, n)
        return out

    expected = np.asarray(cf(X)).reshape(n, -1)
    assert np.allclose(run(), expected), "C export disagrees"
    return n / per_call(run)


def fmt(seconds):
    if seconds is None:
        return "-"
    return f"{seconds * 1e6:.2f}us" if seconds < 1e-3 else f"{seconds * 1e3:.2f}ms"


def rate(points_per_s):
    return "-" if points_per_s is None else f"{points_per_s / 1e6:.3f}M/s"


def main():
    quick = "--quick" in sys.argv
    torch, jax, casadi, symengine = (_optional(m) for m in ("torch", "jax", "casadi", "symengine"))
    if jax:
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
    if torch:
        torch.set_num_threads(1)
    import sympy

    rows = []
    problems = PROBLEMS[:-1] if quick else PROBLEMS
    for name, f, n in problems:
        big = n > 500
        sparse = "csr" if "Brusselator" in name else None  # like CasADi, keep only the nonzeros
        x0 = np.random.default_rng(1).uniform(0.1, 1.0, n)
        func = (lambda ns: lambda x: f(ns, x))(numpy_ns())
        start = time.perf_counter()
        cf = symjac.compile(func, x0, cache=False, sparse=sparse)
        build = time.perf_counter() - start
        J = cf(x0).toarray() if sparse else cf(x0)
        r = {"problem": f"{name} ({n}{', sparse' if sparse else ''})", "build": build}
        floor = symjac.compile(lambda x: x[:1] * 0.0, x0, cache=False)
        r["floor"] = per_call(lambda: floor(x0))
        r["symjac"] = per_call(lambda: cf(x0))
        if torch:
            tf = (lambda ns: lambda x: f(ns, x))(torch_ns())
            tx = torch.from_numpy(x0)
            assert np.allclose(torch.autograd.functional.jacobian(tf, tx, vectorize=True).numpy(), J)
            r["torch"] = per_call(lambda: torch.autograd.functional.jacobian(tf, tx, vectorize=True))
            jr = torch.func.jacrev(tf)
            r["torch.func"] = per_call(lambda: jr(tx))
        if jax:
            jf = (lambda ns: lambda x: f(ns, x))(jax_ns())
            jx = jnp.asarray(x0)
            start = time.perf_counter()
            jj = jax.jit(jax.jacfwd(jf))
            jj(jx).block_until_ready()
            r["jax build"] = time.perf_counter() - start
            assert np.allclose(np.asarray(jj(jx)), J)
            r["jax"] = per_call(lambda: jj(jx).block_until_ready())
        if casadi:
            X = casadi.SX.sym("x", n)
            F = casadi.Function("J", [X], [casadi.jacobian(f(casadi_ns(), X), X)])
            assert np.allclose(np.array(F(x0)), J)
            r["casadi"] = per_call(lambda: F(x0))
        if not big:
            view = symjac.symbolic(func, x0)
            syms, M = list(view.inputs[0].flat), view.matrix
            if symengine:
                lam = symengine.Lambdify(syms, M, cse=True)
                assert np.allclose(lam(x0), J)
                r["symengine"] = per_call(lambda: lam(x0))
            lf = sympy.lambdify([syms], M, modules="numpy", cse=True)
            assert np.allclose(lf(x0), J)
            r["sympy"] = per_call(lambda: lf(x0))
        # batched throughput
        B = 4 if big else (2_000 if n > 50 else 20_000)
        Xb = np.random.default_rng(2).uniform(0.1, 1.0, (B, n))
        cf._threads = 1
        start = time.perf_counter()
        cf(Xb)  # the first batch builds the batch kernel (SIMD, or unrolled where rolled)
        r["first batch"] = time.perf_counter() - start
        r["symjac 1t"] = B / per_call(lambda: cf(Xb))
        cf._threads = os.cpu_count() or 1
        r["symjac"] = r["symjac"]
        r["symjac all"] = B / per_call(lambda: cf(Xb))
        with tempfile.TemporaryDirectory() as tmp:
            r["C -O3"] = c_limit(cf, Xb, tmp)
        if jax:
            jv = jax.jit(jax.vmap(jax.jacfwd(jf)))
            jX = jnp.asarray(Xb)
            start = time.perf_counter()
            jv(jX).block_until_ready()
            r["jax vmap first"] = time.perf_counter() - start
            r["jax vmap"] = B / per_call(lambda: jv(jX).block_until_ready())
        if casadi:
            Fm = F.map(B)
            Xt = Xb.T.copy()
            Fm(Xt)
            r["casadi map"] = B / per_call(lambda: Fm(Xt))
        rows.append(r)
        print(f"done: {name}", file=sys.stderr, flush=True)

    lat_cols = ["floor", "symjac", "torch", "torch.func", "jax", "casadi", "symengine", "sympy"]
    print("\nSingle-call latency (one Jacobian at one point)")
    print(f"{'problem':28s}" + "".join(f"{c:>12s}" for c in lat_cols) + f"{'best peer/symjac':>18s}")
    for r in rows:
        peers = [r[c] for c in lat_cols[2:] if r.get(c) is not None]
        ratio = min(peers) / r["symjac"] if peers else None
        print(
            f"{r['problem']:28s}"
            + "".join(f"{fmt(r.get(c)):>12s}" for c in lat_cols)
            + f"{'-' if ratio is None else f'{ratio:.2f}x':>18s}"
        )
    bat_cols = ["symjac 1t", "symjac all", "C -O3", "jax vmap", "casadi map"]
    print("\nBatched throughput (Jacobians per second)")
    print(f"{'problem':28s}" + "".join(f"{c:>13s}" for c in bat_cols) + f"{'symjac all / best(C, jax)':>28s}")
    for r in rows:
        ref = [r[c] for c in ("C -O3", "jax vmap") if r.get(c) is not None]
        ratio = r["symjac all"] / max(ref) if ref else None
        print(
            f"{r['problem']:28s}"
            + "".join(f"{rate(r.get(c)):>13s}" for c in bat_cols)
            + f"{'-' if ratio is None else f'{ratio:.2f}x':>28s}"
        )
    print("\nBuild time (compile to a callable, then the first batch call, which builds the batch kernel)")
    print(f"{'problem':28s}{'symjac':>12s}{'jax first call':>16s}{'symjac batch':>14s}{'jax vmap first':>16s}")
    for r in rows:
        print(
            f"{r['problem']:28s}{fmt(r['build']):>12s}{fmt(r.get('jax build')):>16s}"
            f"{fmt(r['first batch']):>14s}{fmt(r.get('jax vmap first')):>16s}"
        )


if __name__ == "__main__":
    main()
