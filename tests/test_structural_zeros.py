"""Which zeros kill an inf (symjac.arrays.structural): a structural zero times an inf is 0 on
every road; a zero that holds at one point only leaves 0 * inf undecided (NaN) at the array
level, never a number it might not be; the drop-in's default then asks the element road."""

import warnings
from dataclasses import replace

import numpy as np
import pytest

import symjac
from symjac import compiled, functional
from symjac.arrays import structural
from symjac.functional import _Call

# cbrt(x)**3 = x: 3 cbrt(x)**2 * cbrt'(x) is 0 * inf at 0, whose limit is 1 (the zero rule on
# every zero gave 1 + 0 = 1 for the derivative 2 of x + tanh(x)); sqrt(s)**2 = s, whose gradient
# 2 sqrt(s) * 2x / (2 sqrt(s)) is 0 * inf at 0 (the zero rule gave the Hessian 0 for 2I).
CBRT = lambda x: np.cbrt(x) ** 3 + np.tanh(x)  # noqa: E731
RIDGE = lambda x: np.sqrt(np.sum(x**2)) ** 2  # noqa: E731


def _roads(func, x, mode="jacobian"):
    """The compiled function on each array-level loop road (forward and reverse)."""
    spec = symjac.compile(func, x, mode=mode, expand="arrays").spec
    roads = ("loops", "reverse-loops") if mode == "jacobian" else (spec.road,)
    return {road: compiled.CompiledFunction(replace(spec, road=road), cache=False) for road in roads}


def test_a_zero_at_one_point_leaves_zero_times_inf_undecided_on_the_array_roads():
    x = np.zeros(3)
    J = symjac.jacobian(CBRT, x, expand="arrays")
    assert np.isnan(np.diag(J)).all() and (J[~np.eye(3, dtype=bool)] == 0).all()
    np.testing.assert_array_equal(J, symjac.jacobian(CBRT, x, expand="elements"))
    kernels = _roads(CBRT, x)
    np.testing.assert_array_equal(kernels["loops"](x), J)
    # By adjoints, cube's partial 3 cbrt(x)**2 = 0 meets the seeds' zeros first: the row's
    # zeros are not known structural there, so the whole row is NaN; never a number.
    got = kernels["reverse-loops"](x)
    assert np.isnan(np.diag(got)).all() and (np.isnan(got) | (got == 0)).all()
    H = symjac.hessian(RIDGE, x, expand="arrays")
    assert not (np.isfinite(H) & (H != 2 * np.eye(3))).any()  # 2I where decided, else NaN
    assert np.isnan(H).any()
    # the element road simplifies sqrt(s)**2 to s; torch's autograd gives NaN for the Jacobian
    np.testing.assert_array_equal(symjac.hessian(RIDGE, x, expand="elements"), 2 * np.eye(3))


@pytest.mark.parametrize(
    "func",
    [
        # a contraction that reads one node three times: not a constant-weighted one (a review
        # found the old check comparing nodes, not positions, and the result 0 for W)
        lambda x: np.tanh(np.linspace(-1.0, 1.0, 12).reshape(3, 4) @ np.cbrt(np.einsum("i,i,i->i", x, x, x))),
        # sign(0), abs's partial at its kink, is a choice, not a structural zero: |c|**3 sign(c)
        # is x, whose derivative 1 the kink's 0 times cbrt's inf would make 0
        lambda x: np.abs(np.cbrt(x)) ** 3 * np.sign(np.cbrt(x)),
        lambda x: np.maximum(np.cbrt(x), 0.0) ** 3 - np.maximum(-np.cbrt(x), 0.0) ** 3,  # relu'(0) too
    ],
)
def test_no_road_turns_an_undecided_product_into_a_number(func):
    x = np.zeros(4)
    got = {"arrays": symjac.jacobian(func, x, expand="arrays"), "auto": symjac.jacobian(func, x)}
    got.update({road: kernel(x) for road, kernel in _roads(func, x).items()})
    for road, J in got.items():  # where the exact derivative is not 0: NaN (undecided), never 0
        assert not (~np.isnan(J) & (J == 0) & _touches(J.shape)).any(), road


def _touches(shape):
    """The entries whose exact value is nonzero here: every output reads every input through W in
    the first function, and its own input in the others."""
    if shape[0] == 3:
        return np.ones(shape, dtype=bool)
    return np.eye(*shape, dtype=bool)


def test_the_drop_in_asks_the_element_road_where_the_array_road_is_undecided(monkeypatch):
    # Above ELEMENTS_FROM the drop-in takes the array road; a NaN there sends the point to the
    # element road (built once, on disk), whose result stands: the exact 2I, NaN where the
    # element road's own formula is 0/0, as torch. A regular point stays on the array road.
    W = np.linspace(-1.0, 1.0, 48).reshape(12, 4)
    f = lambda x: np.sum(np.tanh(W @ x)) + np.sqrt(np.sum(x**2)) ** 2  # noqa: E731
    graph = _Call(f, (np.zeros(4),), False, "hessian").graph
    assert symjac.arrays.choose(graph, 4, "auto", "hessian") == "arrays"
    exact = symjac.hessian(f, np.zeros(4), expand="elements")
    assert np.isfinite(exact).all()
    assert np.isnan(symjac.hessian(f, np.zeros(4), expand="arrays")).any()
    np.testing.assert_array_equal(symjac.hessian(f, np.zeros(4)), exact)
    x = np.linspace(0.1, 0.4, 4)
    np.testing.assert_allclose(symjac.hessian(f, x), symjac.hessian(f, x, expand="elements"), rtol=1e-12)
    g = lambda x: np.tanh(W @ np.cbrt(x) ** 3)  # noqa: E731
    J = symjac.jacobian(g, np.zeros(4))
    np.testing.assert_array_equal(J, symjac.jacobian(g, np.zeros(4), expand="elements"))
    # Too large for the element road here: the array road's NaN stands, with a warning (once).
    monkeypatch.setattr(functional, "EXACT_FALLBACK_UP_TO", 10)
    monkeypatch.setattr(functional, "_UNDECIDED", type(functional._UNDECIDED)(8))
    h = lambda x: np.sum(np.tanh(W @ x)) + np.sqrt(np.sum(x**3 * x)) ** 2 + 0.0  # another graph  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"expand=\"elements\""):
        H = symjac.hessian(h, np.zeros(4))
    assert np.isnan(H).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        symjac.hessian(h, np.zeros(4))


def test_a_bought_loop_kernel_asks_the_element_road_too(monkeypatch):
    # Once the calls have paid for a kernel (ski rental), a loop kernel answers; where its
    # result holds a NaN from finite inputs, the element road's answers that call.
    monkeypatch.setattr(symjac.arrays, "build_estimate", lambda *args: 0.0)
    monkeypatch.setattr(symjac.arrays, "loops_likely", lambda *args: True)
    monkeypatch.setattr(symjac.roads, "choose", lambda *args: "loops")
    for cache in ("_READY", "_ROADS", "_KERNELS", "_ARRAY_SECONDS"):
        monkeypatch.setattr(functional, cache, type(getattr(functional, cache))(64))
    W = np.linspace(-1.0, 1.0, 48).reshape(12, 4)
    f = lambda x: np.tanh(W @ x) * (np.sqrt(np.sum(x**2)) ** 2 + 1.0)  # noqa: E731
    x = np.linspace(0.2, 0.5, 4)
    first = symjac.jacobian(f, x)
    (ready,) = functional._READY.data.values()
    assert ready.check  # a loop kernel of a graph with sqrt's infinite partial
    np.testing.assert_allclose(symjac.jacobian(f, x), first, rtol=1e-13)
    z = np.zeros(4)
    own = ready.kernel([z, *_Call(f, (z,), False, "jacobian", params=True).params])[0]
    assert np.isnan(own).any()  # the kernel's own answer at 0: undecided
    exact = symjac.jacobian(f, z, expand="elements")
    assert np.isfinite(exact).all()
    np.testing.assert_array_equal(symjac.jacobian(f, z), exact)


def _graph_of(f, x):
    return _Call(f, (x,), False, "jacobian").graph


@pytest.mark.parametrize(
    "func, adjoints",
    [
        (lambda x: np.sqrt(x), True),  # the seed's zeros: off the diagonal
        (lambda x: np.where(x > 0, np.sqrt(np.abs(x)), 0.0), True),  # the branch not taken
        (lambda x: np.array([0.0, 1.0, 2.0]) * np.sqrt(x), True),  # a constant zero weight
        (lambda x: np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]]) @ np.sqrt(x), True),  # in a contraction
        # a locally constant tangent, x1 - x1 = 0 everywhere (by adjoints: inf - inf, undecided)
        (lambda x: np.sqrt(x - x[::-1]), False),
        # a clipped unit (row 0: z = -1.5 < 0), and one that is not (row 1)
        (lambda x: np.sqrt(np.maximum(np.array([[1.0, -1.0, 0.0], [0.0, 1.0, 1.0]]) @ x - 0.5, 0.0)), True),
        (
            lambda x: (
                np.sqrt(np.maximum(np.array([[1.0, -1.0, 0.0], [0.0, 1.0, 1.0]]) @ x - 0.5, 0.0)) * x[0]
            ),
            True,
        ),
    ],
)
def test_structural_zeros_kill_an_infinite_partial_on_every_road(func, adjoints):
    # (The element road may leave 0/0 where the arrays know the zero: sqrt(x1 - x1) is 0.)
    x = np.array([0.0, 1.0, 0.0])
    want = symjac.jacobian(func, x, expand="elements")
    known = ~np.isnan(want)
    assert known.sum() >= want.size - 1
    got = {"arrays": symjac.jacobian(func, x, expand="arrays")}
    got.update({road: kernel(x) for road, kernel in _roads(func, x).items()})
    for road, J in got.items():
        assert road == "reverse-loops" and not adjoints or not np.isnan(J).any(), road
        np.testing.assert_array_equal(J[known], want[known], err_msg=road)


def test_which_partials_and_tangents_have_structural_zeros():
    def zeros(func, n=3):
        return structural.of(_graph_of(func, np.zeros(n)))

    # where's and relu's partials are locally constant; mul's in a varying factor is not, in a
    # constant one it is
    z = zeros(lambda x: np.where(x > 0, x, 0.0) + np.maximum(x, 0.0) + x * x + x * np.ones(3))
    ops = {z.graph.eqns[n][0]: z.partial(n) for n in range(len(z.graph.eqns)) if z.is_elementwise(n)}
    assert ops["where"][1:] == (True, True) and ops["maximum"][0]
    muls = [z.partial(n) for n, (op, _, _) in enumerate(z.graph.eqns) if op == "mul"]
    assert (False, False) in muls and any(p[0] for p in muls)
    # seeds, constant-weighted sums and their moves are locally constant; tanh(x) - tanh(y) is not
    z = zeros(lambda x: (np.ones((2, 3)) @ (x - x[::-1])).sum() + np.tanh(x)[0] - np.tanh(x)[1])
    assert z.graph.outputs[0] not in z.tangents
    kinds = {z.graph.eqns[n][0] for n in z.constant}
    assert {"input", "sub", "matmul", "sum"} <= kinds and "tanh" not in kinds
    # partials nonzero in floating point wherever finite keep an exact tangent's zeros:
    # 1/(2 sqrt x), 1/x; not -1/x**2 (0 for |x| > 1e162), sigmoid's or exp's (underflow), 2x
    assert structural.zero_free(_formula("sqrt")) and structural.zero_free(_formula("log"))
    for op in ("reciprocal", "sigmoid", "exp", "square", "tanh"):
        assert not structural.zero_free(_formula(op)), op
    # a kink where the partial is 0 (relu'(0), sign(0)) leaves that zero undecided; maximum's
    # tie (1/2) meets no zero
    assert structural.kinks("relu", (False,), (True,), (None,)) != (structural.sympy.false,)
    assert structural.smooth("maximum", (False, False), (True, True), (None, None)) == (True, True)


def _formula(op):
    from symjac.arrays.elementwise import formulas

    return formulas(op, (False,))[2][0]
