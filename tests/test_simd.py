"""Batch kernels: SIMD lanes across points, vector math, segmented kernels, the DAG tape.

A batch runs a vector kernel while a full vector of points remains and the scalar kernel on the
rest, so every check uses batches with both parts. Oracles: NumPy for values, the scalar
single-point kernel (itself checked against torch in test_ops) for Jacobians, and SymPy's own
``diff`` for the tape.
"""

import math
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy

import symjac
from symjac.backend import codegen, diskcache, runtime, vecmath
from symjac.elements.tape import Tape, jacobian_entries
from symjac.trace import functions as F
from symjac.trace import ops

ROOT = pathlib.Path(__file__).parent.parent
LANES = vecmath.lanes("float64")
N = 4 * max(vecmath.lanes("float32"), 1) + 3  # full vectors and a scalar remainder, both dtypes
UNARY = [
    e
    for e in ops.ELEMENTWISE_OPS
    if not e.boolean and ops._nargs(e) == 1 and any(hasattr(np, n) for n in e.numpy)
]
BINARY = [
    e
    for e in ops.ELEMENTWISE_OPS
    if not e.boolean and ops._nargs(e) == 2 and any(hasattr(np, n) for n in e.numpy)
]
# float32 results agree to a few ulp of float32; float64 to a few ulp amplified by the
# conditioning of a derivative formula (1 - tanh(x)**2 near 1 loses digits).
TOL = {np.float64: dict(rtol=1e-11, atol=1e-13), np.float32: dict(rtol=1e-5, atol=1e-6)}


def _numpy_fn(e):
    return getattr(np, next(n for n in e.numpy if hasattr(np, n)))


def _points(domain, shape, rng):
    if len(domain) > 2:  # nonzero
        return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    low = max(domain[0], -2.0) + (0.1 if math.isfinite(domain[0]) else 0.0)
    high = min(domain[1], 2.0) - (0.1 if math.isfinite(domain[1]) else 0.0)
    return rng.uniform(low, high, shape)


def _check_batch(cf, X, dtype, *more, exact=None):
    """Batched results equal the single-point kernel's at every point.

    In float32, derivative formulas that cancel (sinc near 0) lose digits on both paths, and
    differently; there the batch must be as close as the single-point kernel, within a few
    float32 ulp, to ``exact``: the same function compiled in float64.
    """
    got = cf(X, *more)
    for k in range(X.shape[0]):
        want = cf(X[k], *(m[k] for m in more))
        best = exact(X[k], *(m[k] for m in more)) if exact is not None else None
        for n, (g, w) in enumerate(zip(_tuple(got), _tuple(want), strict=True)):
            g = np.asarray(g)[k]
            if best is None:
                np.testing.assert_allclose(g, w, **TOL[dtype])
                continue
            b = np.asarray(_tuple(best)[n])
            bound = 2 * np.abs(w - b) + TOL[dtype]["atol"] + TOL[dtype]["rtol"] * np.abs(b)
            assert np.all(np.abs(g - b) <= bound), (k, g, w, b)
    return got


def _tuple(r):
    """The arrays of a (nested) result, in order."""
    return tuple(a for part in r for a in _tuple(part)) if isinstance(r, tuple) else (r,)


def _exact(fn, dtype, *examples, **options):
    if dtype == np.float64:
        return None
    return symjac.compile(fn, *(np.asarray(e, dtype=np.float64) for e in examples), cache=False, **options)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("e", UNARY, ids=lambda e: e.name)
def test_unary_ops_batched(e, dtype, rng):
    fn = _numpy_fn(e)
    X = _points(e.domain, (N, 3), rng).astype(dtype)
    f = lambda x: fn(x) * x[::-1]  # noqa: E731
    cf = symjac.compile(f, X[0], value=True, cache=False)
    value, _ = _check_batch(cf, X, dtype, exact=_exact(f, dtype, X[0], value=True))
    np.testing.assert_allclose(value, fn(X) * X[:, ::-1], **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("e", BINARY, ids=lambda e: e.name)
def test_binary_ops_batched(e, dtype, rng):
    fn = _numpy_fn(e)
    X = _points(e.domain, (N, 3), rng).astype(dtype)
    Y = _points(e.domain, (N, 3), rng).astype(dtype)
    cf = symjac.compile(fn, X[0], Y[0], value=True, cache=False)
    value, _ = _check_batch(cf, X, dtype, Y, exact=_exact(fn, dtype, X[0], Y[0], value=True))
    np.testing.assert_allclose(value, fn(X, Y), **TOL[dtype])


@pytest.mark.skipif(LANES == 1, reason="no SIMD on this CPU")
def test_inline_vector_tanh_is_within_3_ulp(rng):
    special = [0.0, -0.0, 5e-324, -5e-324, 1e-300, 1e-9, 0.3466, 0.5, 1, 5, 19, 21.99, 22, 30, 710, 1e300]
    special += [-s for s in special] + [np.inf, -np.inf, np.nan]
    xs = np.concatenate(
        [
            special,
            rng.uniform(-25, 25, 20000),
            np.exp(rng.uniform(-700, 3, 20000)) * rng.choice([-1, 1], 20000),
        ]
    )
    cf = symjac.compile(np.tanh, np.zeros(1), value=True, cache=False)
    value, J = cf(xs.reshape(-1, 1))
    assert "_ZGV" not in cf.kernel.simd_ir  # arithmetic, not a call that clobbers registers
    got, want = value[:, 0], np.tanh(xs)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))  # tanh(-0.0) is -0.0
    finite = ~np.isnan(want)
    ulps = np.abs(got - want)[finite] / np.spacing(np.abs(want[finite]).clip(np.finfo(float).tiny))
    assert ulps.max() <= 3
    single = np.array([cf(np.array([x]))[1][0, 0] for x in xs[::97]])
    # the derivative 1 - tanh**2 cancels: a 3-ulp tanh near 1 moves it by up to 2 * 3 ulp(1)
    np.testing.assert_allclose(J[::97, 0, 0], single, rtol=1e-11, atol=8 * np.finfo(float).eps)
    with np.errstate(over="ignore"):  # 1e300 is inf in float32, and tanh(inf) is 1
        x32 = xs.astype(np.float32)
    value32, _ = symjac.compile(np.tanh, np.zeros(1, np.float32), value=True, cache=False)(x32.reshape(-1, 1))
    want32 = np.tanh(x32.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(value32[:, 0][finite], want32[finite])  # correctly rounded


def _mixed(x):
    return np.stack(
        [np.exp(x[0]) * np.sin(x[1]), np.tanh(x[2] * x[0]), np.arctan2(x[0], x[1]), np.log1p(x[2] ** 2)]
    )


@pytest.mark.skipif(LANES == 1, reason="no SIMD on this CPU")
def test_vector_math_comes_from_libmvec_or_runs_lane_by_lane(rng, monkeypatch):
    X = rng.uniform(0.1, 1.0, (N, 3))
    cf = symjac.compile(_mixed, X[0], cache=False)
    reference = _check_batch(cf, X, np.float64)
    if vecmath._libmvec() is not None:
        assert "_ZGV" in cf.ir  # vector exp/sin/tanh/atan2/log1p calls
    monkeypatch.setattr(vecmath, "vector_symbol", lambda *a: None)  # as on a machine without it
    fallback = symjac.compile(_mixed, X[0], cache=False)
    np.testing.assert_allclose(_check_batch(fallback, X, np.float64), reference, rtol=1e-13, atol=1e-15)
    assert "_ZGV" not in fallback.ir and "symjac_kernel_simd" in fallback.ir


def test_without_simd_batches_are_scalar_and_equal(rng, monkeypatch):
    X = rng.uniform(0.1, 1.0, (N, 3))
    reference = symjac.compile(_mixed, X[0], cache=False)(X)
    monkeypatch.setattr(vecmath, "lanes", lambda compute: 1)
    cf = symjac.compile(_mixed, X[0], cache=False)
    np.testing.assert_allclose(cf(X), reference, rtol=1e-12, atol=1e-15)
    assert "symjac_kernel_simd" not in cf.ir


@pytest.mark.skipif(LANES == 1, reason="no SIMD on this CPU")
def test_arithmetic_alone_batches_point_by_point(rng):
    # Robertson's kinetics: no function for vector math to pay for the lanes' loads and stores
    def robertson(y):
        return np.stack(
            [
                -0.04 * y[0] + 1e4 * y[1] * y[2],
                0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                3e7 * y[1] ** 2,
            ]
        )

    X = rng.uniform(0.1, 1.0, (N, 3))
    cf = symjac.compile(robertson, X[0], cache=False)
    J = cf(X)
    assert cf.kernel.simd() is False and "symjac_kernel_simd" not in cf.ir
    for k in (0, N - 1):
        np.testing.assert_allclose(J[k], cf(X[k]), rtol=1e-15)
    with_exp = symjac.compile(lambda y: robertson(y) * np.exp(y[0]), X[0], cache=False)
    with_exp(X)
    assert with_exp.kernel.simd()[1] == LANES


@pytest.mark.skipif(LANES == 1, reason="no SIMD on this CPU")
def test_simd_kernel_is_built_at_the_first_batch_and_cached_on_disk(rng, monkeypatch):
    X = rng.uniform(0.1, 1.0, (N, 3))
    cf = symjac.compile(_mixed, X[0])
    assert "symjac_kernel_simd" not in cf.ir  # single calls never pay for it
    J = cf(X)
    assert "symjac_kernel_simd" in cf.ir
    assert list(diskcache.cache_dir().glob("*-simd.kernel"))

    def refuse(*args):
        raise AssertionError("the SIMD kernel should come from the disk cache")

    monkeypatch.setattr(runtime, "compile_simd_object", refuse)
    again = symjac.compile(_mixed, X[0])
    assert again.cache_hit
    np.testing.assert_array_equal(again(X), J)
    assert again.kernel.simd()[1] == LANES


@pytest.mark.skipif(LANES == 1, reason="no SIMD on this CPU")
def test_cached_simd_kernel_loads_in_a_fresh_process(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np, symjac
        from symjac.backend import runtime
        f = lambda x: np.stack([np.tanh(x[0] * x[1]), np.exp(x[1]) * np.sin(x[2])])
        cf = symjac.compile(f, np.zeros(3))
        X = np.linspace(0.1, 1.0, 3 * 37).reshape(37, 3)
        J = cf(X)
        want = np.stack([symjac.jacobian(f, x) for x in X])
        assert np.allclose(J, want, rtol=1e-12, atol=1e-14), abs(J - want).max()
        print(cf.cache_hit, cf.kernel.simd()[1])
        """
    )
    env = dict(os.environ, SYMJAC_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))

    def run():
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run() == ["False", str(LANES)]
    assert len(list(tmp_path.glob("*-simd.kernel"))) == 1
    assert run() == ["True", str(LANES)]  # both kernels from the cache, libmvec resolved


def test_lanes_follow_the_register_width(monkeypatch):
    if LANES > 1:
        assert vecmath.lanes("float32") == 2 * LANES
    monkeypatch.setenv("SYMJAC_SIMD_BYTES", "16")
    assert vecmath.lanes("float64") in (1, 2)
    monkeypatch.setenv("SYMJAC_SIMD_BYTES", "wide")
    with pytest.raises(ValueError, match="SYMJAC_SIMD_BYTES='wide'"):
        vecmath.lanes("float64")


def test_large_outputs_get_no_simd_kernel(rng):
    # Lanes would scatter 8 points' worth of a 40x40 Jacobian: slower than scalar code.
    x0 = rng.uniform(size=40)
    cf = symjac.compile(lambda x: np.tanh(np.outer(x, x)).sum(axis=1), x0, cache=False)
    assert 8 * cf.kernel.layout.n64 * LANES > runtime.SIMD_OUTPUT_BYTES
    assert "symjac_kernel_simd" not in cf.ir
    _check_batch(cf, rng.uniform(size=(5, 40)), np.float64)


def _chain(x):
    h = x
    for _ in range(6):
        h = np.tanh(h[::-1] * 0.7 + h)
    return np.concatenate([h, h.sum(keepdims=True)])


@pytest.mark.parametrize("lanes", [1, LANES])
def test_segmented_kernels_match_one_block(lanes, rng, monkeypatch):
    X = rng.uniform(-1, 1, (N, 5))
    whole = symjac.compile(_chain, X[0], cache=False)
    monkeypatch.setattr(codegen, "SEGMENT_STORES", 3 * lanes)
    monkeypatch.setattr(codegen, "SEGMENT_STATEMENTS", 40)
    monkeypatch.setattr(vecmath, "lanes", lambda compute: lanes)
    split = symjac.compile(_chain, X[0], cache=False)
    assert "symjac_kernel.part3" in split.ir
    assert "store volatile" in split.ir and "store volatile" not in whole.kernel.ir  # see codegen
    np.testing.assert_array_equal(split(X[0]), whole(X[0]))  # the same operations, in order
    np.testing.assert_array_equal(split(X), whole(X))


def test_mostly_dense_results_store_their_zeros(rng):
    dense = symjac.compile(lambda x: np.stack([x[0] * x[1], x[1], x[0] + x[1] ** 2]), np.ones(2), cache=False)
    assert dense.kernel.layout.full  # 5 of 6 entries nonzero: batch buffers skip zeroing
    sparse = symjac.compile(lambda x: x**2, np.ones(6), cache=False)
    assert not sparse.kernel.layout.full
    X = rng.uniform(size=(N, 6))
    J = sparse(X)
    assert np.all(J[:, ~np.eye(6, dtype=bool)] == 0)
    J2 = dense(X[:, :2])
    np.testing.assert_array_equal(J2[:, 1, 0], 0.0)


def _two_dtypes(x, p):
    return np.concatenate([x * x * p[0] + 0.1, np.sin(x) * p[1] - 0.2 * x])


@pytest.mark.parametrize("fill", [np.nan, 1e30])
def test_batch_loops_write_every_entry_of_both_buffers(fill, rng):
    """Three results, float32 and float64, with structural zeros, into buffers holding garbage:
    the SIMD kernel and its scalar rest zero each point's part of both before computing it."""
    x, p = np.linspace(0.1, 1, 6, dtype=np.float32), np.array([0.5, 2.0])
    cf = symjac.compile(_two_dtypes, x, p, wrt=(0, 1), value=True, cache=False)
    layout = cf.kernel.layout
    assert not layout.full and layout.n64 and layout.n32 and len(layout.slots) == 3
    X = rng.uniform(0.1, 1.0, (N, 6)).astype(np.float32)
    P = rng.uniform(0.5, 2.0, (N, 2))
    out64, out32 = np.full((N, layout.n64), fill), np.full((N, layout.n32), fill, dtype=np.float32)
    got = cf.kernel.batch([X, P], (N,), out64=out64, out32=out32)
    assert cf.kernel.simd() or LANES == 1
    assert np.isfinite(out64).all() and np.isfinite(out32).all()
    for k in (0, N // 2, N - 1):
        for g, w in zip(got, cf.kernel([X[k], P[k]]), strict=True):
            np.testing.assert_allclose(g[k], w, **TOL[w.dtype.type])


# --- the DAG tape against sympy.diff ---------------------------------------------------------
x, y, z = sympy.symbols("x y z", real=True)
TAPE_CASES = [
    x * y * z,
    sympy.exp(x) * sympy.sin(y) / z,
    (x + y) ** 3 - sympy.sqrt(z),
    sympy.tanh(x * y + sympy.tanh(z * x)),
    sympy.Piecewise((x**2, x > y), (y * z, True)),
    sympy.atan2(x, y) * x**y,
    sympy.Max(x, y * z),
    F.Softplus(x * z),
    F.MaxN(x, y, z),
    sympy.Abs(x - y),
    F.StopGradient(x) * y,
    sympy.log(x**2 + 1) ** sympy.Rational(5, 2),
    x / y / z,
    sympy.sign(x) * x,
    F.LogAddExp(x, y * z),
    F.Cbrt(x * y),
]


def _evaluate(tape, expr, point):
    env = dict(point)
    for t, definition in tape.needed([expr]):
        env[t] = definition.xreplace(env).doit()
    return float(sympy.sympify(expr).xreplace(env).subs(sympy.DiracDelta(0), 0).evalf())


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("expr", TAPE_CASES, ids=str)
def test_tape_gradient_and_hessian_equal_sympy_diff(expr, mode):
    tape = Tape([x, y, z])
    atom = tape.value(expr)
    grad = tape.tangent(atom) if mode == "forward" else tape.gradient(atom)
    points = ({x: 0.7, y: -0.4, z: 1.3}, {x: 0.2, y: 0.9, z: 0.5})  # real: x > 0, z > 0
    for point in ({k: sympy.Float(v) for k, v in p.items()} for p in points):
        for s in (x, y, z):
            want = float(expr.diff(s).subs(point).doit().subs(sympy.DiracDelta(0), 0).evalf())
            got = _evaluate(tape, grad[s], point) if s in grad else 0.0
            assert got == pytest.approx(want, rel=1e-12, abs=1e-14), (s, point)
            hess = tape.tangent(grad[s]) if s in grad else {}
            for r in (x, y, z):
                want = float(expr.diff(s, r).subs(point).doit().subs(sympy.DiracDelta(0), 0).evalf())
                got = _evaluate(tape, hess[r], point) if r in hess else 0.0
                assert got == pytest.approx(want, rel=1e-12, abs=1e-14), (s, r, point)


def test_tape_entries_are_exactly_the_structural_nonzeros():
    X = np.array([x, y, z], dtype=object)
    outs = np.array([x * y, sympy.exp(z), sympy.S(3), F.StopGradient(x) + y], dtype=object)
    entries = jacobian_entries(Tape(X), [outs], [X])
    assert sorted((r, c) for r, c, _ in entries[(0, 0)]) == [(0, 0), (0, 1), (1, 2), (3, 1)]


def test_tape_refuses_an_unevaluated_derivative():
    f = sympy.Function("f")
    tape = Tape([x])
    with pytest.raises(NotImplementedError, match="declare `fdiff`"):
        tape.tangent(tape.value(f(x) * x))


@pytest.mark.parametrize("pays", [None, True, False])
def test_threaded_batches_fill_every_point(pays, rng, monkeypatch):
    """Large batches time one thread and all of them (symjac.backend.threads) and take the
    faster; a forced choice is followed. Every path must fill every point."""
    from symjac import compiled

    monkeypatch.setattr(compiled, "THREAD_WORK", 0)
    X = rng.uniform(0.1, 1.0, (4 * 1024 + 5, 3))
    cf = symjac.compile(_mixed, X[0], cache=False)
    cf._threads = 2
    cf.kernel._threads_pay = pays
    J = cf(X)
    for _ in range(4):  # both ways are timed over the first large batches
        np.testing.assert_array_equal(cf(X), J)
    seconds = cf.kernel._split.seconds
    assert pays is not None or (seconds[False] is not None and seconds[True] is not None)
    for k in (0, 1, 2047, 2048, 2053, 4099, X.shape[0] - 1):
        np.testing.assert_allclose(J[k], cf(X[k]), **TOL[np.float64])
    np.testing.assert_array_equal(cf(X), J)


def _model(x, p):
    return np.tanh(x * p[0]) * np.exp(x[::-1]) + p[1] * x**2, (x * x).sum() * p[0]


def _loss(x):
    return np.tanh(x).sum() * np.exp(x[0])


def _fixed(x):
    return _model(x, np.array([1.0, 2.0]))


@pytest.mark.parametrize(
    "make, args",
    [
        (lambda x, p, v, w: symjac.compile(_model, x[0], p[0], wrt=0, value=True, cache=False), "xp"),
        (lambda x, p, v, w: symjac.compile(_loss, x[0], mode="hessian", cache=False), "x"),
        (lambda x, p, v, w: symjac.compile(_loss, x[0], mode="hvp", cache=False), "xv"),
        (lambda x, p, v, w: symjac.compile(_fixed, x[0], mode="jvp", cache=False), "xv"),
        (lambda x, p, v, w: symjac.compile(_fixed, x[0], mode="vjp", cache=False), "xw"),
    ],
    ids=["value-and-jacobian-with-parameters", "hessian", "hvp", "jvp", "vjp"],
)
def test_every_mode_batches_like_single_points(make, args, rng):
    X, P, V = rng.uniform(0.1, 1, (N, 3)), rng.uniform(0.5, 1.5, (N, 2)), rng.normal(size=(N, 3))
    W = (rng.normal(size=(N, 3)), rng.normal(size=(N,)))
    cf = make(X, P, V, W)
    positional = [X] + ([P] if "p" in args else [])
    vector = V if "v" in args else W if "w" in args else None
    got = cf(*positional, v=vector) if vector is not None else cf(*positional)
    for k in (0, LANES - 1, LANES, N - 1):
        at = [a[k] for a in positional]
        if vector is None:
            want = cf(*at)
        else:
            want = cf(*at, v=tuple(w[k] for w in vector) if isinstance(vector, tuple) else vector[k])
        for g, w in zip(_tuple(got), _tuple(want), strict=True):
            np.testing.assert_allclose(np.asarray(g)[k], w, **TOL[np.float64])


TORCH_MODELS = {
    "relu": lambda t, x: t.relu(x) * x,
    "clamp": lambda t, x: t.clamp(x, -0.3, 0.4) * x.exp(),
    "where": lambda t, x: t.where(x > 0.1, x.sin(), x.cos() * x),
    "softplus": lambda t, x: t.nn.functional.softplus(x) * x,
    "gelu": lambda t, x: t.nn.functional.gelu(x),
    "gelu-tanh": lambda t, x: t.nn.functional.gelu(x, approximate="tanh"),
    "silu": lambda t, x: t.nn.functional.silu(x) + x.abs(),
    "logsumexp": lambda t, x: t.logsumexp(x, 0) * x,
    "max": lambda t, x: x.max() * x,
    "sigmoid": lambda t, x: t.sigmoid(x).prod() * x,
}


@pytest.mark.parametrize("name", list(TORCH_MODELS))
def test_batched_activations_match_torch_autograd(name, rng):
    torch = pytest.importorskip("torch")
    f = lambda x: TORCH_MODELS[name](torch, x)  # noqa: E731
    X = torch.tensor(rng.uniform(-1, 1, (N, 4)))
    J = symjac.compile(f, X[0], cache=False)(X)
    want = torch.stack([torch.autograd.functional.jacobian(f, x) for x in X])
    torch.testing.assert_close(J, want, rtol=1e-10, atol=1e-12)
