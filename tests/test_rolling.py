"""Rolled kernels (symjac.elements.rolling): repeated stores as loops, constants as an image.

Oracle: the same program unrolled. Every rolled member evaluates the same operations in the
same order, so results must agree bit for bit; symjac.jacobian (sympy.diff) checks both.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy

import symjac
from symjac.backend import runtime
from symjac.elements import rolling
from symjac.elements.simplify import Program

ROOT = pathlib.Path(__file__).parent.parent


def brusselator(n):
    idx = np.arange(n * n).reshape(n, n)
    shifts = [np.roll(idx, s, axis=a).ravel() for s, a in ((1, 0), (-1, 0), (1, 1), (-1, 1))]

    def rhs(y):
        u, v = y[: n * n], y[n * n :]

        def lap(w):
            return w[shifts[0]] + w[shifts[1]] + w[shifts[2]] + w[shifts[3]] - 4 * w

        uuv = u * u * v
        return np.concatenate([1 + uuv - 4.4 * u + 0.3 * lap(u), 3.4 * u - uuv + 0.3 * lap(v)])

    return rhs, 2 * n * n


def chain(y):
    stretch = y[1:] - y[:-1] - 1.0
    force = stretch + 0.1 * stretch**3
    return np.concatenate([force[:1], force[1:] - force[:-1], -force[-1:]]) * 0.5


def banded_energy(y):
    return (y[1:] ** 2 * y[:-1]).sum() + (0.25 * y**4).sum()


def two_inputs(x, p):
    return np.concatenate([x * x * p[0] + 0.1, np.sin(x) * p[1] - 0.2 * x])


def activations(x):
    gate = symjac.where(x > 0.5, np.tanh(x) * x, np.exp(-x) / (1 + x * x))
    return np.concatenate([gate, symjac.clamp(x * 3.0 - 1.0, -0.5, 0.5), np.maximum(x, 0.4) ** 1.5])


RHS4, N4 = brusselator(4)
Y4 = np.linspace(0.2, 0.9, N4)
V4 = np.linspace(-1.0, 1.0, N4)
MIXED = [np.linspace(0.1, 1, 24, dtype=np.float32), np.array([0.5, 2.0])]
# name: (func, inputs, compile options, call options, the oracle: symjac's functional API)
CASES = {
    "brusselator csr": (RHS4, [Y4], dict(sparse="csr"), {}, lambda: symjac.jacobian(RHS4, Y4)),
    "brusselator csc": (RHS4, [Y4], dict(sparse="csc"), {}, lambda: symjac.jacobian(RHS4, Y4)),
    "brusselator dense": (RHS4, [Y4], {}, {}, lambda: symjac.jacobian(RHS4, Y4)),
    "brusselator value": (RHS4, [Y4], dict(value=True), {}, lambda: (RHS4(Y4), symjac.jacobian(RHS4, Y4))),
    "brusselator jvp": (RHS4, [Y4], dict(mode="jvp"), dict(v=V4), lambda: symjac.jvp(RHS4, Y4, V4)[1]),
    "brusselator float32": (
        RHS4,
        [Y4.astype(np.float32)],
        {},
        {},
        lambda: symjac.jacobian(RHS4, Y4.astype(np.float32)),
    ),
    "brusselator float32 csr": (  # an image of float32 constants
        RHS4,
        [Y4.astype(np.float32)],
        dict(sparse="csr"),
        {},
        lambda: symjac.jacobian(RHS4, Y4.astype(np.float32)),
    ),
    "chain": (
        chain,
        [np.linspace(0.0, 40.0, 41)],
        {},
        {},
        lambda: symjac.jacobian(chain, np.linspace(0.0, 40.0, 41)),
    ),
    "hessian": (
        banded_energy,
        [np.linspace(0.1, 1.0, 30)],
        dict(mode="hessian", expand="elements"),  # auto: a loop kernel of the gradient graph
        {},
        lambda: symjac.hessian(banded_energy, np.linspace(0.1, 1.0, 30)),
    ),
    "float32 and float64": (two_inputs, MIXED, {}, {}, lambda: symjac.jacobian(two_inputs, tuple(MIXED))),
    "branches and libm": (
        activations,
        [np.linspace(-1.0, 2.0, 40)],
        {},
        {},
        lambda: symjac.jacobian(activations, np.linspace(-1.0, 2.0, 40)),
    ),
}


def _arrays(r):
    r = r if isinstance(r, tuple) else (r,)
    return [np.asarray(x.toarray() if hasattr(x, "toarray") else x) for x in r]


@pytest.fixture
def roll_small(monkeypatch):
    """Roll any program with groups of four: small models exercise every path."""
    monkeypatch.setattr(rolling, "ROLL_MIN_STATEMENTS", 0)
    monkeypatch.setattr(rolling, "ROLL_MIN_GROUP", 4)


@pytest.mark.parametrize("case", CASES)
def test_rolled_kernels_equal_unrolled_bit_for_bit(case, roll_small, monkeypatch):
    func, args, options, call, oracle = CASES[case]
    rolled = symjac.compile(func, *args, cache=False, **options)
    assert ".loop" in rolled.kernel.ir or ".image" in rolled.kernel.ir
    monkeypatch.setattr(rolling, "ROLL_MIN_STATEMENTS", 10**9)
    unrolled = symjac.compile(func, *args, cache=False, **options)
    assert ".loop" not in unrolled.kernel.ir and ".image" not in unrolled.kernel.ir
    got = _arrays(rolled(*args, **call))
    for g, w in zip(got, _arrays(unrolled(*args, **call)), strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    for g, w in zip(got, _arrays(oracle()), strict=True):
        tol = dict(rtol=1e-5, atol=1e-6) if g.dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(g, np.asarray(w, dtype=g.dtype), **tol)


def test_constants_become_one_image_and_repeated_stores_few_loops():
    rhs, n = brusselator(8)
    cf = symjac.compile(rhs, np.zeros(n), cache=False, sparse="csr")
    images, loops, rest = rolling.roll(cf.program())
    assert len(images) == 1  # the neighbours' 0.3, four per row, in place among zeros
    assert np.count_nonzero(images[0].values) == 4 * n and set(images[0].values) == {0.0, 0.3}
    stores = sum(len(loop.stores) for loop in loops)
    assert stores == 4 and len(loops) <= 4  # d f_u/d u_i, d f_u/d v_i, d f_v/d u_i, d f_v/d v_i
    assert not rest.stores and not rest.assignments
    assert cf.kernel.ir.count('define internal void @"symjac_kernel.loop') == len(loops)


def test_large_batches_of_a_rolled_kernel_run_its_unrolled_kernel(rng):
    rhs, n = brusselator(8)  # 768 results per point: too many for SIMD lanes
    cf = symjac.compile(rhs, np.zeros(n), cache=False, expand="elements")  # auto: dense loops
    assert ".loop" in cf.kernel.ir
    small = rng.uniform(0.1, 1.0, (7, n))  # 0.9 MB of results: the rolled loops are as fast
    for x, J in zip(small, cf(small), strict=True):
        np.testing.assert_array_equal(J, cf(x))
    dirty = np.full((7, n, n), np.nan)  # the batch loop zeroes each point's results itself
    np.testing.assert_array_equal(cf(small, out=dirty), cf(small))
    assert cf.kernel._simd is None  # nothing compiled for it
    large = rng.uniform(0.1, 1.0, (runtime.UNROLLED_BATCH_BYTES // (8 * n * n) + 3, n))
    batch = cf(large)
    fn, lanes, _, optimized = cf.kernel.simd()
    assert lanes == 1 and ".loop" not in optimized
    for x, J in zip(large, batch, strict=True):
        np.testing.assert_array_equal(J, cf(x))
    dirty = np.full(batch.shape, 1e300)  # and so does the unrolled kernel's
    np.testing.assert_array_equal(cf(large, out=dirty), batch)
    np.testing.assert_array_equal(cf(small), np.stack([cf(x) for x in small]))  # now unrolled too


def test_small_programs_stay_straight_line():
    cf = symjac.compile(chain, np.linspace(0.0, 10.0, 11), cache=False)
    assert ".loop" not in cf.kernel.ir and ".image" not in cf.kernel.ir
    assert cf.kernel.simd() is False or cf.kernel.simd()[1] > 1


def test_only_small_computations_are_rolled(roll_small):
    x = sympy.symbols("x:40", real=True)
    big = sum(sympy.sin(x[k] * x[k + 1]) for k in range(30))  # far past ROLL_NODES
    stores = [(0, k, big + x[k]) for k in range(40)] + [(0, 40 + k, 2 * x[k] ** 3) for k in range(40)]
    images, loops, rest = rolling.roll(Program({s: k for k, s in enumerate(x)}, (), tuple(stores), "float64"))
    assert [len(loop.table) for loop in loops] == [40] and loops[0].stores == ((0, 2 * x[0] ** 3),)
    assert rest.stores == tuple(stores[:40])


def test_sizes_of_deep_expressions_stop_early():
    deep = sympy.Symbol("x")
    for k in range(5000):  # far deeper than Python's recursion limit
        deep = sympy.Add(deep, sympy.Integer(k + 1), evaluate=False)
    assert rolling._size(deep, {}) > rolling.ROLL_NODES  # too big, found without recursing 5000 deep


def test_stores_reading_unknown_symbols_are_not_rolled():
    x, stray = sympy.symbols("x stray", real=True)
    assert rolling._shape(x * stray, {}, {x: 0}) is None
    shape, inputs = rolling._shape(x * x + 1, {}, {x: 0})
    assert inputs == [x]


def test_cached_rolled_kernel_and_its_batch_kernel_load_in_a_fresh_process(tmp_path):
    script = textwrap.dedent(
        """
        import numpy as np, symjac
        from test_rolling import brusselator
        rhs, n = brusselator(8)
        cf = symjac.compile(rhs, np.zeros(n), sparse="csr")
        X = np.linspace(0.1, 1.0, 200 * n).reshape(200, n)  # 1.2 MB of results: unrolled
        batch = cf(X)
        for x, data in zip(X, batch):  # a sparse batch: each point's nonzeros
            assert np.array_equal(data, cf(x).data)
        print(cf.cache_hit, cf.kernel.simd()[1], ".loop" in cf.kernel.ir or cf.cache_hit)
        """
    )
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env = dict(os.environ, SYMJAC_CACHE_DIR=str(tmp_path), PYTHONPATH=path)

    def run():
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run() == ["False", "1", "True"]
    assert len(list(tmp_path.glob("*-simd.kernel"))) == 1
    assert run() == ["True", "1", "True"]
