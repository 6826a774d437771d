"""Sparse loop kernels (symjac.arrays.sparse_loops): compile(sparse=) without per-element expansion.

Every case compiles the same function with ``expand="arrays"`` and ``expand="elements"`` and
asserts the same SciPy matrix (values to a few ulps, the same pattern where the structural
pattern is the exact one), at points, on batches and into ``out=``; torch autograd is a
second oracle.
"""

import functools
import os
import pathlib
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import symjac
from symjac import cached, compiled, roads
from symjac.arrays import sparse_plan
from symjac.backend import diskcache

sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "benchmarks"))
import problems  # noqa: E402

pytest.importorskip("scipy")  # sparse= results are SciPy matrices
import scipy.special  # noqa: E402

RNG = np.random.default_rng(11)


def brusselator(n, ns=None):
    """benchmarks/problems.py's 2-D Brusselator on an n x n periodic grid: stencils by index arrays."""
    return functools.partial(problems.brusselator(n), ns or problems.numpy_ns())


def close(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14 * scale)


def both(func, *examples, sparse="csr", **kw):
    loops = symjac.compile(func, *examples, sparse=sparse, expand="arrays", **kw)
    elements = symjac.compile(func, *examples, sparse=sparse, expand="elements", **kw)
    assert loops.spec.road == "loops" and elements.spec.road == "elements"
    return loops, elements


def same_matrix(got, want, exact_pattern=True):
    assert type(got) is type(want) and got.shape == want.shape
    if exact_pattern:
        np.testing.assert_array_equal(got.indptr, want.indptr)
        np.testing.assert_array_equal(got.indices, want.indices)
        close(got.data, want.data)
    else:  # structural: a superset of the exact pattern, the extra entries zero
        assert (abs(want).astype(bool) > abs(got).astype(bool)).nnz == 0
    close(got.toarray(), want.toarray())


def agree(func, *examples, points=2, exact_pattern=True, batch=4, **kw):
    """Single points, a batch, and out= (single and batch) against the element road."""
    for sparse in ("csr", "csc"):
        loops, elements = both(func, *examples, sparse=sparse, **kw)
        for _ in range(points):
            xs = [RNG.standard_normal(np.shape(e)) for e in examples]
            same_matrix(loops(*xs), elements(*xs), exact_pattern)
        if exact_pattern:
            xs = [RNG.standard_normal((batch, *np.shape(e))) for e in examples]
            want = elements(*xs)
            close(loops(*xs), want)
            out = np.full(want.shape, np.nan)
            assert loops(*xs, out=out) is out
            close(out, want)
            one = np.full(want.shape[1:], np.nan)
            loops(*[x[1] for x in xs], out=one)
            close(one, want[1])
            assert loops.sparsity().nnz == elements.sparsity().nnz
    return loops, elements


@pytest.mark.parametrize("n", [4, 8, 16])
def test_brusselator_grids_match_the_element_road(n):
    agree(brusselator(n), np.zeros(2 * n * n))


def test_brusselator_matches_torch_autograd():
    torch = pytest.importorskip("torch")
    n = 8
    f = brusselator(n)
    cf = symjac.compile(f, np.zeros(2 * n * n), sparse="csc", expand="arrays")
    g = brusselator(n, problems.torch_ns())

    X = RNG.standard_normal((3, 2 * n * n))
    batch = cf(X)
    for k, x in enumerate(X):
        want = torch.autograd.functional.jacobian(g, torch.from_numpy(x)).numpy()
        close(cf(x).toarray(), want)
        close(cf._sparse_matrix(batch[k]).toarray(), want)


def chain(s):
    return problems.chain(problems.numpy_ns(), s)


@pytest.mark.parametrize(
    "func, shape",
    [
        (chain, (20,)),
        (lambda x: np.roll(x, 1) - 2 * x + np.roll(x, -1) + np.sin(x) * np.roll(x, 2), (12,)),
        (lambda x: np.where(x > 0.1, x**2, -x) + np.maximum(x, x[::-1]) - np.minimum(x, 0.3), (9,)),
        (lambda x: (x.reshape(3, 4).T * np.arange(1.0, 4.0)).sum(axis=1) + x[::3].sum(), (12,)),
        (lambda x: np.stack([x[:, 0] * x[:, 1], np.exp(x[:, 2])], axis=1).reshape(-1), (5, 3)),
        (lambda x: np.exp(x.reshape(4, 3)).sum(axis=0, keepdims=True) * x.reshape(4, 3), (12,)),
        (lambda x: np.tanh(x[None, :] - x[:, None]).sum(axis=1) / (1 + x * x), (6,)),  # pair forces
        # a linear combination read three times (stored once), and one read broadcast
        (lambda x: (lambda a: a + 2 * a * a - np.sin(a))(x[1:] - 0.5 * x[:-1]), (7,)),
        (lambda x: (3.0 * x[:3, None] - x[3:6, None]) * 2.0 + x.reshape(3, 4) * x[0], (12,)),
    ],
)
def test_local_models_match_the_element_road(func, shape):
    agree(func, np.zeros(shape))


def assigned(x):
    """Index assignment into a computed array: an int, a slice, an index array with a repeat."""
    y = np.zeros(12) + x * 2.0
    y[0] = x[3] ** 2
    y[5:8] = np.sin(x[:3])
    y[np.array([1, 9, 1])] = x[[4, 5, 6]] * x[0]  # the last of the repeats wins, as NumPy's
    z = y.reshape(3, 4)
    z[:, 0] = 1.0
    z[1] = z[2] * x[0]
    return z.reshape(-1) + x[::-1]


def test_setitem_matches_the_element_road():
    agree(assigned, np.zeros(12))


@pytest.mark.parametrize(
    "func",
    [
        lambda x: np.max(np.stack([x, x[::-1]]), axis=0) * x + np.min(x.reshape(3, 4), axis=1).sum(),
        lambda x: scipy.special.logsumexp(x.reshape(3, 4), axis=1, keepdims=True) * x.reshape(3, 4),
        lambda x: np.max(x) + np.min(x[::2]) - x,
    ],
)
def test_weighted_reductions_match_the_element_road(func):
    agree(func, np.zeros(12))
    loops, elements = both(func, np.zeros(12))
    for x in [np.zeros(12), np.array([1.0, 2, 2, 1, 0, 3, 3, 0, 5, 5, 5, 1])]:  # ties share
        same_matrix(loops(x), elements(x))


def test_several_inputs_outputs_wrt_and_value():
    def f(x, y, p):
        return np.sin(x[1:] * y[:-1]) * p[0], (x * p[1]).sum() + y[0]

    ex = (np.zeros(7), np.zeros(7), np.zeros(2))
    for wrt in (None, (0, 1), 1):
        loops, elements = both(f, *ex, wrt=wrt, value=True)
        args = [RNG.standard_normal(e.shape) for e in ex]
        (v1, m1), (v2, m2) = loops(*args), elements(*args)
        for a, b in zip(v1, v2, strict=True):
            close(a, b)
        same_matrix(m1, m2)
        batch = [RNG.standard_normal((3, *e.shape)) for e in ex]
        (v1, m1), (v2, m2) = loops(*batch), elements(*batch)
        close(m1, m2)
        for a, b in zip(v1, v2, strict=True):
            close(a, b)


def test_inf_and_nan_follow_the_array_roads_rule():
    # sqrt at 0: an infinite partial times a nonzero entry is inf; log(-1) is NaN. Where no entry
    # is stored (row 0 reads x0 and x1 only) the derivative is exactly 0; where an infinite
    # partial meets an entry that is 0 at this point only (d(x0 x1)/dx1 = x0 = 0), the product is
    # not decided: NaN, as the element road's 0/0 (x0 / (2 sqrt(x0 x1))) and torch's 0 * inf. The
    # dense loop road cannot tell the pattern's zeros from others there: it agrees wherever it
    # is not NaN, and so does the element road.
    def f(x):
        return np.sqrt(x[1:] * x[:-1]) + (np.sqrt(x) * x[0] + np.log(x))[1:]

    loops, elements = both(f, np.zeros(4))
    dense = symjac.compile(f, np.zeros(4), expand="arrays")
    for x in [np.array([0.0, 1.0, 2.0, 0.0]), np.array([1.0, 0.0, 0.0, 3.0]), np.array([-1.0, 2, 0, 1])]:
        got, want, d = loops(x).toarray(), elements(x).toarray(), dense(x)
        for other in (want, d):
            ok = ~np.isnan(other)
            np.testing.assert_array_equal(got[ok], other[ok])
        pattern = (np.eye(3, 4) + np.eye(3, 4, 1) > 0) | (np.arange(4) == 0)  # x_i, x_i+1 and x0
        assert (got[~pattern] == 0).all()  # structural zeros stay zero, at every point
    got = loops(np.array([0.0, 1.0, 2.0, 0.0])).toarray()
    assert np.isinf(got[0, 0]) and np.isnan(got[0, 1]) and np.isnan(got[2, 2:]).all()


def test_the_structural_pattern_keeps_entries_scaled_by_a_captured_zero():
    c = np.array([0.0, 1.0, 2.0, 0.0, 3.0])
    loops, elements = both(lambda x: x * c + x[::-1] ** 2, np.zeros(5))
    x = RNG.standard_normal(5)
    got, want = loops(x), elements(x)
    same_matrix(got, want, exact_pattern=False)
    assert (got.nnz, want.nnz) == (9, 7)  # the element road folds 0 * x, the loops keep it as 0.0
    close(got.toarray(), np.diag(c) + np.diag(2 * x)[::-1])


def test_auto_takes_the_sparse_loop_road_for_large_grids_only():
    assert symjac.compile(brusselator(32), np.zeros(2 * 32 * 32), sparse="csr").spec.road == "loops"
    assert symjac.compile(brusselator(4), np.zeros(32), sparse="csr").spec.road == "elements"
    from symjac.functional import _Call

    graph = _Call(lambda x: np.cumsum(x) * x, (np.zeros(3000),), False, "compile").graph
    assert roads.choose(graph, "jacobian", "csr", "auto", (0,)) == "elements"  # no sparse rule
    graph = _Call(brusselator(32), (np.zeros(2048),), False, "compile").graph
    assert roads.choose(graph, "jacobian", "csr", "elements", (0,)) == "elements"


def test_expand_arrays_names_what_it_cannot_compile():
    with pytest.raises(ValueError, match="matmul of two operands that depend on the inputs"):
        symjac.compile(lambda x: x.reshape(2, 3) @ x[:3], np.zeros(6), sparse="csr", expand="arrays")
    with pytest.raises(ValueError, match="cumsum"):
        symjac.compile(lambda x: np.cumsum(x), np.zeros(6), sparse="csc", expand="arrays")
    with pytest.raises(ValueError, match="entries"):  # fill-in past the entry budget
        symjac.compile(lambda x: x * (x**2).sum(), np.zeros(5000), sparse="csr", expand="arrays")


def test_an_einsum_with_an_ellipsis_is_named_or_takes_the_element_road():
    """The loops take explicit letters only: `arrays` says so (it raised an internal error),
    `auto` takes the element road."""
    W = RNG.standard_normal((40, 40))
    f = lambda x: np.tanh(np.einsum("...ij,...j->...i", W, np.sin(x)))  # noqa: E731
    for sparse in (None, "csr"):
        with pytest.raises(ValueError, match="einsum with an ellipsis"):
            symjac.compile(f, np.zeros(40), expand="arrays", sparse=sparse, cache=False)
    cf = symjac.compile(f, np.zeros(40), cache=False)
    x = np.linspace(0.0, 1.0, 40)
    close(cf(x), (1 - np.tanh(W @ np.sin(x)) ** 2)[:, None] * W * np.cos(x)[None, :])


SCRIPT = """
import functools, sys, numpy as np, symjac
from symjac import compiled
sys.path.insert(0, "benchmarks")
import problems
f = functools.partial(problems.brusselator(8), problems.numpy_ns())
cf = symjac.compile(f, np.zeros(128), sparse="csr", expand="arrays")
m = cf(np.linspace(-1, 1, 128))
print(int(cf.cache_hit), compiled.BUILDS, repr(m.data.tolist()), cf._cache_name)
"""


def _run(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "SYMJAC_CACHE_DIR": str(tmp_path), "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    hit, builds, data, name = done.stdout.split(" ", 2)[:2] + done.stdout.split(" ", 2)[2].rsplit(" ", 1)
    return hit, builds, np.array(eval(data)), name.strip()


def test_cached_sparse_kernel_in_a_new_process(tmp_path):
    hit0, builds0, first, name = _run(tmp_path)
    hit1, builds1, second, _ = _run(tmp_path)
    assert (hit0, builds0, hit1, builds1) == ("0", "1", "1", "0")
    np.testing.assert_array_equal(second, first)


def test_a_cache_entry_that_does_not_fit_the_graph_is_rebuilt(tmp_path, monkeypatch):
    _, _, first, name = _run(tmp_path)
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path))
    meta, obj = diskcache.load(name)
    nnz = len(meta["pattern"]["indices"])
    f = lambda x: x[::-1] * x[np.arange(128) % 7]  # noqa: E731
    other = symjac.compile(f, np.zeros(128), sparse="csr", expand="arrays").kernel.object_code
    tables = sorted(cached.external_symbols(other))
    assert tables  # it reads tables by symbol, which the Brusselator's graph does not bind
    broken = [
        ({**meta, "pattern": {**meta["pattern"], "indices": meta["pattern"]["indices"][::-1]}}, obj),
        ({**meta, "symbols": []}, obj),
        ({**meta, "symbols": tables}, other),
        ({**meta, "layout": {**meta["layout"], "n64": nnz - 1, "slots": [[0, 0, [nnz - 1]]]}}, obj),
    ]
    for bad_meta, bad_obj in broken:
        diskcache.store(name, {k: v for k, v in bad_meta.items() if k != "key"}, bad_obj)
        hit, builds, again, _ = _run(tmp_path)
        assert (hit, builds) == ("0", "1")
        np.testing.assert_array_equal(again, first)
        assert _run(tmp_path)[:2] == ("1", "0")  # and the rebuilt entry is good


# --- matmul and einsum with a constant operand ----------------------------------------------

W = RNG.standard_normal((4, 6))
M = np.array([0.5, 0.0, -1.5, 2.0])  # a zero weight: it kills the infinite partials it meets


@pytest.mark.parametrize(
    "func, shape, exact",
    [
        (lambda x: W @ np.tanh(x), (6,), True),
        (lambda x: np.tanh(x.reshape(3, 4)) @ M, (12,), False),
        (lambda x: M @ np.sin(x.reshape(4, 3)) + x[:3], (12,), False),
        (
            lambda x: (W @ x.reshape(6, 2)) * x[:2] + np.einsum("ij,jk->ki", W[:2], x.reshape(6, 2)).sum(),
            (12,),
            True,
        ),
        (lambda x: np.einsum("bij,j->bi", np.exp(x.reshape(2, 3, 4)), M), (24,), False),
        (lambda x: np.tanh(x[None, :] - x[:, None]) @ W[0, :3] * x, (3,), True),  # pair forces, weighted
    ],
)
def test_matmul_by_a_constant_matches_the_element_road(func, shape, exact):
    # The pattern is structural: M's zero weight keeps its entries, as 0.0 (the element road
    # folds them away).
    agree(func, np.zeros(shape), exact_pattern=exact)
    dense_agree(func, np.zeros(shape))


def test_matmul_weights_follow_the_zero_rule():
    # sqrt at 0: an infinite partial; the zero weight M[1] kills it, the others keep it.
    def f(x):
        return np.sqrt(x.reshape(2, 4)) @ M

    x = np.array([1.0, 0.0, 2.0, 3.0, 0.0, 1.0, 4.0, 1.0])
    dense = dense_kernel(f, np.zeros(8))
    elements = symjac.compile(f, np.zeros(8), expand="elements")
    got, want = dense(x), elements(x)
    assert np.isfinite(got[0]).all() and np.isinf(got[1, 4])
    np.testing.assert_array_equal(got, want)
    loops, _ = both(f, np.zeros(8))
    np.testing.assert_array_equal(loops(x).toarray(), want)


def test_a_square_moves_its_entries_once():
    from symjac.functional import _Call

    graph = _Call(lambda x: x * x + x[::-1] * x, (np.zeros(5),), False, "compile").graph
    # x * x: its two equal partials (x and x) make one term, 2x, of x's 5 entries; x[::-1] * x
    # has two terms of 5 entries; they are stored once, into the output.
    assert sum(st.count for st in sparse_plan.plan(graph, (0,), "csr").steps) == 15
    agree(lambda x: x * x + x[::-1] * x, np.zeros(5))


def _chained(x):
    d = x[None, :] - x[:, None]
    r = (x[None, :] * x[:, None]) ** 0.5  # at x_i = 0 an infinite partial, its entry x_j finite
    return np.concatenate([(d * r) @ M, (d * d * r) @ M, np.sqrt(x) * r[0]])


def test_chained_scales_keep_the_zero_rule(monkeypatch):
    # The power's entries are taken by its readers (composite scales, computed per element), and
    # the products' by the matmuls. Against the same plan with every entry stored: the same inf,
    # NaN and zeros (M[1] is a zero weight), and the same finite values to ulps.
    chained = dense_kernel(_chained, np.zeros(4))
    assert sparse_plan.plan(chained.spec.graph, chained.spec.wrt, "dense").composites
    monkeypatch.setattr(sparse_plan, "_PLANS", type(sparse_plan._PLANS)())
    monkeypatch.setattr(sparse_plan, "_passes", lambda *args: False)
    monkeypatch.setattr(sparse_plan, "_sums_terms", lambda *args: False)
    stored = dense_kernel(_chained, np.zeros(4))
    assert not sparse_plan.plan(stored.spec.graph, stored.spec.wrt, "dense").composites
    xs = np.array(
        [
            [0.0, 1.0, 2.0, 0.0],
            [1.0, 1.0, 0.0, 3.0],
            [1.0, 0.0, 2.0, 0.5],
            [0.5, 1.0, 2.0, 3.0],
            *RNG.standard_normal((3, 4)),
        ]  # fmt: skip
    )
    elements = symjac.compile(_chained, np.zeros(4), expand="elements")
    for x in xs:
        got, want, exact = chained(x), stored(x), elements(x)
        # The plans multiply a point's zeros and infs in another order: where one meets a zero
        # that holds at this point only, it is NaN (undecided), and the other may have decided it
        # through a structural zero. Elsewhere they agree, and with the element road.
        for a, b in ((got, want), (got, exact), (want, exact)):
            both_decided = ~np.isnan(a) & ~np.isnan(b)
            np.testing.assert_array_equal(np.isinf(a[both_decided]), np.isinf(b[both_decided]))
            close(
                np.where(np.isfinite(a) & both_decided, a, 0.0),
                np.where(np.isfinite(b) & both_decided, b, 0.0),
            )
        if (x > 0).all():  # no zero, no inf: nothing to decide
            assert np.isfinite(got).all() and np.isfinite(want).all()
    assert not np.isfinite(chained(xs[2])).all()


def test_a_partial_scales_a_sum_that_cancels_as_a_sum():
    # x2 - x2 is 0 whatever x: sqrt's infinite partial there meets the entry 1 - 1 = 0, which
    # kills it. Taken term by term it would be inf - inf = NaN (a review found this).
    def f(x):
        return np.sqrt(x - x[::-1])

    x = np.array([1.0, 2.0, 3.0, 2.0, 1.0])
    loops, _ = both(f, np.zeros(5))
    dense = dense_kernel(f, np.zeros(5))
    want = compiled.CompiledFunction(replace(dense.spec, road="loops"))(x)
    assert (want[2] == 0).all()
    np.testing.assert_array_equal(loops(x).toarray(), want)
    np.testing.assert_array_equal(dense(x), want)

    def g(x):  # every diagonal entry cancels: x * 1 - x
        return np.sqrt(x * np.ones(4) - x) + x

    dense = dense_kernel(g, np.zeros(4))
    np.testing.assert_array_equal(dense(np.arange(1.0, 5.0)), np.eye(4))


def test_a_weighed_sum_that_cancels_stays_zero():
    # 0.7 + 1.1 - 1.8 is exactly 0: the middle row's entry is 0 summed first, an ulp weighed
    # term by term, which the factor 1e20 (or sqrt's infinite partial) makes large (a review
    # found this). Against the dense loop road, which sums first.
    def linear(x):
        X = x[:, None]
        return 0.7 * X + 1.1 * X[::-1] - 1.8 * X[[0, 1, 2]]

    def scaled(x):
        return (linear(x) @ np.array([0.1])) * np.array([1.0, 1e20, 1.0])

    def root(x):
        return np.sqrt(linear(x) @ np.array([0.1]))

    x = np.array([1.0, 0.0, 1.0])
    for f in (scaled, root):
        loops, _ = both(f, np.zeros(3))
        dense = dense_kernel(f, np.zeros(3))
        want = compiled.CompiledFunction(replace(dense.spec, road="loops"))(x)
        assert want[1, 1] == 0.0
        np.testing.assert_array_equal(loops(x).toarray(), want)
        np.testing.assert_array_equal(dense(x), want)


def test_equal_partials_of_a_comparison_are_not_merged():
    # maximum(x, x): its two partials are equal as formulas but not at NaN, where the kernel's
    # comparisons take neither side: their sum, 1, is the derivative every road gives.
    def f(x):
        return np.maximum(x, x) * 1.0

    x = np.array([np.nan, 1.0, 2.0])
    loops, elements = both(f, np.zeros(3))
    np.testing.assert_array_equal(np.diag(loops(x).toarray()), np.diag(elements(x).toarray()))
    np.testing.assert_array_equal(np.diag(dense_kernel(f, np.zeros(3))(x)), [1.0, 1.0, 1.0])


def test_nbody_moves_each_pair_once_per_output():
    # Each pair's entries move into the result without being stored per product (25,860
    # entries before composite scales; 11,880 with them).
    graph = dense_kernel(nbody(20), np.zeros(120)).spec.graph
    p = sparse_plan.plan(graph, (0,), "dense")
    assert sum(st.count for st in p.steps) <= 12_000


def test_matmul_of_two_live_operands_is_refused():
    from symjac.functional import _Call

    graph = _Call(lambda x: x.reshape(2, 2) @ x[:2], (np.zeros(4),), False, "compile").graph
    assert "matmul of two operands" in sparse_plan.unsupported(graph, (0,))


# --- dense Jacobians from sparse tangents (the sparse-loops road) ---------------------------


def dense_kernel(func, *examples, **kw):
    """``compile(func)`` on the sparse-loops road, whatever the cost model would choose."""
    cf = symjac.compile(func, *examples, expand="elements", **kw)
    return compiled.CompiledFunction(replace(cf.spec, road="sparse-loops"))


def _leaves(x):
    if isinstance(x, (tuple, list)):
        return [leaf for item in x for leaf in _leaves(item)]
    return [x]


def same_nest(got, want, check=close):
    assert type(got) is type(want)
    if isinstance(want, (tuple, list)):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            same_nest(g, w, check)
    else:
        assert got.dtype == want.dtype
        check(got, want)


def dense_agree(func, *examples, batch=3, road="elements", check=close, **kw):
    """Single points, a batch and out= holding garbage (single and batch) against ``road``."""
    dense = dense_kernel(func, *examples, **kw)
    other = symjac.compile(func, *examples, expand="elements", **kw)
    if road != "elements":
        other = compiled.CompiledFunction(replace(other.spec, road=road))
    assert dense.spec.road == "sparse-loops" and not dense.kernel.layout.full
    xs = [RNG.standard_normal(np.shape(e)) for e in examples]
    same_nest(dense(*xs), other(*xs), check)
    xb = [RNG.standard_normal((batch, *np.shape(e))) for e in examples]
    want = other(*xb)
    same_nest(dense(*xb), want, check)
    if len(_leaves(want)) == 1:
        out = np.full(want.shape, np.nan)
        assert dense(*xb, out=out) is out
        check(out, want)
        one = np.full(want.shape[1:], np.nan)
        assert dense(*[x[0] for x in xb], out=one) is one
        check(one, want[0])
        if len(examples) == 1:
            check(dense.entry(xb[0][1]), want[1])
    return dense, other


def nbody(n, ns=None):
    return functools.partial(problems.nbody(n), ns or problems.numpy_ns())


def near(a, b):
    """To 1e-11 of the largest entry: N-body's diagonal blocks are sums of terms that cancel
    (d a_i / d x_i = -sum_j d a_i / d x_j), so they round as the terms do, and the element road
    and torch sum them in other orders (3e-13 apart at 200 random N=5 states)."""
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11 * scale)


def pairs_to_ulps(n):
    """A check of N-body Jacobians against the dense loop road's: an entry from one pair
    (d a_i / d x_j, j != i) to ulps; the sums over pairs (d a_i / d x_i), which the sparse kernel
    adds term by term and the dense road pair by pair, as :func:`near`."""
    rows, cols = np.arange(6 * n)[:, None], np.arange(6 * n)[None, :]
    summed = (rows >= 3 * n) & (cols < 3 * n) & ((rows - 3 * n) % n == cols % n)

    def check(a, b):
        assert a.shape == b.shape
        over = np.broadcast_to(summed, a.shape)
        close(a[~over], b[~over])
        near(a[over], b[over])

    return check


@pytest.mark.parametrize("n", [5, 20])
def test_nbody_dense_jacobians_from_sparse_tangents(n):
    torch = pytest.importorskip("torch")
    dense_agree(nbody(n), np.zeros(6 * n), road="loops", check=pairs_to_ulps(n))
    dense, _ = dense_agree(nbody(n), np.zeros(6 * n), check=near)
    g = nbody(n, problems.torch_ns())
    for x in RNG.standard_normal((2, 6 * n)):
        near(dense(x), torch.autograd.functional.jacobian(g, torch.from_numpy(x)).numpy())


C8 = np.linspace(0.5, 2.0, 8)


def _read_twice(y):
    """A scalar row read by another output too, beside a stencil: the cost model's own choice."""
    lap = np.roll(y, 1) + np.roll(y, -1) - 2 * y
    s1, s2 = np.sum(np.sin(y)), np.sum(y * y)
    return np.concatenate([np.tanh(lap), (s1 + s2)[None], s1[None]])


@pytest.mark.parametrize(
    "func, shape",
    [
        (_read_twice, (40,)),
        (lambda x: (a := np.sin(x * C8)) + a[::-1], (1,)),  # a width-1 block, read reversed
        (lambda x: np.stack([(s := np.sum(np.exp(x))) + x[0], s * 2.0]), (6,)),
    ],
)
def test_entries_added_into_the_result_are_never_read_from_it(func, shape):
    """Entries added straight into the zeroed result must not share it with a buffer that is
    computed in place there and read again (regression: wrong rows, no error)."""
    dense_agree(func, np.zeros(shape))


def test_the_cost_models_choice_on_a_stencil_with_shared_scalars():
    y = np.linspace(-1.0, 1.0, 400)
    cf = symjac.compile(_read_twice, np.zeros(400), cache=False)
    assert cf.spec.road == "sparse-loops"
    close(cf(y), symjac.compile(_read_twice, np.zeros(400), expand="elements", cache=False)(y))


def test_dense_from_sparse_with_several_inputs_outputs_wrt_and_value():
    def f(x, y, p):
        return np.sin(x[1:] * y[:-1]) * p[0] + W[:, :6].T @ np.tanh(y[:4]), (x * p[1]).sum() + y[0]

    ex = (np.zeros(7), np.zeros(7), np.zeros(2))
    for wrt in (None, (0, 1), 1, (2, 0)):
        for value in (False, True):
            dense_agree(f, *ex, wrt=wrt, value=value)


def test_auto_takes_sparse_tangents_for_nbody_not_for_an_mlp():
    n = 20
    assert symjac.compile(nbody(n), np.zeros(6 * n)).spec.road == "sparse-loops"
    assert symjac.compile(nbody(n), np.zeros(6 * n), expand="arrays").spec.road == "sparse-loops"
    W1, W2 = RNG.standard_normal((32, 8)), RNG.standard_normal((32, 32))
    mlp = lambda x: W2 @ np.tanh(W1 @ x)  # noqa: E731
    assert symjac.compile(mlp, np.zeros(8), expand="arrays").spec.road == "loops"
    assert symjac.compile(nbody(n), np.zeros(6 * n), sparse="csr", expand="arrays").spec.road == "loops"


def test_a_dense_layer_rules_sparse_tangents_out_without_planning(monkeypatch):
    """A 64 x 64 layer moves 4,096 rows of 8 entries in a sparse plan, 256 times its output's
    elements: the bound says so, and the road is chosen without building the plan (a 256 x 256
    layer's plan took 28 ms of a 124 ms build)."""
    W1, W2, W3 = RNG.standard_normal((64, 8)), RNG.standard_normal((64, 64)), RNG.standard_normal((4, 64))
    mlp = lambda x: W3 @ np.tanh(W2 @ np.tanh(W1 @ x))  # noqa: E731

    def refuse(*args):
        raise AssertionError("planned sparse tangents for a dense MLP")

    monkeypatch.setattr(sparse_plan, "plan", refuse)
    assert symjac.compile(mlp, np.zeros(8), expand="arrays").spec.road == "reverse-loops"


DENSE_SCRIPT = """
import functools, sys, numpy as np, symjac
from symjac import compiled
sys.path.insert(0, "benchmarks")
import problems
cf = symjac.compile(functools.partial(problems.nbody(20), problems.numpy_ns()), np.zeros(120))
J = cf(np.linspace(-1, 1, 120))
print(int(cf.cache_hit), compiled.BUILDS, cf.spec.road, cf.kernel.layout.full, float(abs(J).sum()))
"""


def test_cached_dense_from_sparse_kernel_in_a_new_process(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "SYMJAC_CACHE_DIR": str(tmp_path), "PYTHONPATH": root}

    def run():
        done = subprocess.run(
            [sys.executable, "-c", DENSE_SCRIPT],
            env=env,
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.split()

    first, second = run(), run()
    assert first[:4] == ["0", "1", "sparse-loops", "False"]
    assert second[:4] == ["1", "0", "sparse-loops", "False"]
    assert first[4] == second[4]


def test_a_dense_loop_kernel_is_never_loaded_as_a_sparse_loops_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path))
    sparse = dense_kernel(nbody(5), np.zeros(30))
    dense = compiled.CompiledFunction(replace(sparse.spec, road="loops"))
    assert sparse._cache_name != dense._cache_name  # the road is part of the key
    x = RNG.standard_normal(30)
    for kernel, other in ((sparse, dense), (dense, sparse)):
        meta, obj = diskcache.load(other._cache_name)
        diskcache.store(kernel._cache_name, {k: v for k, v in meta.items() if k != "key"}, obj)
        again = compiled.CompiledFunction(kernel.spec)
        assert not again.cache_hit and again.meta["road"] == kernel.spec.road
        close(again(x), kernel(x))
        assert compiled.CompiledFunction(kernel.spec).cache_hit  # the rebuilt entry is good
