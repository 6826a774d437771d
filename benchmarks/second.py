"""Compiled second derivatives: symjac.compile(mode="hessian" | "hvp") against JAX and torch.

Run: python benchmarks/second.py [--quick]     (peers from the `bench` extra: jax, torch)

Every problem runs in a fresh process with a fresh kernel cache. For each, in the same process:
symjac's build (trace, gradient graph, LLVM; the first call included) against JAX's first call of
jit(hessian) (trace and XLA compile) and torch.func's hessian; the warm single call; a batch of
1000 points into a preallocated result against jit(vmap(hessian)) and torch.func's vmap(hessian);
and, where it finishes within ELEMENT_LIMIT seconds, the build and the batch on the element road
(expand="elements"), the only road compile had for second derivatives before the gradient
graph, and the one expand="auto" keeps for the smallest losses. Ratios are what count;
absolute times on a shared machine are noise.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from timing import best  # noqa: E402

POINTS = 1000
ELEMENT_LIMIT = 120  # seconds for the element road's build, in its own process


def _namespace(kind):
    if kind == "numpy":
        from scipy import special

        # looked up at each call: symjac swaps SciPy's function for its own op while it traces
        return types.SimpleNamespace(
            tanh=np.tanh, lse=lambda y: special.logsumexp(y), c=lambda a: a, sum=np.sum
        )
    if kind == "torch":
        import torch

        return types.SimpleNamespace(
            tanh=torch.tanh, lse=lambda y: torch.logsumexp(y, 0), c=torch.from_numpy, sum=torch.sum
        )
    import jax

    return types.SimpleNamespace(
        tanh=jax.numpy.tanh, lse=jax.nn.logsumexp, c=jax.numpy.asarray, sum=jax.numpy.sum
    )


def mlp_loss(sizes):
    """A cross-entropy-like loss of a tanh MLP: ``logsumexp(y) - y[0]`` plus a small ridge."""
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((b, a)) / math.sqrt(a) for a, b in zip(sizes, sizes[1:], strict=False)]

    def loss(ns, x):
        h = x
        for k, w in enumerate(W):
            h = ns.c(w) @ h
            if k < len(W) - 1:
                h = ns.tanh(h)
        return ns.lse(h) - h[0] + 1e-3 * ns.sum(x * x)

    return loss, sizes[0]


PROBLEMS = {
    "Hessian of tanh MLP loss 4-8-8-2": lambda: (*mlp_loss([4, 8, 8, 2]), "hessian"),
    "Hessian of tanh MLP loss 4-16-16-2": lambda: (*mlp_loss([4, 16, 16, 2]), "hessian"),
    "Hessian of tanh MLP loss 8-32-32-4": lambda: (*mlp_loss([8, 32, 32, 4]), "hessian"),
    "Hessian of tanh MLP loss 32-64-64-4": lambda: (*mlp_loss([32, 64, 64, 4]), "hessian"),
    "Hessian of tanh MLP loss 64-256-256-10": lambda: (*mlp_loss([64, 256, 256, 10]), "hessian"),
    "hvp of tanh MLP loss 64-256-256-10": lambda: (*mlp_loss([64, 256, 256, 10]), "hvp"),
}
QUICK = [
    "Hessian of tanh MLP loss 4-16-16-2",
    "Hessian of tanh MLP loss 8-32-32-4",
    "hvp of tanh MLP loss 64-256-256-10",
]


def one(name):
    f, n, mode = PROBLEMS[name]()
    rng = np.random.default_rng(2)
    x, v = rng.uniform(-1, 1, n), rng.standard_normal(n)
    X, V = rng.uniform(-1, 1, (POINTS, n)), rng.standard_normal((POINTS, n))
    kw = {"v": v} if mode == "hvp" else {}
    out = {"name": name}
    import symjac

    ns = _namespace("numpy")
    npf = lambda y: f(ns, y)  # noqa: E731
    t = time.perf_counter()
    cf = symjac.compile(npf, x, mode=mode)
    ours = cf(x, **kw)
    out["symjac_build"] = time.perf_counter() - t
    out["road"] = cf.spec.road
    out["symjac_warm"] = best(lambda: cf(x, **kw))
    result = np.empty((POINTS, n) if mode == "hvp" else (POINTS, n, n))
    bkw = {"v": V} if mode == "hvp" else {}
    out["symjac_batch"] = best(lambda: cf(X, out=result, **bkw)) / POINTS
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        jf = lambda y: f(_namespace("jax"), y)  # noqa: E731
        if mode == "hvp":
            one_ = lambda y, u: jax.jvp(jax.grad(jf), (y,), (u,))[1]  # noqa: E731
            single, batch = jax.jit(one_), jax.jit(jax.vmap(one_))
            args, bargs = (
                (jax.numpy.asarray(x), jax.numpy.asarray(v)),
                (jax.numpy.asarray(X), jax.numpy.asarray(V)),
            )
        else:
            single, batch = jax.jit(jax.hessian(jf)), jax.jit(jax.vmap(jax.hessian(jf)))
            args, bargs = (jax.numpy.asarray(x),), (jax.numpy.asarray(X),)
        t = time.perf_counter()
        theirs = single(*args).block_until_ready()
        out["jax_first"] = time.perf_counter() - t
        out["jax_warm"] = best(lambda: single(*args).block_until_ready())
        batch(*bargs).block_until_ready()
        out["jax_batch"] = best(lambda: batch(*bargs).block_until_ready()) / POINTS
        out["err_vs_jax"] = float(np.max(np.abs(np.asarray(theirs) - ours)))
    except ImportError:
        pass
    try:
        import torch
        from torch import func as tfunc

        torch.set_num_threads(1)
        tf = lambda y: f(_namespace("torch"), y)  # noqa: E731
        if mode == "hvp":
            one_ = lambda y, u: tfunc.jvp(tfunc.grad(tf), (y,), (u,))[1]  # noqa: E731
            args, bargs = (
                (torch.from_numpy(x), torch.from_numpy(v)),
                (torch.from_numpy(X), torch.from_numpy(V)),
            )
        else:
            one_ = tfunc.hessian(tf)
            args, bargs = (torch.from_numpy(x),), (torch.from_numpy(X),)
        t = time.perf_counter()
        one_(*args)
        out["torch_first"] = time.perf_counter() - t
        out["torch_warm"] = best(lambda: one_(*args))
        out["torch_batch"] = best(lambda: tfunc.vmap(one_)(*bargs), most=20) / POINTS
    except ImportError:
        pass
    return out


def element_road(name):
    """The element road's build (and first call) in seconds, and its batch's seconds a point, in
    this process: what compile took before gradient graphs, and what expand="auto" weighs them
    against (roads.SECOND_LOOPS_FROM)."""
    f, n, mode = PROBLEMS[name]()
    import symjac

    rng = np.random.default_rng(2)
    x, X = rng.uniform(-1, 1, n), rng.uniform(-1, 1, (POINTS, n))
    kw, bkw = ({"v": x}, {"v": X}) if mode == "hvp" else ({}, {})
    ns = _namespace("numpy")
    t = time.perf_counter()
    cf = symjac.compile(lambda y: f(ns, y), x, mode=mode, expand="elements")
    cf(x, **kw)
    build = time.perf_counter() - t
    result = np.empty((POINTS, n) if mode == "hvp" else (POINTS, n, n))
    return {"build": build, "batch": best(lambda: cf(X, out=result, **bkw)) / POINTS}


def _fmt(s):
    if s is None:
        return "-"
    if isinstance(s, str):
        return s
    return f"{s * 1e6:.2f} us" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _run(args, timeout):
    env = dict(os.environ, SYMJAC_CACHE_DIR=tempfile.mkdtemp(prefix="symjac-bench-"), SYMJAC_PROGRESS="0")
    try:
        done = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode:
        print(f"{args}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    names = QUICK if "--quick" in sys.argv else list(PROBLEMS)
    rows = []
    for name in names:
        r = _run(["--one", name], 1800)
        if r is None:
            continue
        elements = _run(["--elements", name], ELEMENT_LIMIT) or {"build": f"over {ELEMENT_LIMIT} s"}
        r["element_build"], r["element_batch"] = elements["build"], elements.get("batch")
        rows.append(r)
        print(f"done: {name}", file=sys.stderr, flush=True)
    print(
        "| problem | road | symjac build | JAX first | JAX / symjac | torch first | element road build | "
        "symjac warm | JAX warm | torch warm | symjac batch /pt | JAX vmap /pt | JAX / symjac | "
        "torch vmap /pt | element road batch /pt | max abs diff vs JAX |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        first = f"{r['jax_first'] / r['symjac_build']:.2f}x" if "jax_first" in r else "-"
        batch = f"{r['jax_batch'] / r['symjac_batch']:.2f}x" if "jax_batch" in r else "-"
        print(
            f"| {r['name']} | {r['road']} | {_fmt(r['symjac_build'])} | {_fmt(r.get('jax_first'))} | "
            f"{first} | {_fmt(r.get('torch_first'))} | {_fmt(r['element_build'])} | "
            f"{_fmt(r['symjac_warm'])} | "
            f"{_fmt(r.get('jax_warm'))} | {_fmt(r.get('torch_warm'))} | {_fmt(r['symjac_batch'])} | "
            f"{_fmt(r.get('jax_batch'))} | {batch} | {_fmt(r.get('torch_batch'))} | "
            f"{_fmt(r['element_batch'])} | "
            f"{r.get('err_vs_jax', float('nan')):.1e} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2])))
    elif len(sys.argv) > 2 and sys.argv[1] == "--elements":
        print(json.dumps(element_road(sys.argv[2])))
    else:
        main()
