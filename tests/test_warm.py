"""The drop-in's warm path (one cache lookup, then the kernel) never answers with a stale result.

Each test warms a function's kernel, then changes one thing that can change the result (the
function's structure, an input's shape, dtype, layout or library, a constant folded into the
graph, a captured array recorded as a literal or as data) and checks the next call against an
independent oracle.
"""

import numpy as np
import pytest

import symjac
from symjac import functional

torch = pytest.importorskip("torch")
AF = torch.autograd.functional


def _warm(f, x, n=3):
    for _ in range(n):
        symjac.jacobian(f, x)


def _check(J, expected):
    np.testing.assert_allclose(np.asarray(J), np.asarray(expected), rtol=1e-13, atol=1e-13)


def test_warm_calls_take_the_ready_kernel():
    x = np.array([0.3, -0.7])
    f = lambda a: (a * a[0]).sin()  # noqa: E731
    _warm(f, x)
    key = ("jacobian", functional._Call(f, (x,), False, "jacobian", True).graph, False)
    assert functional._READY.get((key, "auto")) is not None
    for point in (x, np.array([1.1, 2.2]), np.array([-4.0, 0.5])):
        _check(symjac.jacobian(f, point), AF.jacobian(f, torch.from_numpy(point)))


def test_a_closure_constant_changes_the_result():
    x = np.array([0.4, 1.3])
    for scale in (2.0, 3.0, -0.5, 2.0):
        f = lambda a, s=scale: (s * a).exp()  # noqa: E731
        _warm(f, x)
        _check(symjac.jacobian(f, x), np.diag(scale * np.exp(scale * x)))


def test_a_global_the_function_reads_changes_the_result():
    state = {"power": 2}

    def f(a):
        return a ** state["power"]

    x = np.array([1.5, 0.5])
    _warm(f, x)
    _check(symjac.jacobian(f, x), np.diag(2 * x))
    state["power"] = 3  # same code, different structure
    _check(symjac.jacobian(f, x), np.diag(3 * x**2))


def test_a_branch_on_shape_changes_the_structure():
    def f(a):
        return a.sin() if a.shape[0] == 2 else a.cos()

    _warm(f, np.array([0.1, 0.2]))
    x = np.array([0.1, 0.2, 0.3])
    _check(symjac.jacobian(f, x), np.diag(-np.sin(x)))
    x2 = np.array([0.5, 0.6])
    _check(symjac.jacobian(f, x2), np.diag(np.cos(x2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_dtype_change_gives_that_dtype(dtype):
    f = lambda a: a.exp().sum(axis=0)  # noqa: E731
    _warm(f, np.ones((2, 2)))
    x = np.array([[0.1, 0.2], [0.3, 0.4]], dtype=dtype)
    J = symjac.jacobian(f, x)
    assert J.dtype == dtype
    expected = AF.jacobian(lambda t: t.exp().sum(0), torch.from_numpy(x.astype(np.float64)))
    np.testing.assert_allclose(J, expected.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-13)


def test_non_contiguous_and_read_only_inputs_give_the_same_result():
    f = lambda a: a[0] * a[1].exp()  # noqa: E731
    base = np.array([[0.2, 0.7], [1.1, -0.4]])
    _warm(f, np.ascontiguousarray(base.T))
    expected = AF.jacobian(lambda t: t[0] * t[1].exp(), torch.from_numpy(np.ascontiguousarray(base.T)))
    _check(symjac.jacobian(f, base.T), expected)  # a view: not C-contiguous
    frozen = np.ascontiguousarray(base.T)
    frozen.setflags(write=False)
    _check(symjac.jacobian(f, frozen), expected)


def test_torch_and_numpy_inputs_share_a_kernel_but_keep_their_types():
    g = lambda a: (a**2).sum(0)  # noqa: E731
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    _warm(g, x)
    J = symjac.jacobian(g, torch.from_numpy(x))
    assert isinstance(J, torch.Tensor) and J.dtype == torch.float64
    torch.testing.assert_close(J, AF.jacobian(g, torch.from_numpy(x)))
    Jn = symjac.jacobian(g, x)
    assert type(Jn) is np.ndarray
    _check(Jn, J)
    Jf = symjac.jacobian(g, torch.from_numpy(x).float())
    assert Jf.dtype == torch.float32


def test_a_captured_literal_array_changes_the_result():
    x = np.array([0.3, 0.9, -0.2])
    for w in (np.array([1.0, 0.0, 2.0]), np.array([1.0, 5.0, 2.0])):  # small: folded as literals
        f = lambda a, w=w: (w * a).sin()  # noqa: E731
        _warm(f, x)
        _check(symjac.jacobian(f, x), np.diag(w * np.cos(w * x)))


def test_a_captured_data_array_changed_in_place_changes_the_result():
    rng = np.random.default_rng(3)
    W = rng.uniform(0.5, 1.5, (20, 3))  # large and dense: recorded as data (a kernel input)
    x = np.array([0.1, -0.3, 0.6])

    def f(a):
        return (W @ a).tanh()

    _warm(f, x)
    for _ in range(2):
        Wt = torch.from_numpy(W.copy())
        expected = AF.jacobian(lambda t, Wt=Wt: (Wt @ t).tanh(), torch.from_numpy(x))
        _check(symjac.jacobian(f, x), expected)
        W *= 1.7  # in place: same graph, new values


def test_several_inputs_and_outputs_on_the_warm_path():
    f = lambda a, b: (a.exp() * 2 + 3 * b, (a * b).sum())  # noqa: E731
    first = np.array([0.1, 0.2]), np.array([0.5, -0.5])
    _warm(f, first)
    for a, b in (first, (np.array([1.0, -1.0]), np.array([2.0, 0.25]))):
        J = symjac.jacobian(f, (a, b))
        T = AF.jacobian(f, (torch.from_numpy(a), torch.from_numpy(b)))
        for row, trow in zip(J, T, strict=True):
            for block, tblock in zip(row, trow, strict=True):
                _check(block, tblock)


def test_an_index_change_is_a_new_graph():
    x = np.array([0.5, 1.5, 2.5, 3.5])
    for index in (slice(1, 3), slice(0, 4, 2), [3, 0], np.int64(2)):
        f = lambda a, i=index: a[i].exp()  # noqa: E731
        _warm(f, x)
        expected = AF.jacobian(lambda t, i=index: t[i].exp(), torch.from_numpy(x))
        _check(symjac.jacobian(f, x), expected)


def test_returned_results_are_fresh_arrays():
    f = lambda a: a * a  # noqa: E731
    x = np.array([1.0, 2.0])
    _warm(f, x)
    J1 = symjac.jacobian(f, x)
    J2 = symjac.jacobian(f, x)
    assert J1 is not J2 and not np.shares_memory(J1, J2)
    J1[...] = 0.0
    _check(symjac.jacobian(f, x), np.diag(2 * x))


def test_patched_factories_follow_a_replaced_original(monkeypatch):
    def f(a):
        z = np.zeros(2)
        z[0] = a[1]
        return z * a

    x = np.array([2.0, 3.0])
    _warm(f, x)  # the factory wrappers are made and cached for NumPy's np.zeros
    calls = []
    original = np.zeros

    def counting_zeros(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(np, "zeros", counting_zeros)
    _check(symjac.jacobian(f, x), [[x[1], x[0]], [0.0, 0.0]])
    assert (2,) in calls  # the trace's wrapper called the user's replacement
    assert np.zeros is counting_zeros  # and restored it, not NumPy's own
