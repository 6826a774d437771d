"""Issue 13's operations beyond what the op-table examples check: finite differences where
torch has no twin, boundary conventions, numerical stability, refusals, and the SciPy swap."""

import numpy as np
import pytest

import symjac
from symjac import errors

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _central_differences(f, x, h=1e-6):
    x = np.asarray(x, dtype=float)
    cols = []
    for k in range(x.size):
        e = np.zeros_like(x)
        e.flat[k] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))).reshape(-1) / (2 * h))
    return np.stack(cols, axis=-1)


def test_interp_matches_finite_differences_inside_and_outside_the_table(rng):
    xp, fp = np.array([-1.0, 0.0, 0.5, 2.0]), np.array([1.0, -2.0, 0.5, 3.0])
    f = lambda x: np.interp(x, xp, fp, left=-4.0, right=7.0) * x  # noqa: E731
    x = np.array([-1.7, -0.6, 0.2, 0.9, 1.99, 2.5])
    J = symjac.jacobian(f, x)
    np.testing.assert_allclose(J, _central_differences(f, x), rtol=1e-7, atol=1e-7)


def test_interp_values_match_numpy_and_traced_fp(rng):
    xp = np.linspace(-1, 1, 7)
    x = rng.uniform(-1.2, 1.2, 9)
    fp = rng.standard_normal(7)
    cf = symjac.compile(lambda x, fp: np.interp(x, xp, fp), x, fp)
    value = symjac.vjp(lambda x, fp: np.interp(x, xp, fp), (x, fp), np.ones(9))[0]
    np.testing.assert_allclose(value, np.interp(x, xp, fp), rtol=1e-13)
    Jx, Jfp = cf(x, fp)
    # interp is linear in fp: its Jacobian there is the interpolation weights
    np.testing.assert_allclose(Jfp @ fp, np.interp(x, xp, fp), rtol=1e-12)
    np.testing.assert_allclose(Jx, _central_differences(lambda x: np.interp(x, xp, fp), x), atol=1e-6)


def test_interp_refuses_traced_breakpoints():
    with pytest.raises(errors.UntraceableError, match="xp must be known while tracing"):
        symjac.jacobian(lambda x: np.interp(0.3, x, x**2), np.array([0.0, 1.0]))


def test_polyval_with_traced_coefficients_matches_finite_differences(rng):
    p, x = rng.standard_normal(4), rng.standard_normal(3)
    Jp, Jx = symjac.jacobian(lambda p, x: np.polyval(p, x), (p, x))
    np.testing.assert_allclose(Jp, np.vander(x, 4), rtol=1e-12)
    np.testing.assert_allclose(Jx, np.diag(np.polyval(np.polyder(p), x)), rtol=1e-12)


def test_numpy_pad_with_per_axis_constants_matches_numpy(rng):
    x = rng.standard_normal((2, 3))
    f = lambda x: np.pad(x, ((1, 0), (2, 1)), constant_values=((1.0, 2.0), (3.0, 4.0))) * 1.0  # noqa: E731
    value = symjac.vjp(f, x, np.ones((3, 6)))[0]
    np.testing.assert_array_equal(
        value, np.pad(x, ((1, 0), (2, 1)), constant_values=((1.0, 2.0), (3.0, 4.0)))
    )


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_torch_pad_modes_match_autograd(mode, rng):
    x = torch.from_numpy(rng.standard_normal((1, 2, 3, 4)))
    f = lambda x: F.pad(x**2, (1, 2, 2, 1), mode=mode)  # noqa: E731
    torch.testing.assert_close(symjac.jacobian(f, x), torch.autograd.functional.jacobian(f, x))


def test_hard_activations_follow_torch_at_their_breakpoints():
    x = torch.tensor([-3.0, 0.0, 3.0, 6.0, -1.0, 1.0], dtype=torch.float64)
    for fn in (F.relu6, F.hardtanh, F.hardswish):
        torch.testing.assert_close(symjac.jacobian(fn, x), torch.autograd.functional.jacobian(fn, x))
    # torch's hardsigmoid backward uses float32 1/6; compare at float32 precision
    torch.testing.assert_close(
        symjac.jacobian(F.hardsigmoid, x),
        torch.autograd.functional.jacobian(F.hardsigmoid, x),
        rtol=1e-7,
        atol=1e-7,
    )


def test_softmax_and_logsumexp_are_stable_and_shift_free():
    import sympy

    x = torch.tensor([1000.0, 1.0, -1000.0], dtype=torch.float64)
    for fn in (lambda x: torch.softmax(x, 0), lambda x: torch.log_softmax(x, 0), lambda x: x.logsumexp(0)):
        cf = symjac.compile(fn, x)
        theirs = torch.autograd.functional.jacobian(fn, x)
        torch.testing.assert_close(cf(x), theirs)
        torch.testing.assert_close(symjac.jacobian(fn, x), theirs)
        text = str(symjac.symbolic(fn, x).matrix)
        assert "Max" not in text and "StopGradient" not in text, text
    x0, x1 = sympy.symbols("x_0 x_1", real=True)
    view = symjac.symbolic(lambda x: torch.logsumexp(x, 0), torch.zeros(2, dtype=torch.float64))
    assert sympy.simplify(view.outputs[0][()] - sympy.log(sympy.exp(x0) + sympy.exp(x1))) == 0


def test_logsumexp_of_minus_infinity_is_minus_infinity():
    x = torch.tensor([-np.inf, -np.inf], dtype=torch.float64)
    value = symjac.vjp(lambda x: torch.logsumexp(x, 0), x, torch.tensor(1.0, dtype=torch.float64))[0]
    assert value.item() == -np.inf


def test_exported_c_of_logsumexp_agrees(tmp_path):
    import ctypes
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    x = torch.tensor([700.0, 1.0, -3.0], dtype=torch.float64)
    cf = symjac.compile(lambda x: torch.logsumexp(x * x, 0), x)
    lib = ctypes.CDLL(str(cf.build_shared_library(tmp_path / "liblse.so", "lse")))
    buf, out64, out32 = x.numpy().copy(), np.zeros(3), np.zeros(3, dtype=np.float32)
    lib.lse(
        buf.ctypes.data_as(ctypes.c_void_p),
        out64.ctypes.data_as(ctypes.c_void_p),
        out32.ctypes.data_as(ctypes.c_void_p),
    )
    np.testing.assert_allclose(out64, cf(x).numpy(), rtol=1e-14)
    np.testing.assert_allclose(out64, [1400.0, 0.0, 0.0], rtol=1e-14)


def test_scipy_functions_imported_by_name_are_traced(rng):
    pytest.importorskip("scipy")
    from scipy.linalg import norm as untouched  # noqa: F401
    from scipy.special import logsumexp, softmax

    x = rng.standard_normal(4)
    J = symjac.jacobian(lambda x: softmax(x) * logsumexp(x), x)
    t = torch.from_numpy(x)
    expected = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, 0) * torch.logsumexp(t, 0), t)
    np.testing.assert_allclose(J, expected.numpy(), rtol=1e-12)
    # outside a trace SciPy's own functions are back in place
    assert logsumexp.__module__.startswith("scipy") and not hasattr(logsumexp, "_symjac_original")
    assert np.isclose(logsumexp(x), np.log(np.exp(x).sum()))


def test_torch_norm_in_every_form(rng):
    x = torch.from_numpy(rng.standard_normal((2, 3)))
    forms = [
        lambda x: torch.norm(x),
        lambda x: torch.norm(x, p="fro", dim=1),
        lambda x: torch.norm(x, 2, 0, True),
        lambda x: torch.norm(x, p=float("inf"), dim=1),
        lambda x: x.norm(1),
        lambda x: torch.linalg.vector_norm(x, 3, dim=(0, 1)),
        lambda x: torch.linalg.matrix_norm(x, "fro"),
    ]
    for f in forms:
        torch.testing.assert_close(symjac.jacobian(f, x), torch.autograd.functional.jacobian(f, x))
    with pytest.raises(errors.InPlaceError, match="out="):
        symjac.jacobian(lambda x: torch.norm(x, out=torch.zeros(())), x)
    with pytest.raises(NotImplementedError, match="singular values"):
        symjac.jacobian(lambda x: torch.norm(x, p="nuc"), x)


def test_add_and_sub_with_alpha(rng):
    a, b = (torch.from_numpy(rng.standard_normal(3)) for _ in range(2))
    forms = [
        lambda a, b: torch.add(a, b, alpha=2.5),
        lambda a, b: torch.sub(a, b**2, alpha=-0.5),
        lambda a, b: a.add(b, alpha=3),
        lambda a, b: a.sub(2.0, alpha=2) * b,
    ]
    for f in forms:
        for ours, theirs in zip(
            symjac.jacobian(f, (a, b)), torch.autograd.functional.jacobian(f, (a, b)), strict=True
        ):
            torch.testing.assert_close(ours, theirs)


def test_indexing_refuses_traced_indices():
    x = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(errors.UntraceableError, match="used as an index"):
        symjac.jacobian(lambda x: torch.index_select(x, 0, x.long()), x)
    with pytest.raises(IndexError, match="gather"):
        symjac.jacobian(lambda x: torch.gather(x, 0, torch.tensor([[0]])), x)


def test_in_place_zero_and_fill_only_on_copies():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    with pytest.raises(errors.InPlaceError, match="zero_"):
        symjac.jacobian(lambda x: x.zero_(), x)

    def f(x):
        y = x.clone()
        y.fill_(3.0)
        return y * x

    torch.testing.assert_close(symjac.jacobian(f, x), 3.0 * torch.eye(2, dtype=torch.float64))


def test_kron_of_three_dimensional_operands(rng):
    a, b = torch.from_numpy(rng.standard_normal((2, 1, 2))), torch.from_numpy(rng.standard_normal((1, 3, 2)))
    ours = symjac.jacobian(torch.kron, (a, b))
    theirs = torch.autograd.functional.jacobian(torch.kron, (a, b))
    for o, t in zip(ours, theirs, strict=True):
        torch.testing.assert_close(o, t)
    np.testing.assert_allclose(
        symjac.vjp(np.kron, (a.numpy(), b.numpy()[0]), np.ones((2, 3, 4)))[0],
        np.kron(a.numpy(), b.numpy()[0]),
    )


def test_matrix_exp_of_a_rotation_generator_matches_autograd_and_rodrigues():
    w = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)

    def rotation(w):
        zero = w[0] * 0.0
        K = torch.stack(
            [
                torch.stack([zero, -w[2], w[1]]),
                torch.stack([w[2], zero, -w[0]]),
                torch.stack([-w[1], w[0], zero]),
            ]
        )
        return torch.linalg.matrix_exp(K)

    J = symjac.jacobian(rotation, w)
    torch.testing.assert_close(J, torch.autograd.functional.jacobian(rotation, w))
    # the value is Rodrigues' rotation, an independent closed form
    theta = w.norm()
    K = rotation(w).new_zeros(3, 3)
    K[0, 1], K[0, 2], K[1, 2] = -w[2], w[1], -w[0]
    K = K - K.T
    R = torch.eye(3, dtype=w.dtype) + torch.sin(theta) / theta * K + (1 - torch.cos(theta)) / theta**2 * K @ K
    value = symjac.vjp(rotation, w, torch.ones(3, 3, dtype=w.dtype))[0]
    torch.testing.assert_close(value, R)


def test_matrix_exp_values_follow_scipy_across_scales(rng):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    from symjac.trace import matrixexp

    for scale in (1e-3, 0.5, 3.0, 40.0):
        A = rng.standard_normal((3, 3)) * scale
        ours = np.array(matrixexp._numeric(3, list(A.flat)), dtype=float)
        expected = scipy_linalg.expm(A)
        np.testing.assert_allclose(ours, expected, rtol=1e-11, atol=1e-13 * np.abs(expected).max())
    E = rng.standard_normal((3, 3))
    ours = np.array(matrixexp._numeric(3, list(A.flat) + list(E.flat)), dtype=float)
    np.testing.assert_allclose(ours, scipy_linalg.expm_frechet(A, E, compute_expm=False), rtol=1e-9)
    # beyond the scaling range the result is NaN, never an inaccurate number
    big = np.eye(3) * 1e4
    assert np.isnan(np.array(matrixexp._numeric(3, list(big.flat)), dtype=float)).all()


def test_matrix_exp_kernels_match_torch_on_every_path(rng):
    # The kernels square in a loop (lanes of a batch may need different counts) and compute
    # all unit directions of a Jacobian in one pass: torch autograd is the oracle for both.
    scipy_linalg = pytest.importorskip("scipy.linalg")
    A = 0.8 * rng.standard_normal((3, 3))
    tA = torch.from_numpy(A)
    torch.testing.assert_close(
        symjac.jacobian(torch.linalg.matrix_exp, tA),
        torch.autograd.functional.jacobian(torch.linalg.matrix_exp, tA),
        rtol=1e-12,
        atol=1e-13,
    )
    # 2 x 2 from here on: the same code paths, at a fraction of the build time
    B = A[:2, :2]
    tB = torch.from_numpy(B)
    W = torch.from_numpy(rng.standard_normal((2, 2)))

    def scalar(a):  # second derivatives: mixed directions through the generic pass
        return (torch.linalg.matrix_exp(a) * W).sum()

    torch.testing.assert_close(
        symjac.hessian(scalar, tB), torch.autograd.functional.hessian(scalar, tB), rtol=1e-11, atol=1e-12
    )
    # a batch whose points need 0 to 9 squarings, through the SIMD kernel and its remainder
    scales = np.array([0.01, 0.3, 5.0, 50.0, 1.0, 0.1, 20.0, 2.0, 0.7])
    batch = B[None] * scales[:, None, None]
    A = B
    cf = symjac.compile(lambda a: scipy_linalg.expm(a), A, value=True)
    values, jacobians = cf(batch)
    for point, value, jac in zip(batch, values, jacobians, strict=True):
        expected = scipy_linalg.expm(point)
        np.testing.assert_allclose(value, expected, rtol=1e-11, atol=1e-13 * np.abs(expected).max())
        want = torch.autograd.functional.jacobian(torch.linalg.matrix_exp, torch.from_numpy(point)).numpy()
        np.testing.assert_allclose(jac, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


HELPER_MODULE = """
from scipy.linalg import expm
from scipy.special import log_softmax, logsumexp, softmax


def energy(x):
    return logsumexp(x) + softmax(x)[0] * log_softmax(x)[-1]


def rotation(w):
    return expm(w)
"""


def test_scipy_functions_imported_by_a_helper_module_are_traced(tmp_path, monkeypatch, rng):
    # issue 13: the traced function calls a helper module that imported SciPy's names itself
    pytest.importorskip("scipy")
    import importlib
    import threading

    (tmp_path / "symjac_scipy_helper.py").write_text(HELPER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    helper = importlib.import_module("symjac_scipy_helper")
    x = rng.standard_normal(4)
    J = symjac.jacobian(lambda x: helper.energy(x), x)
    expected = torch.autograd.functional.jacobian(
        lambda t: torch.logsumexp(t, 0) + torch.softmax(t, 0)[0] * torch.log_softmax(t, 0)[-1],
        torch.from_numpy(x),
    )
    np.testing.assert_allclose(J, expected.numpy(), rtol=1e-12)
    w = 0.3 * rng.standard_normal((2, 2))
    np.testing.assert_allclose(
        symjac.jacobian(lambda w: helper.rotation(w), w),
        torch.autograd.functional.jacobian(torch.linalg.matrix_exp, torch.from_numpy(w)).numpy(),
        rtol=1e-12,
    )
    # Threads tracing at once: one thread's end of trace must not unbind another's names.
    results, failures = [None] * 6, []

    def work(k):
        try:
            results[k] = symjac.jacobian(lambda x: helper.energy(x) * (k + 1), x)
        except Exception as exc:  # reported below, with the thread's index
            failures.append((k, exc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    for k, r in enumerate(results):
        np.testing.assert_allclose(r, (k + 1) * expected.numpy(), rtol=1e-12)
    # outside a trace the helper's names are SciPy's own functions again
    import scipy.linalg
    import scipy.special

    assert helper.logsumexp is scipy.special.logsumexp and helper.expm is scipy.linalg.expm
    assert not hasattr(helper.softmax, "_symjac_original")
