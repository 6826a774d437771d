"""Traced tensors that behave like torch tensors, arrays assembled by assignment, and the
messages for what cannot be traced (issue 13, items 2, 3 and 5)."""

import threading

import numpy as np
import pytest

import symjac
from symjac import errors

torch = pytest.importorskip("torch")
AF = torch.autograd.functional


def _check(ours, theirs):
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)


# --- item 2: traced tensors of torch style ------------------------------------------------------


def test_traced_tensor_is_a_torch_tensor_with_torch_metadata():
    seen = {}

    def f(x):
        seen["isinstance"] = isinstance(x, torch.Tensor)
        seen["dtype"] = x.dtype
        seen["device"] = x.device
        seen["size"] = x.size()
        return torch.eye(2, dtype=x.dtype, device=x.device) @ x * torch.ones(2, dtype=x.dtype)

    x = torch.tensor([0.5, -1.0], dtype=torch.float64)
    J = symjac.jacobian(f, x)
    assert seen == {
        "isinstance": True,
        "dtype": torch.float64,
        "device": torch.device("cpu"),
        "size": torch.Size([2]),
    }
    _check(J, torch.eye(2, dtype=torch.float64))


def test_numpy_style_traced_tensor_keeps_a_numpy_dtype():
    seen = {}

    def f(x):
        seen["dtype"] = x.dtype
        return x * 2

    symjac.jacobian(f, np.ones(2, dtype=np.float32))
    assert seen["dtype"] == np.dtype(np.float32)


def test_new_factories_follow_the_traced_dtype():
    def f(x):
        return (
            x.new_zeros(3) + x.new_ones(3) * x**2 + x.new_full((3,), 0.5) * x + x.new_tensor([1.0, 2.0, 3.0])
        )

    x = torch.tensor([0.3, -0.2, 0.9])
    ours = symjac.jacobian(f, x)
    assert ours.dtype == torch.float32
    _check(ours, AF.jacobian(f, x))


# --- item 3: assembly -----------------------------------------------------------------------


def test_torch_zeros_with_item_and_slice_assignment():
    def f(q):
        T = torch.eye(3, dtype=q.dtype)
        T[:2, :2] = torch.stack(
            [
                torch.stack([torch.cos(q[0]), -torch.sin(q[0])]),
                torch.stack([torch.sin(q[0]), torch.cos(q[0])]),
            ]
        )
        T[0, 2] = q[1] ** 2
        return T

    q = torch.tensor([0.4, 1.5], dtype=torch.float64)
    _check(symjac.jacobian(f, q), AF.jacobian(f, q))


def test_numpy_zeros_and_empty_with_item_assignment():
    def f(c):
        out = np.zeros(3)
        out[0] = c[0] * c[1]
        out[1:] = np.sin(c)
        buf = np.empty(2)
        buf[:] = c**2
        return out[1:] + buf

    c = np.array([0.3, 0.7])
    J = symjac.jacobian(f, c)
    np.testing.assert_allclose(J, np.diag(np.cos(c) + 2 * c), rtol=1e-14)


def test_mask_assignment_and_masked_fill():
    def f(x):
        y = x * 3.0
        y[x < 0] = 0.0
        return y.masked_fill(x > 1.0, 2.0) + torch.masked_fill(x**2, x < -0.5, 0.0)

    def oracle(x):
        y = torch.where(x < 0, torch.zeros_like(x), x * 3.0)
        return torch.where(x > 1.0, torch.full_like(x, 2.0), y) + torch.where(x < -0.5, 0 * x, x**2)

    x = torch.tensor([-1.0, -0.2, 0.5, 1.5], dtype=torch.float64)
    _check(symjac.jacobian(f, x), AF.jacobian(oracle, x))


def test_torch_tensor_of_traced_scalars_and_numpy_array_of_mixed_lists():
    def f(t):
        c, s = torch.cos(t[0]), torch.sin(t[0])
        R = torch.tensor([[c, -s], [s, c]], dtype=t.dtype)
        return R @ torch.as_tensor([t[1], 1.0])

    def oracle(t):
        c, s = torch.cos(t[0]), torch.sin(t[0])
        return torch.stack([c * t[1] - s, s * t[1] + c])

    t = torch.tensor([0.6, 2.0], dtype=torch.float64)
    _check(symjac.jacobian(f, t), AF.jacobian(oracle, t))

    def g(t):
        return np.array([[np.cos(t[0]), 0.0], [1.0, t[1] * t[0]]]).sum(axis=0)

    J = symjac.jacobian(g, np.array([0.6, 2.0]))
    np.testing.assert_allclose(J, [[-np.sin(0.6), 0.0], [2.0, 0.6]], rtol=1e-14)


def test_constants_read_as_numbers_and_factories_are_restored():
    original = np.zeros, torch.zeros, torch.tensor

    def f(x):
        z = np.zeros(2)
        assert z.tolist() == [0.0, 0.0] and not z.numpy().any() and float(np.ones(())) == 1.0
        return x + z

    symjac.jacobian(f, np.ones(2))
    assert (np.zeros, torch.zeros, torch.tensor) == original
    assert type(np.zeros(2)) is np.ndarray


def test_factories_are_untouched_in_other_threads():
    seen = []
    started, release = threading.Event(), threading.Event()

    def other():
        started.wait()
        seen.append(type(np.zeros(2)))
        release.set()

    def f(x):
        started.set()
        release.wait(5)
        return x * np.ones(2)

    t = threading.Thread(target=other)
    t.start()
    symjac.jacobian(f, np.ones(2))
    t.join()
    assert seen == [np.ndarray]


def test_assigning_into_an_outside_constant_names_the_fix():
    outside = torch.zeros(2, dtype=torch.float64)

    def f(x):
        outside[0] = x[0]
        return outside

    with pytest.raises(errors.InPlaceError, match="create it inside the function"):
        symjac.jacobian(f, torch.ones(2, dtype=torch.float64))


# --- item 1: modules ----------------------------------------------------------------------------


def test_dropout_in_training_mode_says_to_call_eval():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).double()
    x = torch.ones(2, dtype=torch.float64)
    with pytest.raises(errors.UntraceableError, match=r"net.eval\(\)"):
        symjac.jacobian(net, x)
    net.eval()
    _check(symjac.jacobian(net, x), AF.jacobian(net, x))


# --- item 5: messages -------------------------------------------------------------------------


def test_unsupported_method_is_a_clear_attribute_error():
    with pytest.raises(AttributeError, match=r"\.frobnicate\(\)|\.frobnicate"):
        symjac.jacobian(lambda x: x.frobnicate(), np.ones(2))
    with pytest.raises(errors.UnsupportedMethodError, match=r"\.grad"):
        symjac.jacobian(lambda x: x.grad, torch.ones(2, dtype=torch.float64))


def test_unknown_torch_function_is_named_as_the_user_wrote_it():
    conv = torch.nn.Conv1d(1, 1, 2).double()
    with pytest.raises(NotImplementedError, match=r"torch\.nn\.functional\.conv1d|torch\.conv1d"):
        symjac.jacobian(lambda x: conv(x.reshape(1, 1, 3)), torch.ones(3, dtype=torch.float64))


def test_if_inside_a_library_names_the_library_function():
    pytest.importorskip("scipy")
    import scipy.optimize

    def f(x):
        return scipy.optimize.brentq(lambda t: t - x[0], -10, 10)

    with pytest.raises((errors.UntraceableError, NotImplementedError), match=r"scipy\.optimize\.brentq"):
        symjac.jacobian(f, np.ones(1))

    def g(x):
        y = x * 2
        if y[0] > 0:  # the user's own `if`: no library named
            return y
        return -y

    with pytest.raises(errors.UntraceableError, match="symjac.where") as info:
        symjac.jacobian(g, np.ones(1))
    assert "library" not in str(info.value)


def test_if_inside_scipy_logsumexp_names_it():
    special = pytest.importorskip("scipy.special")
    try:
        symjac.jacobian(lambda x: special.logsumexp(x), np.ones(3))
    except (errors.UntraceableError, NotImplementedError) as e:
        assert "scipy.special" in str(e) and "library function" in str(e)
