"""The drop-in API at the sizes users reach: first call, warm call, warm call after a weight change.

Run: python benchmarks/dropin.py [--quick]     (peers from the `bench` extra: torch, jax)

Every problem runs in a fresh process with a fresh kernel cache, so a first call pays every
one-time cost (SymPy's lazy imports, lambdify, LLVM), as a new user's would. In the same process:
torch.autograd.functional.jacobian (first and warm) and JAX's jit(jacfwd) (first call: trace and
XLA compile; warm); for the Hessian problems, each one's hessian (JAX: jit(hessian)), and for
the hvp problems each one's hvp (JAX: jit of jvp of grad). symjac's
"warm" is its best of the first 200 warm calls; "steady" its best after a further second of
calls, by when a model whose array-road calls have cost as much as its kernel's build has bought
the kernel ("(bought)"). Ratios are what count; absolute times on a shared machine are noise.
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

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

from timing import best  # noqa: E402

# --- problems, each written once against a namespace (NumPy, torch, JAX) --------------------------


def _namespace(kind):
    if kind == "numpy":
        return types.SimpleNamespace(
            tanh=np.tanh, exp=np.exp, log=np.log, maximum=np.maximum, c=lambda a: a,
            sum=lambda x, a: np.sum(x, axis=a), amax=lambda x: np.max(x), cat=np.concatenate,
        )  # fmt: skip
    if kind == "torch":
        import torch

        return types.SimpleNamespace(
            tanh=torch.tanh, exp=torch.exp, log=torch.log, c=torch.from_numpy,
            maximum=lambda x, y: torch.clamp(x, min=y), sum=lambda x, a: torch.sum(x, dim=a),
            amax=lambda x: torch.max(x), cat=torch.cat,
        )  # fmt: skip
    import jax.numpy as jnp

    return types.SimpleNamespace(
        tanh=jnp.tanh, exp=jnp.exp, log=jnp.log, maximum=jnp.maximum, c=jnp.asarray,
        sum=lambda x, a: jnp.sum(x, axis=a), amax=lambda x: jnp.max(x), cat=jnp.concatenate,
    )  # fmt: skip


def mlp(sizes, act="tanh", log_softmax=False):
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((b, a)) / math.sqrt(a) for a, b in zip(sizes, sizes[1:], strict=False)]
    B = [rng.standard_normal(b) / 4 for b in sizes[1:]]

    def f(ns, x):
        h = x
        for k, (w, b) in enumerate(zip(W, B, strict=True)):
            h = ns.c(w) @ h + ns.c(b)
            if k < len(W) - 1:
                h = ns.tanh(h) if act == "tanh" else ns.maximum(h, 0.0)
        if log_softmax:
            z = h - ns.amax(h)
            h = z - ns.log(ns.sum(ns.exp(z), 0))
        return h

    return f, sizes[0], W


def nbody(n):
    rng = np.random.default_rng(1)
    mass = rng.uniform(0.5, 1.5, n)

    def f(ns, s):
        r, v = s[: 3 * n].reshape(n, 3), s[3 * n :].reshape(n, 3)
        d = r[None, :, :] - r[:, None, :]
        inv = (ns.sum(d * d, 2) + 0.01) ** -1.5
        acc = ns.sum(ns.c(mass)[None, :, None] * d * inv[:, :, None], 1)
        return ns.cat([v.reshape(-1), acc.reshape(-1)])

    return f, 6 * n, None


def brusselator(n):
    from problems import brusselator as rhs

    b = rhs(n)

    def f(ns, y):
        return b(types.SimpleNamespace(concatenate=ns.cat), y)

    return f, 2 * n * n, None


def mlp_loss(sizes):
    """A scalar loss of a tanh MLP (logsumexp of its outputs): its Hessian in the input."""
    f, n_in, W = mlp(sizes)

    def loss(ns, x):
        h = f(ns, x)
        top = ns.amax(h)
        return ns.log(ns.sum(ns.exp(h - top), 0)) + top

    return loss, n_in, W


def logsumexp(n):
    def f(ns, x):
        top = ns.amax(x)
        return ns.log(ns.sum(ns.exp(x - top), 0)) + top

    return f, n, None


def exp_sum(n):
    return (lambda ns, x: ns.sum(ns.exp(x) * ns.tanh(x), 0)), n, None


# Problems whose derivative is the Hessian (symjac.hessian, torch's hessian, JAX's jit(hessian)),
# or a Hessian-vector product (hvp; JAX: jit of jvp of grad).
HESSIANS = {
    "Hessian of tanh MLP loss 8-32-32-4",
    "Hessian of tanh MLP loss 32-64-64-4",
    "Hessian of logsumexp n=300",
    "Hessian of logsumexp n=1000",
}
HVPS = {"hvp of sum(exp(x) tanh(x)) n=4096", "hvp of sum(exp(x) tanh(x)) n=16384"}

PROBLEMS = {
    "tanh MLP 8-32-32-4": lambda: mlp([8, 32, 32, 4]),
    "tanh MLP 8-64-64-4": lambda: mlp([8, 64, 64, 4]),
    "tanh MLP 8-256-256-4": lambda: mlp([8, 256, 256, 4]),
    "ReLU MLP 4-6-3 log_softmax": lambda: mlp([4, 6, 3], "relu", True),
    "ReLU MLP 8-64-64-10 log_softmax": lambda: mlp([8, 64, 64, 10], "relu", True),
    "N-body N=20": lambda: nbody(20),
    "N-body N=100": lambda: nbody(100),
    "Brusselator 2x8^2": lambda: brusselator(8),
    "Brusselator 2x32^2": lambda: brusselator(32),
    "Brusselator 2x64^2": lambda: brusselator(64),
    "Hessian of tanh MLP loss 8-32-32-4": lambda: mlp_loss([8, 32, 32, 4]),
    "Hessian of tanh MLP loss 32-64-64-4": lambda: mlp_loss([32, 64, 64, 4]),
    "Hessian of logsumexp n=300": lambda: logsumexp(300),
    "Hessian of logsumexp n=1000": lambda: logsumexp(1000),
    "hvp of sum(exp(x) tanh(x)) n=4096": lambda: exp_sum(4096),
    "hvp of sum(exp(x) tanh(x)) n=16384": lambda: exp_sum(16384),
}
QUICK = [
    "tanh MLP 8-32-32-4",
    "ReLU MLP 4-6-3 log_softmax",
    "N-body N=20",
    "Brusselator 2x8^2",
    "Hessian of tanh MLP loss 8-32-32-4",
    "Hessian of logsumexp n=1000",
    "hvp of sum(exp(x) tanh(x)) n=4096",
]


# --- one problem, in this process ------------------------------------------------------------------


def one(name):
    f, n_in, weights = PROBLEMS[name]()
    x = np.random.default_rng(2).uniform(0.2, 0.9, n_in)
    out = {"name": name, "n_in": n_in}
    import symjac
    from symjac import arrays, functional

    npf = lambda y: f(_namespace("numpy"), y)  # noqa: E731
    what = "hessian" if name in HESSIANS else "hvp" if name in HVPS else "jacobian"
    v = np.random.default_rng(3).standard_normal(n_in)
    ours = _with_v(getattr(symjac, what), v, what)
    t = time.perf_counter()
    J = ours(npf, x)
    out["symjac_first"] = time.perf_counter() - t
    graph = functional._Call(npf, (x,), False, "bench", params=True).graph
    out["road"] = arrays.choose(graph, n_in, "auto", what)
    out["symjac_warm"] = best(lambda: ours(npf, x))
    # A fitting or simulation loop calls on: once the array road's calls have cost as much as a
    # kernel's build, the kernel takes over (ski rental). "steady": the best call after a second.
    start, kernels = time.perf_counter(), len(functional._KERNELS.data)
    while time.perf_counter() - start < 1.0:
        ours(npf, x)
    out["symjac_steady"] = best(lambda: ours(npf, x))
    out["bought"] = len(functional._KERNELS.data) > kernels
    try:
        import torch
        from torch.autograd import functional as AF

        tj = _with_v(getattr(AF, what), torch.from_numpy(v), what)

        torch.set_num_threads(1)
        tf = lambda y: f(_namespace("torch"), y)  # noqa: E731
        xt = torch.from_numpy(x)
        t = time.perf_counter()
        Jt = tj(tf, xt)
        out["torch_first"] = time.perf_counter() - t
        out["torch_warm"] = best(lambda: tj(tf, xt))
        out["err_vs_torch"] = float(np.max(np.abs(np.asarray(J) - Jt.numpy())))
    except ImportError:
        pass
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        jaxf = lambda y: f(_namespace("jax"), y)  # noqa: E731
        if what == "hvp":
            vj = jax.numpy.asarray(v)
            jf = jax.jit(lambda y: jax.jvp(jax.grad(jaxf), (y,), (vj,))[1])
        else:
            jf = jax.jit((jax.hessian if what == "hessian" else jax.jacfwd)(jaxf))
        xj = jax.numpy.asarray(x)
        t = time.perf_counter()
        jf(xj).block_until_ready()
        out["jax_first"] = time.perf_counter() - t
        out["jax_warm"] = best(lambda: jf(xj).block_until_ready())
    except ImportError:
        pass
    if weights is not None:  # last: the peers above differentiate the same weights

        def changed():
            weights[0] += 1e-9  # an optimiser step, in place
            return ours(npf, x)

        out["symjac_changed"] = best(changed)
    return out


def _with_v(fn, v, what):
    """``fn(f, x)``: the derivative alone (an hvp's product, without the value)."""
    if what != "hvp":
        return fn
    return lambda f, x: fn(f, x, v)[1]


# --- the table ----------------------------------------------------------------------------------


def _fmt(s):
    if s is None:
        return "-"
    return f"{s * 1e6:.0f} us" if s < 1e-3 else f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def main():
    names = QUICK if "--quick" in sys.argv else list(PROBLEMS)
    rows = []
    for name in names:
        env = dict(os.environ, SYMJAC_CACHE_DIR=tempfile.mkdtemp(prefix="symjac-bench-"), SYMJAC_PROGRESS="0")
        done = subprocess.run(
            [sys.executable, __file__, "--one", name], capture_output=True, text=True, env=env, timeout=1800
        )
        if done.returncode:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"done: {name}", file=sys.stderr, flush=True)
    print(
        "| problem | road | symjac first | JAX first (jit(jacfwd)) | JAX / symjac | torch first | "
        "symjac warm | steady (kernel) | after weight change | torch warm | JAX warm | "
        "max abs diff vs torch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['jax_first'] / r['symjac_first']:.2f}x" if "jax_first" in r else "-"
        print(
            f"| {r['name']} | {r['road']} | {_fmt(r['symjac_first'])} | {_fmt(r.get('jax_first'))} | "
            f"{ratio} | {_fmt(r.get('torch_first'))} | {_fmt(r['symjac_warm'])} | "
            f"{_fmt(r['symjac_steady'])}{' (bought)' if r['bought'] else ''} | "
            f"{_fmt(r.get('symjac_changed'))} | {_fmt(r.get('torch_warm'))} | {_fmt(r.get('jax_warm'))} | "
            f"{r.get('err_vs_torch', float('nan')):.1e} |"
        )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2])))
    else:
        main()
