"""CompiledFunction.entry: the native builtin computes exactly what the compiled function computes."""

import sys

import numpy as np
import pytest

import symjac


def robertson(y):
    return np.stack(
        [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2]
    )


Y = np.array([1.0, 2e-5, 0.01])


def test_entry_is_a_builtin_that_matches_the_compiled_function():
    cf = symjac.compile(robertson, Y)
    entry = cf.entry
    assert type(entry).__name__ == "builtin_function_or_method"
    result = entry(Y)
    assert type(result) is np.ndarray and result.dtype == np.float64 and result.flags.c_contiguous
    assert np.array_equal(result, cf(Y))
    np.testing.assert_allclose(result, symjac.jacobian(robertson, Y), rtol=1e-15)
    assert cf.entry is entry  # built once


@pytest.mark.parametrize(
    "func, x",
    [
        (lambda a: (a @ a).sin(), np.array([[0.1, 0.2], [0.3, 0.4]])),  # 2-D input, 4-D result
        (lambda a: (a**3).sum(), np.array([0.5, -1.0, 2.0])),  # 1-D result
        (lambda a: a * 2.0, np.array(0.7)),  # 0-d input
        (lambda a: a.exp() * a[0], np.array([0.1, 0.2], dtype=np.float32)),  # float32 kernel
    ],
)
def test_shapes_and_dtypes(func, x):
    cf = symjac.compile(func, x)
    ours = cf.entry(x)
    expected = cf(x)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    assert np.array_equal(ours, expected)
    # Every result is fresh: no aliasing between calls.
    again = cf.entry(x * 2)
    assert np.array_equal(ours, expected) and not np.shares_memory(ours, again)


def test_everything_else_goes_to_the_compiled_function():
    cf = symjac.compile(robertson, Y)
    entry = cf.entry
    batch = np.stack([Y, Y * 2])
    assert np.array_equal(entry(batch), cf(batch))  # a batch
    strided = np.stack([Y, Y], axis=1)[:, 0]
    assert not strided.flags.c_contiguous
    assert np.array_equal(entry(strided), cf(Y))  # non-contiguous
    assert np.array_equal(entry(Y.astype(">f8")), cf(Y))  # big-endian buffer format
    out = np.empty((3, 3))
    entry(Y, out=out)  # keywords
    assert np.array_equal(out, cf(Y))
    readonly = Y.copy()
    readonly.setflags(write=False)
    assert np.array_equal(entry(readonly), cf(Y))
    with pytest.raises(ValueError, match=r"argument 0 has shape \(4,\)"):
        entry(np.zeros(4))
    with pytest.raises(TypeError, match="expected 1 inputs, got 2"):
        entry(Y, Y)
    torch = pytest.importorskip("torch")
    t = entry(torch.from_numpy(Y))
    assert isinstance(t, torch.Tensor) and np.array_equal(t.numpy(), cf(Y))


def test_no_reference_leaks():
    cf = symjac.compile(robertson, Y)
    entry = cf.entry
    x = Y.copy()
    before = sys.getrefcount(x)
    for _ in range(1000):
        r = entry(x)
    assert sys.getrefcount(x) == before
    assert sys.getrefcount(r) == 2  # r and getrefcount's argument
    for _ in range(100):
        try:
            entry(np.zeros(4))
        except ValueError:
            pass
    assert sys.getrefcount(x) == before


def test_functions_without_a_fast_path_get_the_call_itself():
    cf = symjac.compile(lambda a, b: a * b, Y, Y)
    assert cf.entry == cf.__call__
    hv = symjac.compile(lambda a: (a**3).sum(), Y, mode="hvp")
    np.testing.assert_array_equal(hv.entry(Y, v=np.ones(3)), hv(Y, v=np.ones(3)))
