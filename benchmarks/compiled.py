"""symjac.compile against its peers, all measured in this one run (issue 11's benchmark).

Run: pip install -e ".[bench]" && python benchmarks/compiled.py [--quick] [--only NAME ...]
       [--json ROWS.json]     (keeps the measured rows; --report ROWS.json prints their tables again)

Every problem (benchmarks/problems.py, each written once against a namespace, so every peer runs
the same model) runs in a fresh process with a fresh kernel cache. In it, each tool first
handles one trivial function, so that one-time start-up (LLVM, SymPy's lazy imports, XLA's
client, torch's vmap) is paid by none of the timings below. Then, per problem:

  build     - symjac.compile from scratch (trace, exact derivative, LLVM; no disk cache), and the
              peak resident memory of the process at its end (ru_maxrss: interpreter, NumPy and
              symjac included; "+" is what the build added). Before any peer is imported.
            - JAX's first call of jit(jacfwd) (trace + XLA compile), torch.autograd.functional's
              first call, CasADi SX and MX: symbols, jacobian and Function (plus its first call).
            - the first batch call of symjac (it builds the batch kernel) and of JAX jit(vmap).
  latency   - one Jacobian at one point: the bare call floor (a kernel with one zero store,
              called the same way), symjac, torch.autograd.functional (vectorize=True),
              torch.func.jacrev, JAX jit(jacfwd), CasADi SX and MX Functions, SymEngine
              Lambdify and SymPy lambdify (both given symjac's exact Jacobian, with cse=True).
  batch     - Jacobians per second over a batch, results preallocated where the tool allows:
              symjac with out= (one thread, and all cores), the same CSE'd program as C compiled
              with gcc -O3 -march=native (one thread; "C -O3": one output buffer zeroed once,
              the kernel storing only the nonzeros; "C -O3 clr": each point's results cleared
              first, like for like with symjac, whose batch loop zeroes each point's results
              at every call where they have zeros, so that out= may hold anything), CasADi SX and MX
              Function.map (through Function.buffer, into one output buffer) and JAX
              jit(vmap(jacfwd)) (JAX has no out=; XLA allocates each result; the better of the
              batch and a quarter of it, since XLA's rate depends on the batch; its batch is cut to
              256 MB of dense results where symjac's is larger: the "B jax" column).

Before a peer is timed its Jacobian is compared with symjac's at the same point; a mismatch is
printed as a failure and that peer is not timed. The Brusselators are compiled with
sparse="csr" (CasADi also keeps only the nonzeros; JAX and torch compute the dense matrix, so
they are skipped where that matrix would be too large). A peer that would take absurdly long,
or is not installed, prints "-", and the reason is listed under the tables; symjac's own build
is stopped after BUILD_LIMIT seconds (then its peers are checked against the first peer's
Jacobian). The last lines state issue 11's goals and which of them this run met. Ratios are what
count: absolute times on a shared machine are noise. --quick measures four small problems.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
import timing  # noqa: E402
from problems import PROBLEMS, QUICK, casadi_ns, jax_ns, numpy_ns, torch_ns  # noqa: E402

DENSE_LIMIT = 64e6  # bytes of one dense Jacobian above which torch and JAX (dense only) are skipped
BATCH_LIMIT = 256e6  # bytes of a batch of dense Jacobians above which JAX's vmap is skipped
GCC_LIMIT = 15_000  # kernel statements above which gcc -O3 takes minutes (21505 took 342 s)
BUILD_LIMIT, QUICK_LIMIT = 240, 60  # seconds of symjac build after which it is stopped (then "-")
SYMPY_VIEW_LIMIT = 60  # seconds for symjac.symbolic's per-element matrix and its lambdify
SYMPY_LIMIT = 1.0  # seconds of symjac build above which the per-element SymPy views are skipped


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


class TimeLimit(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    """Raise TimeLimit in this (main) thread after ``seconds`` (SymPy is Python: the alarm lands)."""

    def alarm(signum, frame):
        # Raised again each second until it lands: one raised inside a callback that swallows
        # exceptions (JAX's garbage-collection hook printed it and went on) would be lost.
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        raise TimeLimit

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def log(problem, stage):
    """A progress line on stderr: the stage done and the seconds since the problem started."""
    print(
        f"  {problem.r['problem']}: {stage} done at {time.perf_counter() - problem.t0:.1f} s", file=sys.stderr
    )


class Problem:
    """One problem's measurements, filled in by one child process."""

    def __init__(self, name, quick):
        f, n, sparse = {p[0]: p[1:] for p in PROBLEMS}[name]
        self.f, self.n, self.sparse = f, n, sparse
        self.r = {"problem": name, "n": n, "sparse": sparse, "skip": {}, "fail": {}}
        self.quick = quick
        self.t0 = time.perf_counter()
        self.budget = 0.1 if quick else 0.3
        self.x0 = np.random.default_rng(1).uniform(0.1, 1.0, n)
        self.n_out = np.asarray(f(numpy_ns(), self.x0)).size
        self.J = self.J_last = None  # the reference Jacobians (symjac's), at x0 and at the batch's last point
        self.cf = None

    def per_call(self, fn):
        return timing.per_call(fn, budget=self.budget)

    def skip(self, peer, reason):
        self.r["skip"][peer] = reason

    def agrees(self, peer, theirs, at_last=False):
        """Whether a peer's Jacobian (dense array or SciPy sparse) matches symjac's, at x0 or at the
        batch's last point. Where symjac has none (its build hit the time limit), the first peer's
        becomes the reference (named in the row) and the others are checked against it."""
        import scipy.sparse as sp

        ours = self.J_last if at_last else self.J
        if ours is None:
            self.r.setdefault("reference", peer)
            if at_last:
                self.J_last = theirs
            else:
                self.J = theirs
            return True
        if sp.issparse(theirs) or sp.issparse(ours):
            a, b = sp.csr_matrix(theirs), sp.csr_matrix(ours)
            if a.shape != b.shape:
                self.r["fail"][peer] = f"shape {a.shape}, reference {b.shape}"
                return False
            diff = abs(a - b).max() if (a - b).nnz else 0.0
            scale = abs(b).max()
        else:
            ours = np.asarray(ours, dtype=float)
            theirs = np.asarray(theirs, dtype=float).reshape(ours.shape)
            diff = float(np.max(np.abs(theirs - ours))) if ours.size else 0.0
            scale = float(np.max(np.abs(ours))) if ours.size else 0.0
        if not diff <= 1e-9 * max(1.0, scale):
            self.r["fail"][peer] = f"max abs difference {diff:.3g} (largest entry {scale:.3g})"
            print(
                f"AGREEMENT FAILURE: {peer} on {self.r['problem']}: {self.r['fail'][peer]}", file=sys.stderr
            )
            return False
        return True

    def dense_bytes(self):
        return 8 * self.n * self.n_out

    # --- symjac ----------------------------------------------------------------------------------

    def symjac(self):
        import symjac

        # start-up: LLVM, SymPy's lazy imports (its first sum of two terms imports sympy.tensor,
        # 50 ms) and both roads' modules (where PYTHONDONTWRITEBYTECODE is set, as on the
        # development machine, importing the loop road compiles 20 ms of Python), which every
        # process pays once whatever it compiles
        warm_up = lambda x: (x * x + x).sin().sum()  # noqa: E731
        symjac.compile(warm_up, np.zeros(3), cache=False, expand="arrays")(np.zeros((2, 3)))
        warm = symjac.compile(warm_up, np.zeros(3), cache=False)
        warm(np.zeros(3))
        func = (lambda ns: lambda x: self.f(ns, x))(numpy_ns())
        self.func = func
        rss0 = _rss_mb()
        limit = QUICK_LIMIT if self.quick else BUILD_LIMIT
        start = time.perf_counter()
        try:
            with time_limit(limit):
                cf = symjac.compile(func, self.x0, cache=False, sparse="csr" if self.sparse else None)
        except TimeLimit:
            self.r["build limit"] = limit
            self.r["rss"] = _rss_mb()
            self.r["rss+"] = self.r["rss"] - rss0
            print(f"{self.r['problem']}: symjac's build passed {limit} s, stopped", file=sys.stderr)
            self.B = 2_000
            self.Xb = np.random.default_rng(2).uniform(0.1, 1.0, (self.B, self.n))
            return
        self.r["build"] = time.perf_counter() - start
        log(self, "symjac build")
        self.r["rss"] = _rss_mb()
        self.r["rss+"] = self.r["rss"] - rss0
        self.cf = cf
        self.J = cf(self.x0)
        self.r["statements"] = cf.meta["statements"]
        floor = symjac.compile(lambda x: x[:1] * 0.0, self.x0, cache=False)
        self.r["lat floor"] = self.per_call(lambda: floor(self.x0))
        x0 = self.x0
        self.r["lat symjac"] = self.per_call(lambda: cf(x0))
        # a batch: outputs of about 32 MB, and a few hundred million kernel statements at most
        per_point = self.J.nnz if self.sparse else self.J.size
        cap = 20_000
        self.B = int(max(4, min(cap, 4e6 / per_point, 2e8 / max(1, self.r["statements"]))))
        self.r["B"] = self.B
        self.Xb = np.random.default_rng(2).uniform(0.1, 1.0, (self.B, self.n))
        cf._threads = 1
        start = time.perf_counter()
        try:
            with time_limit(limit):
                first = cf(self.Xb)  # the first batch builds the batch kernel (SIMD, or unrolled if rolled)
        except TimeLimit:
            self.r["first batch limit"] = limit
            return self.skip("symjac batch", f"building the batch kernel passed {limit} s: stopped")
        self.r["first batch"] = time.perf_counter() - start
        log(self, "symjac batch")
        out = np.empty_like(np.asarray(first))
        Xb = self.Xb
        if not np.array_equal(cf(Xb, out=out), first):
            self.r["fail"]["symjac out="] = "out= result differs from the allocating call"
        self.r["bat symjac 1t"] = self.B / self.per_call(lambda: cf(Xb, out=out))
        cf._threads = os.cpu_count() or 1
        self.r["bat symjac all"] = self.B / self.per_call(lambda: cf(Xb, out=out))
        cf._threads = 1
        self.batch_first = first
        last = np.asarray(first[-1])
        self.J_last = cf._sparse_matrix(last) if self.sparse else last

    def c_limit(self):
        """Points/s of the CSE'd program as C (gcc -O3 -march=native), one thread, one buffer."""
        if self.cf is None:
            return self.skip("C -O3", "exports symjac's program, which was not built")
        if self.r["statements"] > GCC_LIMIT:
            return self.skip(
                "C -O3", f"gcc -O3 on a {self.r['statements']}-statement function takes many minutes"
            )
        cf, X = self.cf, self.Xb
        with tempfile.TemporaryDirectory() as tmp:
            cf.write_c(tmp, "jac")
            layout = cf.kernel.layout
            exported_full = cf._ensure_built().layout.full  # the exported program stores its zeros
            loop = pathlib.Path(tmp) / "loop.c"
            loop.write_text(
                '#include <string.h>\n#include "jac.h"\n'
                "void batch(const double *in, double *out, long n) {\n"
                f"    for (long i = 0; i < n; ++i) jac(in + i * {layout.n_in}, out + i * {layout.n64}, 0);\n"
                "}\n"
                "void batch_clear(const double *in, double *out, long n) {\n"
                "    for (long i = 0; i < n; ++i) {\n"
                # a full layout stores its zeros too: nothing to clear, as symjac's loop does
                f"        {'// ' if exported_full else ''}"
                f"memset(out + i * {layout.n64}, 0, {8 * layout.n64});\n"
                f"        jac(in + i * {layout.n_in}, out + i * {layout.n64}, 0);\n"
                "    }\n"
                "}\n"
            )
            lib = pathlib.Path(tmp) / "libjac.so"
            cmd = ["gcc", "-O3", "-march=native", "-shared", "-fPIC", "-o", str(lib)]
            cmd += [str(pathlib.Path(tmp) / "jac.c"), str(loop), "-lm"]
            start = time.perf_counter()
            try:
                subprocess.run(cmd, check=True, capture_output=True, timeout=180)
            except subprocess.TimeoutExpired:
                return self.skip("C -O3", "gcc -O3 took over 3 minutes: stopped")
            self.r["gcc build"] = time.perf_counter() - start
            library = ctypes.CDLL(str(lib))
        n = X.shape[0]
        ours = np.asarray(self.batch_first).reshape(n, -1)
        # "C -O3": one output buffer zeroed once, the kernel storing only the nonzeros (right only
        # while nothing else writes the buffer); "C -O3 clr": each point's results cleared first
        # (unless the kernel stores its zeros too), so that any buffer gives the right result,
        # symjac's out= contract: like for like.
        for key, fn, out in (
            ("bat C -O3", library.batch, np.zeros((n, layout.n64))),
            ("bat C -O3 clr", library.batch_clear, np.full((n, layout.n64), np.nan)),
        ):
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]
            run = functools.partial(fn, X.ctypes.data, out.ctypes.data, n)
            run()
            diff, scale = np.max(np.abs(out - ours)), np.max(np.abs(ours))
            if not diff <= 1e-9 * max(1.0, scale):  # libm's tanh and exp against symjac's vector math
                self.r["fail"][key[4:]] = f"max abs difference {diff:.3g} from symjac's batch"
                continue
            self.r[key] = n / self.per_call(run)

    # --- peers -------------------------------------------------------------------------------------

    def torch(self, torch):
        if self.dense_bytes() > DENSE_LIMIT:
            reason = f"dense {self.n_out}x{self.n} Jacobian is {self.dense_bytes() / 1e6:.0f} MB per call"
            self.skip("torch", reason)
            return self.skip("torch.func", reason)
        from torch.autograd.functional import jacobian

        torch.set_num_threads(1)
        jacobian(lambda x: (x * x).sin().sum(), torch.zeros(3), vectorize=True)  # start-up
        torch.func.jacrev(lambda x: (x * x).sin())(torch.zeros(3))
        tf = (lambda ns: lambda x: self.f(ns, x))(torch_ns())
        tx = torch.from_numpy(self.x0)
        start = time.perf_counter()
        Jt = jacobian(tf, tx, vectorize=True)
        self.r["torch first"] = time.perf_counter() - start
        if self.agrees("torch", Jt.numpy()):
            self.r["lat torch"] = self.per_call(lambda: jacobian(tf, tx, vectorize=True))
        jr = torch.func.jacrev(tf)
        if self.agrees("torch.func", jr(tx).numpy()):
            self.r["lat torch.func"] = self.per_call(lambda: jr(tx))

    def jax(self, jax):
        import jax.numpy as jnp

        jax.jit(jax.jacfwd(lambda x: jnp.sin(x * x)))(jnp.zeros(3)).block_until_ready()  # start-up
        jax.jit(jax.vmap(jax.jacfwd(lambda x: jnp.sin(x * x))))(jnp.zeros((2, 3))).block_until_ready()
        if self.dense_bytes() > DENSE_LIMIT:
            reason = f"dense {self.n_out}x{self.n} Jacobian is {self.dense_bytes() / 1e6:.0f} MB per call"
            self.skip("jax", reason)
            return self.skip("jax vmap", reason)
        jf = (lambda ns: lambda x: self.f(ns, x))(jax_ns())
        jx = jnp.asarray(self.x0)
        start = time.perf_counter()
        jj = jax.jit(jax.jacfwd(jf))
        Jj = jj(jx).block_until_ready()
        self.r["jax first"] = time.perf_counter() - start
        if self.agrees("jax", np.asarray(Jj)):
            self.r["lat jax"] = self.per_call(lambda: jj(jx).block_until_ready())
        B = min(self.B, int(BATCH_LIMIT / self.dense_bytes()))  # its results are dense: maybe fewer points
        if B < 4:
            return self.skip("jax vmap", f"4 dense Jacobians are over {BATCH_LIMIT / 1e6:.0f} MB")
        jv = jax.jit(jax.vmap(jax.jacfwd(jf)))
        jX = jnp.asarray(self.Xb[-B:])
        start = time.perf_counter()
        Jv = jv(jX).block_until_ready()
        self.r["jax vmap first"] = time.perf_counter() - start
        if not self.agrees("jax vmap", np.asarray(Jv[-1]), at_last=True):
            return None
        # XLA's throughput depends on the batch (an MLP 8-32-32-4: 1.8 M/s at 7348 points,
        # 0.5 M/s at 20000, its intermediates out of cache): the better of B and a quarter of it.
        best = None
        for size in dict.fromkeys((B, max(4, B // 4))):
            Xs = jnp.asarray(self.Xb[-size:])
            jv(Xs).block_until_ready()
            rate_ = size / self.per_call(lambda Xs=Xs: jv(Xs).block_until_ready())
            if best is None or rate_ > best[0]:
                best = (rate_, size)
        self.r["bat jax vmap"], self.r["B jax"] = best

    def casadi(self, ca, kind):
        peer = f"casadi {kind}"
        sym = ca.SX if kind == "SX" else ca.MX
        w = sym.sym("w", 3)
        ca.Function("w", [w], [ca.jacobian(ca.sin(w * w), w)])(np.zeros(3))  # start-up
        start = time.perf_counter()
        X = sym.sym("x", self.n)
        F = ca.Function("J", [X], [ca.jacobian(self.f(casadi_ns(), X), X)])
        Jc = F(self.x0)
        self.r[f"{peer} build"] = time.perf_counter() - start
        if not self.agrees(peer, Jc.sparse() if self.sparse else np.array(Jc)):
            return
        x0 = self.x0
        self.r[f"lat {peer}"] = self.per_call(lambda: F(x0))
        Fm = F.map(self.B)
        out = np.zeros(Fm.nnz_out(0))
        buf, evaluate = Fm.buffer()
        Xb = np.ascontiguousarray(self.Xb)  # (B, n) in C order is CasADi's column-major (n, B)
        buf.set_arg(0, memoryview(Xb))
        buf.set_res(0, memoryview(out))
        evaluate()
        last = F.sparsity_out(0).nnz()
        Jlast = ca.DM(F.sparsity_out(0), out[-last:])
        if self.agrees(f"{peer} map", Jlast.sparse() if self.sparse else np.array(Jlast), at_last=True):
            self.r[f"bat {peer} map"] = self.B / self.per_call(evaluate)

    def sympy_views(self, symengine):
        if self.cf is None or self.r["build"] > SYMPY_LIMIT or self.n > 500:
            reason = "per-element SymPy matrix of a large model: minutes"
            self.skip("sympy", reason)
            return self.skip("symengine", reason) if symengine else None
        import sympy

        import symjac

        try:  # the per-element view expands everything: max and log_softmax over relu blow up
            with time_limit(SYMPY_VIEW_LIMIT):
                view = symjac.symbolic(self.func, self.x0)
                syms, M = list(view.inputs[0].flat), view.matrix
                lf = sympy.lambdify([syms], M, modules="numpy", cse=True)
                lam = symengine.Lambdify(syms, M, cse=True) if symengine else None
        except TimeLimit:
            reason = f"the per-element SymPy matrix and its lambdify passed {SYMPY_VIEW_LIMIT} s: stopped"
            self.skip("sympy", reason)
            return self.skip("symengine", reason) if symengine else None
        x0 = self.x0
        if symengine:
            if self.agrees("symengine", lam(x0)):
                self.r["lat symengine"] = self.per_call(lambda: lam(x0))
        if self.agrees("sympy", lf(x0)):
            self.r["lat sympy"] = self.per_call(lambda: lf(x0))


def one(name, quick):
    """Measure one problem in this (fresh) process; returns its row."""
    p = Problem(name, quick)
    p.symjac()  # first: its build and peak memory, before any peer is imported
    p.c_limit()
    torch, jax, casadi, symengine = (_optional(m) for m in ("torch", "jax", "casadi", "symengine"))
    for peer, module in (("torch", torch), ("jax", jax), ("casadi", casadi), ("symengine", symengine)):
        if module is None:
            p.skip(peer, "not installed (pip install -e '.[bench]')")
    log(p, "symjac and C")
    if jax:
        jax.config.update("jax_enable_x64", True)
        p.jax(jax)
        log(p, "jax")
    if torch:
        p.torch(torch)
        log(p, "torch")
    if casadi:
        p.casadi(casadi, "SX")
        p.casadi(casadi, "MX")
        log(p, "casadi")
    p.sympy_views(symengine)
    return p.r


# --- the tables ------------------------------------------------------------------------------------


def fmt(seconds):
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f}us"
    return f"{seconds * 1e3:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def rate(points_per_s):
    return "-" if points_per_s is None else f"{points_per_s / 1e6:.4f}M/s"


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}x"


def label(r):
    return f"{r['problem']} ({r['n']}{', sparse' if r['sparse'] else ''})"


def table(title, rows, cols, cell, extra=(), first=None):
    width = max(len(label(r)) for r in rows) + 2
    print(f"\n{title}")
    heads = ([first[0]] if first else []) + [c for c, _ in cols] + [h for h, _ in extra]
    widths = [max(12, len(h) + 2) for h in heads]
    print(f"{'problem':{width}s}" + "".join(f"{h:>{w}s}" for h, w in zip(heads, widths, strict=True)))
    for r in rows:
        cells = ([first[1](r)] if first else []) + [cell(r.get(key)) for _, key in cols]
        cells += [f(r) for _, f in extra]
        print(f"{label(r):{width}s}" + "".join(f"{c:>{w}s}" for c, w in zip(cells, widths, strict=True)))


PEER_LATENCY = (
    "lat torch",
    "lat torch.func",
    "lat jax",
    "lat casadi SX",
    "lat casadi MX",
    "lat symengine",
    "lat sympy",
)


def build_cell(r):
    return f">{r['build limit']}s" if "build limit" in r else fmt(r.get("build"))


def report(rows):
    def best_peer(r):
        peers = [r[k] for k in PEER_LATENCY if r.get(k) is not None]
        return ratio(min(peers), r.get("lat symjac")) if peers else "-"

    table(
        "Build time (compile to a callable, then the first batch call, which builds the batch kernel)\n"
        "(peak RSS: the symjac build's process at its end, and what the build added to it)",
        rows,
        [
            ("jax first call", "jax first"),
            ("torch first", "torch first"),
            ("casadi SX", "casadi SX build"),
            ("casadi MX", "casadi MX build"),
            ("symjac batch", "first batch"),
            ("jax vmap first", "jax vmap first"),
        ],
        fmt,
        [
            ("peak RSS", lambda r: f"{r['rss']:.0f}MB"),
            ("+build", lambda r: f"{r['rss+']:.0f}MB"),
            ("jax first/symjac", lambda r: ratio(r.get("jax first"), r.get("build"))),
        ],
        first=("symjac", build_cell),
    )
    table(
        "Single-call latency (one Jacobian at one point)",
        rows,
        [(k[4:], k) for k in ("lat floor", "lat symjac", *PEER_LATENCY)],
        fmt,
        [("best peer/symjac", best_peer)],
    )
    table(
        "Batched throughput (Jacobians per second)\n(results preallocated where the tool allows)",
        rows,
        [
            ("symjac 1t", "bat symjac 1t"),
            ("symjac all", "bat symjac all"),
            ("C -O3", "bat C -O3"),
            ("C -O3 clr", "bat C -O3 clr"),
            ("jax vmap", "bat jax vmap"),
            ("casadi SX map", "bat casadi SX map"),
            ("casadi MX map", "bat casadi MX map"),
        ],
        rate,
        [
            ("symjac 1t/C clr", lambda r: ratio(r.get("bat symjac 1t"), r.get("bat C -O3 clr"))),
            ("symjac all/jax", lambda r: ratio(r.get("bat symjac all"), r.get("bat jax vmap"))),
            ("B", lambda r: str(r.get("B", "-"))),
            ("B jax", lambda r: str(r.get("B jax", "-"))),
        ],
    )
    notes = [(label(r), peer, why) for r in rows for peer, why in r["skip"].items()]
    notes += [
        (
            label(r),
            "symjac",
            f"build stopped after {r['build limit']} s; peers checked against {r.get('reference')}",
        )
        for r in rows
        if "build limit" in r
    ]
    if notes:
        print('\nSkipped ("-" above)')
        for name, peer, why in notes:
            print(f"  {name}: {peer}: {why}")
    failures = [(label(r), peer, why) for r in rows for peer, why in r["fail"].items()]
    verdict = "FAILURES" if failures else "every peer agrees"
    print(
        f"\nAgreement with symjac's Jacobian at one point (max difference <= 1e-9 x largest entry): {verdict}"
    )
    for name, peer, why in failures:
        print(f"  FAILED {name}: {peer}: {why}")
    goals(rows)


def _tally(what, rows, missed, how):
    print(f"  {what}: {len(rows) - len(missed)}/{len(rows)} problems")
    for name, figure in missed:
        print(f"    missed on {name}: {how} {figure}")


def goals(rows):
    """Issue 11's goals that this run measures, each with the figure that decides it."""
    by = {r["problem"]: r for r in rows}
    print("\nGoals (issue 11)")
    small, large = by.get("Brusselator N=32"), by.get("Brusselator N=128")
    if small and large and small.get("build"):
        big = large.get("build") or large["build limit"]
        grow = big / small["build"]
        held = large.get("build") is not None and grow <= 1.5 and large["rss"] <= 300
        print(
            f"  structured model: 2x128^2 grid build / 2x32^2 grid build = {'>' * (not large.get('build'))}"
            f"{grow:.2f}x (goal <= 1.5x); 2x128^2 build peak RSS {large['rss']:.0f} MB, of which the build "
            f"added {large['rss+']:.0f} MB (goal <= 300 MB): {'holds' if held else 'missed'}"
        )
    else:
        print("  structured model: needs Brusselator N=32 and N=128 (the full run)")
    timed = [r for r in rows if r.get("jax first") is not None]
    missed = [
        (r["problem"], f"{build_cell(r)} vs {fmt(r['jax first'])}")
        for r in timed
        if not r.get("build") or r["build"] > r["jax first"]
    ]
    _tally("compile's build no slower than JAX's first jit(jacfwd) call", timed, missed, "symjac vs JAX")
    mlps = [r for r in rows if "MLP" in r["problem"] and r.get("bat jax vmap")]
    missed = [
        (r["problem"], ratio(r.get("bat symjac all"), r["bat jax vmap"]))
        for r in mlps
        if not r.get("bat symjac all") or r["bat symjac all"] < r["bat jax vmap"]
    ]
    _tally("MLP batches at least JAX jit(vmap(jacfwd))'s", mlps, missed, "symjac/JAX throughput")
    rest = [r for r in rows if "MLP" not in r["problem"] and r.get("bat C -O3 clr")]
    missed = [
        (r["problem"], ratio(r["bat symjac 1t"], r["bat C -O3 clr"]))
        for r in rest
        if r["bat symjac 1t"] * 1.1 < r["bat C -O3 clr"]
    ]
    _tally(
        "other batches within 1.1x of gcc -O3 clearing each point's results, as out= does (one thread each)",
        rest,
        missed,
        "symjac/C throughput",
    )
    lat = [r for r in rows if any(r.get(k) is not None for k in PEER_LATENCY)]
    missed = []
    for r in lat:
        best = min((r[k], k[4:]) for k in PEER_LATENCY if r.get(k) is not None)
        if not r.get("lat symjac") or best[0] < r["lat symjac"]:
            missed.append((r["problem"], f"{fmt(r.get('lat symjac'))} vs {best[1]} {fmt(best[0])}"))
    _tally("single call faster than every peer", lat, missed, "symjac vs")


def main(argv):
    """Measure each problem in a fresh process (``--json PATH`` keeps the rows as they come), then
    print the tables; ``--report PATH`` prints the tables of rows kept earlier."""
    quick = "--quick" in argv
    flags = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--json", "--report")}
    if "--report" in flags:
        return report(json.loads(pathlib.Path(flags["--report"]).read_text()))
    only = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--only"]
    names = only or (QUICK if quick else [p[0] for p in PROBLEMS])
    rows = []
    for name in names:
        env = dict(os.environ, SYMJAC_CACHE_DIR=tempfile.mkdtemp(prefix="symjac-bench-"), SYMJAC_PROGRESS="0")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
        cmd = [sys.executable, __file__, "--one", name] + (["--quick"] if quick else [])
        start = time.perf_counter()
        try:  # the child stops symjac's build itself at the limit; this is for a build stuck in C
            done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=3600)
        except subprocess.TimeoutExpired:
            print(f"FAILED: {name}: over an hour, dropped", file=sys.stderr)
            continue
        if done.returncode:
            print(f"FAILED: {name} (exit status {done.returncode}; its errors are above)", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"done: {name} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        if "--json" in flags:
            pathlib.Path(flags["--json"]).write_text(json.dumps(rows, indent=1))
    if rows:
        report(rows)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], "--quick" in sys.argv)))
    else:
        main(sys.argv[1:])
