"""The array road's loop kernels (symjac.arrays.loops, and reverse) against the element road and torch.

Every case compiles the same function as loops, forward (tangents) and reverse (adjoints), and as
elements, and asserts that the Jacobians agree to a few ulps at random points and at points where
the rules matter (zeros, ties, kinks); torch autograd is a second, independent oracle.
"""

import math
from dataclasses import replace

import numpy as np
import pytest

import symjac
from symjac import compiled, roads

RNG = np.random.default_rng(7)


class Dense:
    """The dense loop road's two kernels, forward (tangents) and reverse (adjoints), as one
    compiled function: every call runs both, asserts that they agree to a few ulps and returns
    the forward kernel's result (into ``out=`` too; the reverse kernel writes a buffer of its own)."""

    def __init__(self, spec):
        self.forward = compiled.CompiledFunction(replace(spec, road="loops"))
        self.backward = compiled.CompiledFunction(replace(spec, road="reverse-loops"))

    def __call__(self, *args, out=None, **kw):
        mine = None if out is None else np.full_like(out, np.nan)
        backward = self.backward(*args, out=mine, **kw)
        forward = self.forward(*args, out=out, **kw)
        for g, w in zip(_leaves(backward), _leaves(forward), strict=True):
            close(g, w)
        return forward

    def __getattr__(self, name):
        return getattr(self.forward, name)


def both(func, *examples, **kw):
    """The dense loop roads' kernels (see Dense) and the element road's (expand="arrays" may
    take sparse tangents or adjoints where they are cheaper: the dense ones are built all the
    same)."""
    loops = symjac.compile(func, *examples, expand="arrays", **kw)
    elements = symjac.compile(func, *examples, expand="elements", **kw)
    assert loops.spec.road in roads.LOOP_ROADS and elements.spec.road == "elements"
    return Dense(loops.spec), elements


def close(a, b):
    """Within a few ulps of the larger finite entries (sums of products round differently), and
    inf and NaN in the same places."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0, where=np.isfinite(b))))
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14 * scale)


def agree(func, *examples, points=3, **kw):
    loops, elements = both(func, *examples, **kw)
    picked = symjac.compile(func, *examples, expand="arrays", **kw)  # sparse tangents, maybe
    for _ in range(points):
        xs = [RNG.standard_normal(np.shape(e)) for e in examples]
        want = elements(*xs)
        for kernel in {loops, picked}:
            for g, w in zip(_leaves(kernel(*xs)), _leaves(want), strict=True):
                close(g, w)
    return loops, elements


def _leaves(x):
    if isinstance(x, (tuple, list)):
        return [leaf for item in x for leaf in _leaves(item)]
    return [x]


def mlp(hidden, n_in=8, n_out=4, act=np.tanh):
    W1, b1 = RNG.standard_normal((hidden, n_in)) / 3, RNG.standard_normal(hidden)
    W2, b2 = RNG.standard_normal((hidden, hidden)) / np.sqrt(hidden), RNG.standard_normal(hidden)
    W3 = RNG.standard_normal((n_out, hidden))

    def f(x):
        h = act(W1 @ x + b1)
        h = act(W2 @ h + b2)
        return W3 @ h

    return f


def test_tanh_mlp_single_batch_and_out():
    loops, elements = agree(mlp(32), np.zeros(8))
    X = RNG.standard_normal((37, 8))
    close(loops(X), elements(X))
    out = np.full((37, 4, 8), np.nan)
    assert loops(X, out=out) is out or loops(X, out=out)[0] is out
    close(out, elements(X))
    one = np.empty((4, 8))
    loops(X[3], out=one)
    close(one, elements(X[3]))


def test_tanh_mlp_against_torch_autograd():
    torch = pytest.importorskip("torch")
    W1, b1 = RNG.standard_normal((20, 8)) / 3, RNG.standard_normal(20)
    W2, W3 = RNG.standard_normal((20, 20)) / 5, RNG.standard_normal((4, 20))

    def f(x):
        return W3 @ np.tanh(W2 @ np.tanh(W1 @ x + b1))

    def g(t):
        T = torch.from_numpy
        return T(W3) @ torch.tanh(T(W2) @ torch.tanh(T(W1) @ t + T(b1)))

    cf = symjac.compile(f, np.zeros(8), expand="arrays")
    for _ in range(3):
        x = RNG.standard_normal(8)
        close(cf(x), torch.autograd.functional.jacobian(g, torch.from_numpy(x)).numpy())


def test_relu_mlp_log_softmax_with_kinks_matches_torch():
    torch = pytest.importorskip("torch")
    W1 = torch.from_numpy(RNG.standard_normal((12, 6)))
    b1 = torch.from_numpy(RNG.standard_normal(12))
    b1[:4] = 0.0  # at x = 0 these rows sit exactly on relu's kink: torch's derivative there is 0
    W2 = torch.from_numpy(RNG.standard_normal((5, 12)))

    def f(x):
        return torch.log_softmax(W2 @ torch.relu(W1 @ x + b1), dim=0)

    loops, elements = both(f, torch.zeros(6, dtype=torch.float64))
    for x in [np.zeros(6), *RNG.standard_normal((3, 6))]:
        xt = torch.from_numpy(x)
        want = torch.autograd.functional.jacobian(f, xt).numpy()
        close(np.asarray(loops(x)), want)
        close(np.asarray(loops(x)), np.asarray(elements(x)))


@pytest.mark.parametrize(
    "func",
    [
        lambda x: np.sin(x) * np.exp(x) + np.cos(x) / (1 + x * x),
        lambda x: np.sqrt(np.abs(x) + 1) - np.log1p(x * x),
        lambda x: np.where(x > 0.2, x**3, -x) + np.maximum(x, 0.1),
        lambda x: np.maximum(x, x[::-1]),  # ties at the middle element: the derivative splits
        lambda x: np.abs(x) * np.sign(x) + 1 / (1 + np.exp(-x)),
        lambda x: np.arctan2(x, 1 + x * x) + np.tanh(x) ** 2,
    ],
)
def test_elementwise_rules_agree(func):
    agree(func, np.zeros(5))
    # zeros and ties: exact points where rules (abs, sign, maximum, where) matter
    loops, elements = both(func, np.zeros(5))
    for x in [np.zeros(5), np.array([0.0, 0.2, -0.0, 1.0, 0.2])]:
        close(loops(x), elements(x))


@pytest.mark.parametrize(
    "func, shape",
    [
        (lambda x: (x.T @ x).sum(axis=0), (4, 3)),
        (lambda x: x[1:, ::2].reshape(-1) * x[0, 0], (4, 5)),
        (lambda x: np.concatenate([x, 2 * x[:, :1]], axis=1).T.reshape(-1), (3, 4)),
        (lambda x: np.stack([x, np.sin(x)], axis=0).sum(axis=(1,), keepdims=True), (3, 4)),
        (lambda x: np.einsum("ij,jk,ik->i", x, x.T, x), (3, 3)),
        (lambda x: x - np.max(x, axis=1, keepdims=True), (3, 4)),
        (lambda x: np.exp(x).sum(axis=1) + x.min(axis=0).sum(), (3, 4)),
        (lambda x: (x[None, :, :] * np.ones((2, 1, 1))).sum(axis=0) @ np.arange(4.0), (3, 4)),
        (lambda x: np.matmul(x.reshape(2, 3, 2), x.reshape(2, 2, 3)).reshape(-1), (12,)),
    ],
)
def test_structural_ops_agree(func, shape):
    agree(func, np.zeros(shape))


IDX = np.array([3, 1, 1, 0, 2])
LONG = np.random.default_rng(0).integers(0, 80, size=100)  # a table read by symbol (DATA_FROM)


@pytest.mark.parametrize(
    "func",
    [
        lambda x: x[IDX] * x[::-1][IDX],
        lambda x: np.sin(x.reshape(5, 16)[IDX[:3], 2:][:, [0, 3]]).T.reshape(-1),
        lambda x: x[LONG] ** 2 + x[np.roll(np.arange(80), 1)][LONG],
        lambda x: x[x.size // 2 :][[1, 2]] + x[:2] * x.reshape(2, 40)[[1, 0]].sum(axis=1),
        lambda x: x.reshape(8, 10)[np.arange(8) % 3 == 1, 2:5],  # a boolean mask
    ],
)
def test_getitem_with_index_arrays_agrees(func):
    loops, elements = agree(func, np.zeros(80), points=2)
    X = RNG.standard_normal((3, 80))
    close(loops(X), elements(X))


def test_setitem_agrees():
    def f(x):
        y = np.zeros(80) + x * 2.0
        y[0] = x[3] ** 2
        y[5:8] = np.sin(x[:3])
        y[LONG] = x[LONG[::-1]] * x[0]  # repeated places: the last assignment wins
        return y.reshape(8, 10)[:, 1:] * x[:9]

    loops, elements = agree(f, np.zeros(80), points=2)
    X = RNG.standard_normal((3, 80))
    close(loops(X), elements(X))


def test_max_ties_and_logsumexp_agree():
    def f(x):
        z = np.stack([x, x[::-1]])  # equal columns tie in the max
        return np.max(z, axis=0) + np.log(np.exp(z).sum(axis=0))

    loops, elements = both(f, np.zeros(4))
    for x in [np.zeros(4), np.array([1.0, 2.0, 2.0, 1.0]), RNG.standard_normal(4)]:
        close(loops(x), elements(x))


def test_torch_logsumexp_and_softmax():
    torch = pytest.importorskip("torch")

    def f(x):
        return torch.logsumexp(x, dim=1) + torch.softmax(x, dim=0).sum(dim=1)

    loops, elements = both(f, torch.zeros(3, 4, dtype=torch.float64))
    for _ in range(3):
        x = RNG.standard_normal((3, 4))
        want = torch.autograd.functional.jacobian(f, torch.from_numpy(x)).numpy()
        close(np.asarray(loops(x)), want)
        close(np.asarray(loops(x)), np.asarray(elements(x)))


def test_several_inputs_wrt_value_and_tuple_outputs():
    def f(x, y, p):
        return np.tanh(x @ y) * p[0], (x * p[1]).sum()

    ex = (np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(2))
    for wrt in (None, (0, 1), 1):
        loops, elements = both(f, *ex, wrt=wrt, value=True)
        args = [RNG.standard_normal(e.shape) for e in ex]
        for g, w in zip(_leaves(loops(*args)), _leaves(elements(*args)), strict=True):
            close(g, w)
        batch = [RNG.standard_normal((5, *e.shape)) for e in ex]
        for g, w in zip(_leaves(loops(*batch)), _leaves(elements(*batch)), strict=True):
            close(g, w)


def test_wide_tangent_rows_and_heap_scratch():
    # 37 inputs: tangent rows in vectors of 8 and a remainder; 600 x 37 tangents on the heap.
    W = RNG.standard_normal((600, 37)) / 6
    V = RNG.standard_normal((3, 600)) / 20

    def f(x):
        return V @ np.tanh(W @ x)

    agree(f, np.zeros(37), points=2)


def test_one_captured_array_used_at_several_places():
    # N-body's masses in three matmuls: one array bound by symbol (>= DATA_FROM elements) and
    # recorded three times is one global of the kernel (was a duplicate-name internal error).
    from symjac.arrays import data

    m = RNG.uniform(0.5, 1.5, data.DATA_FROM + 6)

    def f(x):
        d = x[None, :] - x[:, None]
        return np.concatenate([np.tanh(d) @ m, (d * d) @ m, np.sin(d) @ m])

    agree(f, np.zeros(m.size), points=2)


def test_expand_is_checked_and_unsupported_falls_back():
    with pytest.raises(ValueError, match="expand must be"):
        symjac.compile(np.sin, np.zeros(3), expand="rows")
    with pytest.raises(ValueError, match="cumsum"):
        symjac.compile(lambda x: np.cumsum(x), np.zeros(3), expand="arrays")
    with pytest.raises(ValueError, match="mode='hessian'.*cumsum"):  # no rule in a gradient graph
        symjac.compile(lambda x: (np.cumsum(x) ** 2).sum(), np.zeros(3), mode="hessian", expand="arrays")
    squares = symjac.compile(lambda x: (x**2).sum(), np.zeros(3), mode="hessian", expand="arrays")
    np.testing.assert_array_equal(squares(np.ones(3)), 2 * np.eye(3))
    with pytest.raises(ValueError, match="tangents of"):  # 10**5 x 2 * 10**5: refused, not built
        symjac.compile(lambda x: 2 * x, np.zeros(10**5), expand="arrays")
    cf = symjac.compile(lambda x: np.cumsum(x), np.zeros(3))  # auto: the element road
    assert cf.spec.road == "elements"
    np.testing.assert_array_equal(cf(np.ones(3)), np.tril(np.ones((3, 3))))


def test_disk_cache_keys_include_the_road():
    f = mlp(6)
    first = symjac.compile(f, np.zeros(8), expand="arrays")
    builds = compiled.BUILDS
    again = symjac.compile(f, np.zeros(8), expand="arrays")
    assert again.cache_hit and compiled.BUILDS == builds
    other = symjac.compile(f, np.zeros(8), expand="elements")
    assert not other.cache_hit  # a different kernel for the same mathematics
    x = RNG.standard_normal(8)
    close(again(x), first(x))
    close(again(x), other(x))
    close(again(x[None].repeat(3, 0)), other(x[None].repeat(3, 0)))


def test_loop_road_views_fall_back_to_the_element_program():
    cf = symjac.compile(mlp(4), np.zeros(8), expand="arrays")
    assert cf.program() is not None  # the element road's scalar program, for C export
    assert "llvm.fma" in cf.ir  # the loop kernel's own IR: contractions as fused multiply-adds
    assert "vfmadd" in cf.assembly() or "fma" in cf.assembly()


def test_cached_kernel_in_a_new_process_reads_its_captured_arrays(tmp_path):
    # A 16 x 16 layer is read through a symbol (data.DATA_FROM): the new process, which loads
    # the cached object code without building, must bind it to the same numbers.
    import os
    import subprocess
    import sys

    script = """
import numpy as np, symjac
from symjac import compiled
rng = np.random.default_rng(3)
W1, W2, W3 = rng.standard_normal((16, 8)), rng.standard_normal((16, 16)) / 4, rng.standard_normal((4, 16))
f = lambda x: W3 @ np.tanh(W2 @ np.tanh(W1 @ x))
cf = symjac.compile(f, np.zeros(8), expand="arrays")
x = np.linspace(-1, 1, 8)
print(int(cf.cache_hit), compiled.BUILDS, repr(cf(x).tolist()))
"""
    env = {**os.environ, "SYMJAC_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    (hit0, builds0, first), (hit1, builds1, second) = (r.stdout.split(" ", 2) for r in runs)
    assert (hit0, builds0, hit1, builds1) == ("0", "1", "1", "0")
    np.testing.assert_array_equal(np.array(eval(second)), np.array(eval(first)))
    rng = np.random.default_rng(3)
    W1, W2, W3 = rng.standard_normal((16, 8)), rng.standard_normal((16, 16)) / 4, rng.standard_normal((4, 16))
    f = lambda x: W3 @ np.tanh(W2 @ np.tanh(W1 @ x))  # noqa: E731
    close(np.array(eval(second)), symjac.compile(f, np.zeros(8), expand="elements")(np.linspace(-1, 1, 8)))


def test_auto_takes_the_loop_road_for_large_models_only():
    # 3000 scalar operations; 4 outputs of 8 inputs: adjoints, 8 of 8: tangents
    assert symjac.compile(mlp(32), np.zeros(8)).spec.road == "reverse-loops"
    assert symjac.compile(mlp(32, n_out=8), np.zeros(8)).spec.road == "loops"
    assert symjac.compile(mlp(32, n_in=4, n_out=2), np.zeros(4)).spec.road == "loops"  # short rows
    assert symjac.compile(mlp(4), np.zeros(8)).spec.road == "elements"
    assert symjac.compile(mlp(32), np.zeros(8), mode="jvp").spec.road == "loops"  # tangents
    assert symjac.compile(mlp(32), np.zeros(8), mode="vjp").spec.road == "reverse-loops"  # adjoints
    # the jvp of its gradient graph (symjac.arrays.gradient), and the Hessian its Jacobian
    assert symjac.compile(lambda x: mlp(32)(x).sum(), np.zeros(8), mode="hvp").spec.road == "loops"
    assert symjac.compile(lambda x: mlp(4)(x).sum(), np.zeros(8), mode="hessian").spec.road == "elements"


def test_gradient_of_a_large_model_by_adjoints():
    # One output of 10**5 inputs: forward tangents would be 10**5 wide on every element (refused
    # by the budget); adjoints are one double per element. Oracle: the analytic gradient.
    n = 10**5
    W = RNG.standard_normal((3, n)) / np.sqrt(n)

    def f(x):
        return (np.sin(x) * x).sum() + (np.tanh(W @ x) ** 2).sum()

    cf = symjac.compile(f, np.zeros(n), expand="arrays")
    assert cf.spec.road == "reverse-loops"
    for _ in range(2):
        x = RNG.standard_normal(n)
        t = np.tanh(W @ x)
        want = np.cos(x) * x + np.sin(x) + W.T @ (2 * t * (1 - t * t))
        close(cf(x), want)
    X = RNG.standard_normal((3, n))
    close(
        cf(X)[2],
        np.cos(X[2]) * X[2] + np.sin(X[2]) + W.T @ (2 * np.tanh(W @ X[2]) * (1 - np.tanh(W @ X[2]) ** 2)),
    )


def test_few_expensive_points_are_split_across_threads():
    # A point of an MLP 8-256-256-4 is about 10**5 operations: 64 points are a millisecond or
    # more of work, worth two threads (the split was 1024 points a thread at least).
    from symjac.backend import runtime

    cf = symjac.compile(mlp(256), np.zeros(8), expand="arrays")
    X = RNG.standard_normal((64, 8))
    cf._threads = 1
    one = cf(X)
    seen = []
    batch = cf.kernel.batch
    cf.kernel.batch = lambda *a, **kw: (seen.append(kw), batch(*a, **kw))[1]
    cf._threads = 2
    cf.kernel._threads_pay = True  # split however fast the machine's threads are
    np.testing.assert_array_equal(cf(X), one)
    assert seen[-1]["threads"] == 2 and seen[-1]["min_chunk"] <= 16
    assert len(runtime._chunks(64, 2, 1, seen[-1]["min_chunk"])) == 2


def _vectors(shapes, lead=()):
    vs = [RNG.standard_normal((*lead, *s)) for s in shapes]
    return vs[0] if len(vs) == 1 else tuple(vs)


PRODUCT_CASES = [
    (mlp(32), (np.zeros(8),), {}),
    (lambda x: np.concatenate([np.sin(x[::2]).reshape(-1), (x.T @ x).reshape(-1)]), (np.zeros((4, 3)),), {}),
    (
        lambda x, y, p: (np.tanh(x @ y) * p[0], (x * p[1]).sum()),
        (np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(2)),
        {},
    ),
    (
        lambda x, y, p: (np.tanh(x @ y) * p[0], np.max(x * p[1], axis=0)),
        (np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(2)),
        {"wrt": (0, 1), "value": True},
    ),
    (lambda x: x[IDX] * np.log1p(x[::-1][IDX] ** 2), (np.zeros(5),), {"wrt": 0}),
]


@pytest.mark.parametrize("mode", ["vjp", "jvp"])
@pytest.mark.parametrize("case", range(len(PRODUCT_CASES)))
def test_products_by_adjoints_and_tangents_agree_with_the_element_road(mode, case):
    func, examples, kw = PRODUCT_CASES[case]
    loops = symjac.compile(func, *examples, mode=mode, expand="arrays", **kw)
    elements = symjac.compile(func, *examples, mode=mode, expand="elements", **kw)
    assert loops.spec.road == ("reverse-loops" if mode == "vjp" else "loops")
    n = len(examples)
    wrt = kw.get("wrt", tuple(range(n)))
    wrt = (wrt,) if isinstance(wrt, int) else wrt
    if mode == "vjp":
        outs = func(*examples)
        shapes = [np.shape(o) for o in (outs if isinstance(outs, tuple) else (outs,))]
    else:
        shapes = [np.shape(examples[j]) for j in wrt]
    for lead in ((), (3,)):
        xs = [RNG.standard_normal((*lead, *np.shape(e))) for e in examples]
        v = _vectors(shapes, lead)
        got, want = loops(*xs, v=v), elements(*xs, v=v)
        for g, w in zip(_leaves(got), _leaves(want), strict=True):
            close(g, w)


def test_vjp_of_a_large_model_is_a_gradient_by_adjoints():
    # compile(mode="vjp") of a 2000-input model took 88 s on the element road (260,000 stores).
    torch = pytest.importorskip("torch")
    W = RNG.standard_normal((64, 2000)) / 40
    V = RNG.standard_normal((2, 64))

    def f(x):
        return V @ np.tanh(W @ x)

    cf = symjac.compile(f, np.zeros(2000), mode="vjp")
    assert cf.spec.road == "reverse-loops"
    x, v = RNG.standard_normal(2000), RNG.standard_normal(2)
    g = lambda t: torch.from_numpy(V) @ torch.tanh(torch.from_numpy(W) @ t)  # noqa: E731
    _, want = torch.autograd.functional.vjp(g, torch.from_numpy(x), torch.from_numpy(v))
    close(cf(x, v=v), want.numpy())
    builds = compiled.BUILDS
    again = symjac.compile(f, np.zeros(2000), mode="vjp")  # from the disk cache, checked
    assert again.cache_hit and compiled.BUILDS == builds
    close(again(x, v=v), want.numpy())
    value, ours = symjac.vjp(f, x, v)  # the drop-in, whose kernel takes the same road
    close(ours, want.numpy())


def _gather_from_a_transpose(x):
    return np.sin(x.T[np.array([0, 2, 2])]).reshape(-1) * 2.0


def _assign_a_transposed_row(x):
    y = np.zeros(6) + x[0, :2].sum()
    y[np.array([1, 4, 1])] = np.cos(x.T[1])  # repeated place: the last assignment wins
    return y


@pytest.mark.parametrize(
    "func, shape",
    [
        (_gather_from_a_transpose, (3, 4)),
        (_assign_a_transposed_row, (3, 3)),
        (lambda x: np.tanh(x.T.reshape(-1)[::2]), (3, 4)),
    ],
)
def test_adjoints_through_strided_views(func, shape):
    # Reverse kernels scatter into a transposed (strided) adjoint through a scratch buffer, and a
    # reshape of a strided adjoint keeps rows of its own: both against forward and elements.
    agree(func, np.zeros(shape))


def _sqrt_at_zero():
    """Weights with exact zeros, and a point where sqrt's partial is infinite: z[1] = x0 - x1 = 0
    in any order of summation; W1[1, 2:] = 0, so output columns 2.. get nothing through it."""
    rng = np.random.default_rng(3)
    W1 = rng.uniform(0.1, 1.0, (3, 8))
    W1[1] = 0.0
    W1[1, :2] = 1.0, -1.0
    W2 = rng.standard_normal((2, 3))
    x = rng.uniform(0.1, 1.0, 8)
    x[1] = x[0]
    return W1, W2, x


@pytest.mark.parametrize("n_out", [2, 3, 11])
def test_a_zero_weight_kills_an_infinite_partial_in_contractions(n_out):
    # The exact derivative has no term for W1[1, j] = 0, so sqrt'(0) = inf must not make those
    # entries NaN (0 * inf): forward tangents, reverse adjoints (Dense runs and compares both)
    # and the element road agree, inf and NaN included; a batch's points take the same path.
    W1, W2, x = _sqrt_at_zero()
    f = {
        2: lambda a: W2 @ np.sqrt(W1 @ a),
        3: lambda a: np.sqrt(a @ W1.T),
        11: lambda a: np.concatenate([W1.T @ np.sqrt(W1 @ a), np.sqrt(W1 @ a)]),
    }[n_out]
    loops, elements = both(f, x)
    want = elements(x)
    got = loops(x)
    close(got, want)
    assert np.isinf(got[:, :2]).any() and np.isfinite(got[:, 2:]).all()
    y = x + np.r_[0.25, np.zeros(7)]  # z[1] = 0.25: no infinite partial
    batch = loops(np.stack([y, x, x]))
    close(batch[1], want)
    close(batch[0], elements(y))
    assert np.isfinite(batch[0]).all()


def test_products_of_vectors_keep_the_zero_rule():
    # vjp (adjoints seeded by v) as the element road's; jvp along a v that leaves x0 and x1 where
    # they are (so z[1] stays 0 and sqrt(z[1]) constant): the Jacobian's other columns times v.
    W1, W2, x = _sqrt_at_zero()
    f = lambda a: W2 @ np.sqrt(W1 @ a)  # noqa: E731
    J = symjac.compile(f, x, expand="elements")(x)
    u, v = np.array([0.5, -2.0]), np.r_[0.0, 0.0, np.linspace(1.0, 2.0, 6)]
    vjp = symjac.compile(f, x, mode="vjp", expand="arrays")(x, v=u)
    close(vjp, symjac.compile(f, x, mode="vjp", expand="elements")(x, v=u))
    assert np.isinf(vjp[:2]).all() and np.isfinite(vjp[2:]).all()
    close(symjac.compile(f, x, mode="jvp", expand="arrays")(x, v=v), J[:, 2:] @ v[2:])


def test_a_computed_zero_factor_leaves_an_infinite_tangent_undecided():
    # sqrt(x)[0]'s tangent is inf at x0 = 0, and its factor row m[0] = x[2:5] - (2, 3, 4) is 0
    # there only: 0 * inf is not decided at the array level (cbrt(x)**3 is 3 cbrt(x)**2 * inf at
    # 0, whose limit is 1), so column 0 is NaN, as the element road's formula
    # (x2 - 2) / (2 sqrt(x0)) = 0/0 and torch's product; the other columns agree.
    f = lambda a: np.sqrt(a)[:2] @ np.stack([a[2:5] - np.arange(2.0, 5.0), a[1:4]])  # noqa: E731
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    loops, elements = both(f, x)
    got, want = loops(x), elements(x)
    assert np.isnan(got[:, 0]).all() and np.isnan(want[:, 0]).all()
    close(got[:, 1:], want[:, 1:])


def _value_factor(x, z):
    # B = 1/z is inf where z is 0: B @ (W @ x) has d out[0] / d x[1] = B[0, 1] * W[1, 1] = 1,
    # while 0 * inf is NaN (W[0, 1] = 0), and B's inf reaches x's adjoint through a contraction.
    W = np.zeros((2, 8))
    W[0], W[1] = 1.0, 1.0
    W[0, 1] = 0.0
    return (1.0 / z) @ (W @ x)


@pytest.mark.parametrize("wrt", [None, 0])
def test_an_infinite_factor_keeps_the_zero_rule_through_later_contractions(wrt):
    x, z = np.linspace(0.1, 0.8, 8), np.array([[0.0, 1.0], [1.0, 1.0]])
    kw = {} if wrt is None else {"wrt": wrt}
    spec = symjac.compile(_value_factor, x, z, expand="arrays", **kw).spec
    want = _leaves(symjac.compile(_value_factor, x, z, expand="elements", **kw)(x, z))
    for road in ("loops", "reverse-loops"):
        got = _leaves(compiled.CompiledFunction(replace(spec, road=road))(x, z))
        close(got[0], want[0])  # x's block: W's zero is a constant's
        assert not np.isnan(got[0]).any() and got[0][0, 1] == 1.0, road
        if wrt is None:
            # z's block: d out[1] / d z[0, 0] is a product of y[0]'s value with a seed's zero and
            # 1/z's infinite partial, an entry this node-level analysis may leave undecided: NaN
            # there, never a number; elsewhere the element road's.
            decided = ~np.isnan(got[1])
            assert decided.sum() >= got[1].size - 1, road
            close(np.where(decided, got[1], 0.0), np.where(decided, want[1], 0.0))


def test_an_infinite_partial_that_is_killed_keeps_the_fast_loops(monkeypatch):
    # sqrt(max(z, 0)) and where(a > 0, sqrt|a|, 0) meet sqrt'(0) = inf at every clipped unit and
    # kill it (a zero partial, a zero tangent): the contractions find their own rows finite and
    # keep their fast loops. The exact loops are poisoned here (they write a NaN), so taking one
    # shows; at a point where an inf does reach a contraction, one is taken.
    import llvmlite.ir as ir

    from symjac.arrays import adjoints, contractions

    def poisoned(original, target):
        def exact(em, *args):
            original(em, *args)
            view = target(args)  # its last element (the first, x0 = 0, is killed by where)
            last = [ir.Constant(ir.IntType(64), n - 1) for n in view.shape]
            em.b.store(ir.Constant(ir.DoubleType(), math.nan), em.address(view, last, em.width))

        return exact

    monkeypatch.setattr(contractions, "_exact", poisoned(contractions._exact, lambda a: a[-3]))
    monkeypatch.setattr(adjoints, "_exact_rows", poisoned(adjoints._exact_rows, lambda a: a[0]))
    rng = np.random.default_rng(1)
    W1, W2, W3 = (
        rng.standard_normal((24, 16)) / 3,
        rng.standard_normal((24, 24)) / 5,
        rng.standard_normal((4, 24)),
    )

    def f(a):
        h = np.where(a > 0, np.sqrt(np.abs(a)), 0.0)
        h = np.sqrt(np.maximum(W1 @ h, 0.0))
        return W3 @ np.sqrt(np.maximum(W2 @ h, 0.0) + 1.0)

    def kernels(func, x):
        spec = symjac.compile(func, x, expand="arrays").spec
        return [
            compiled.CompiledFunction(replace(spec, road=r), cache=False) for r in ("loops", "reverse-loops")
        ]

    x = rng.standard_normal(16)
    x[0] = 0.0
    for kernel in kernels(f, x):
        assert np.isfinite(kernel(x)).all(), kernel.spec.road
    x = np.abs(x)  # now sqrt(|x0|) = 0 feeds W1 with an infinite tangent: the exact loops run
    for kernel in kernels(lambda a: W3 @ np.sqrt(W2 @ np.sqrt(W1 @ np.sqrt(a) + 1.0) + 1.0), x):
        assert np.isnan(kernel(x)).any(), kernel.spec.road


def test_only_contractions_an_inf_can_reach_are_guarded():
    # A tanh MLP has no op whose value or partial is infinite at finite arguments: its kernels
    # carry no check at all. A root guards the products that its tangents reach (forward: the
    # contractions after it) or its adjoints (reverse: the contractions before it).
    from symjac.arrays import finiteness

    def graph(func, n):
        return symjac.compile(func, np.full(n, 0.5), expand="arrays").spec.graph

    def contractions(g):
        return {n for n, (op, _, _) in enumerate(g.eqns) if op in finiteness.CONTRACTIONS}

    W = RNG.standard_normal((4, 8))
    tanh = graph(mlp(16), 8)
    assert contractions(tanh) and not finiteness.forward_guards(tanh) and not finiteness.reverse_guards(tanh)
    root_first = graph(lambda a: W @ np.sqrt(a), 8)
    assert set(finiteness.forward_guards(root_first)) == contractions(root_first)
    root_last = graph(lambda a: np.sqrt(W @ a), 8)
    assert not finiteness.forward_guards(root_last)
    assert set(finiteness.reverse_guards(root_last)) == contractions(root_last)
    # a factor that can be inf (1/a) is checked where it multiplies, whatever the direction
    factor = graph(lambda a: (1.0 / a[:4]).reshape(2, 2) @ (W[:2] @ a).reshape(2, 1), 8)
    n = max(contractions(factor))  # the outer product; W @ a is guarded in reverse only
    assert finiteness.forward_guards(factor) == {n: (0,)}
    assert finiteness.reverse_guards(factor) == {n: (0,), min(contractions(factor)): ()}
    import sympy

    a, b = sympy.symbols("a b", real=True)
    assert finiteness.finite_at_finite(1 - sympy.tanh(a) ** 2) and finiteness.finite_at_finite(a * b**2)
    for risky in (1 / (2 * sympy.sqrt(a)), sympy.exp(a), a / b, sympy.log(a), a**-1.5):
        assert not finiteness.finite_at_finite(risky)
