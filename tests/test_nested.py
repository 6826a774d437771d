"""Nested calls: an inner symjac call inside a traced function is differentiated exactly."""

import numpy as np
import pytest

import symjac

x = np.array([0.3, -0.7, 1.1])


def f(z):
    return (z**3).sum() * z.sin()


def test_jacobian_of_create_graph_jacobian_is_second_derivative():
    inner = lambda a: symjac.jacobian(lambda z: (z**3).sum() * z.sin().sum(), a, create_graph=True)  # noqa: E731
    H = symjac.jacobian(inner, x)
    np.testing.assert_allclose(H, symjac.hessian(lambda z: (z**3).sum() * z.sin().sum(), x), rtol=1e-13)


def test_without_create_graph_the_inner_result_is_constant():
    inner = lambda a: symjac.jacobian(f, a)  # noqa: E731
    assert np.array_equal(symjac.jacobian(inner, x), np.zeros((3, 3, 3)))


def test_matches_torch_nested():
    torch = pytest.importorskip("torch")
    AF = torch.autograd.functional
    tx = torch.from_numpy(x)
    ours = symjac.jacobian(lambda a: symjac.jacobian(f, a, create_graph=True), tx)
    theirs = AF.jacobian(lambda a: AF.jacobian(f, a, create_graph=True), tx)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_inner_function_capturing_outer_input():
    # d/da [ d/dz (z * a).sum() ] = d/da a = I: the captured a stays symbolic in the inner call.
    outer = lambda a: symjac.jacobian(lambda z: (z * a).sum(), a * 1.0, create_graph=True)  # noqa: E731
    np.testing.assert_allclose(symjac.jacobian(outer, x), np.eye(3))


def test_products_inside_a_trace():
    v = np.array([1.0, 2.0, 3.0])
    outer = lambda a: symjac.vjp(f, a, v, create_graph=True)[1]  # noqa: E731
    H_v = symjac.jacobian(outer, x)
    J2 = symjac.jacobian(lambda a: symjac.jacobian(f, a, create_graph=True), x)
    np.testing.assert_allclose(H_v, np.einsum("i,ijk->jk", v, J2), rtol=1e-12)
    value = lambda a: symjac.vjp(f, a, v, create_graph=True)[0]  # noqa: E731
    np.testing.assert_allclose(symjac.jacobian(value, x), symjac.jacobian(f, x), rtol=1e-13)


def test_strict_inside_a_trace():
    with pytest.raises(
        RuntimeError, match="Output 0 of the user-provided function does not require gradients"
    ):
        symjac.jacobian(lambda a: symjac.jacobian(lambda z: z.detach() + 1, a, strict=True), x)
    with pytest.raises(
        RuntimeError, match="Output 0 of the user-provided function is independent of input 1"
    ):
        symjac.jacobian(lambda a: symjac.jacobian(lambda z, w: z * 2, (a, a), strict=True)[0], x)


def test_compiled_nested_calls_get_their_own_cache_entries():
    # The disk cache key spells out the inner call's graph: same sizes, different inner functions.
    sin_jac = symjac.compile(lambda a: symjac.jacobian(lambda z: z.sin(), a, create_graph=True), x)
    cos_jac = symjac.compile(lambda a: symjac.jacobian(lambda z: z.cos(), a, create_graph=True), x)
    np.testing.assert_allclose(sin_jac(x), np.einsum("ij,jk->ijk", np.eye(3), -np.diag(np.sin(x))))
    np.testing.assert_allclose(cos_jac(x), np.einsum("ij,jk->ijk", np.eye(3), -np.diag(np.cos(x))))
