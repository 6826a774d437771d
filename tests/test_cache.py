"""No recompiling for an equal graph; never a stale result when captured values change."""

import threading

import numpy as np
import pytest

import symjac
from symjac import compiled


@pytest.fixture
def compiles(monkeypatch):
    """Kernels the drop-in API makes (built, or loaded from the disk cache)."""
    count = []
    original = compiled.CompiledFunction.__init__

    def counting(self, *args, **kwargs):
        count.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(compiled.CompiledFunction, "__init__", counting)
    return count


def test_repeated_calls_compile_once(compiles):
    f = lambda a: (a.exp() * 1.2345).sum(axis=0)  # noqa: E731
    for k in range(10):
        symjac.jacobian(f, np.full((3, 2), float(k)))
    assert len(compiles) == 1
    symjac.jacobian(f, np.ones((2, 3)))  # another shape is another kernel
    symjac.jacobian(f, np.ones((3, 2), dtype=np.float32))  # and another dtype
    assert len(compiles) == 3


def test_equal_graphs_share_a_kernel(compiles):
    def f(a):
        return a.sin() * 3.25

    def g(b):
        return b.sin() * 3.25

    symjac.jacobian(f, np.ones(4))
    symjac.jacobian(g, np.ones(4))
    assert len(compiles) == 1


def test_changed_closure_scalar_is_never_stale():
    gain = [2.0]
    f = lambda a: a * gain[0]  # noqa: E731
    x = np.ones(2)
    assert np.array_equal(symjac.jacobian(f, x), 2 * np.eye(2))
    gain[0] = 5.0
    assert np.array_equal(symjac.jacobian(f, x), 5 * np.eye(2))


def test_mutated_closure_array_is_never_stale():
    W = np.array([[1.0, 2.0], [3.0, 4.0]])
    f = lambda a: W @ a  # noqa: E731
    x = np.ones(2)
    assert np.array_equal(symjac.jacobian(f, x), W)
    W[0, 0] = -7.0
    assert np.array_equal(symjac.jacobian(f, x), W)


def test_results_are_fresh_arrays():
    f = lambda a: a**2  # noqa: E731
    first = symjac.jacobian(f, np.array([1.0, 2.0]))
    second = symjac.jacobian(f, np.array([3.0, 4.0]))
    assert np.array_equal(first, np.diag([2.0, 4.0]))
    assert np.array_equal(second, np.diag([6.0, 8.0]))


def test_calls_from_threads():
    f = lambda a: (a**3).sum() * a  # noqa: E731
    xs = [np.full(3, float(k)) for k in range(8)]
    expected = [symjac.jacobian(f, x) for x in xs]
    errors = []

    def work(k):
        for _ in range(50):
            if not np.array_equal(symjac.jacobian(f, xs[k]), expected[k]):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_many_kernels_outlive_cache_eviction():
    # Each kernel owns its engine; evicting old kernels must not break new ones.
    for k in range(300):
        J = symjac.jacobian(lambda a, k=k: a * float(k + 0.5), np.ones(1))
        assert J[0, 0] == k + 0.5
