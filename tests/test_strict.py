"""Strict mode: every check of torch-semantics.md section 4, with symjac's section 11 rules."""

import numpy as np
import pytest

import symjac

x = np.array([0.3, -0.7, 1.1])
y = np.array([0.5, 0.2, -0.4])

NOT_REQUIRE = "Output 0 of the user-provided function does not require gradients"


def _raises(msg, fn, *args, **kwargs):
    with pytest.raises(RuntimeError) as info:
        fn(*args, **kwargs)
    assert msg in str(info.value), str(info.value)


@pytest.mark.parametrize("vectorize", [False, True])
def test_jacobian_detached_output(vectorize):
    f = lambda a: a.detach()  # noqa: E731
    _raises(NOT_REQUIRE, symjac.jacobian, f, x, strict=True, vectorize=vectorize)
    assert np.array_equal(symjac.jacobian(f, x), np.zeros((3, 3)))


def test_jacobian_constant_output():
    f = lambda a: np.ones(2)  # noqa: E731
    _raises(NOT_REQUIRE, symjac.jacobian, f, x, strict=True)
    assert np.array_equal(symjac.jacobian(f, x), np.zeros((2, 3)))


def test_jacobian_checks_each_pair():
    f = lambda a, b: (a.sum(), b.sum())  # noqa: E731
    _raises(
        "Output 0 of the user-provided function is independent of input 1. This is not allowed in strict mode.",
        symjac.jacobian,
        f,
        (x, y),
        strict=True,
    )
    J = symjac.jacobian(f, (x, y))
    assert np.array_equal(J[0][1], np.zeros(3)) and np.array_equal(J[1][0], np.zeros(3))


@pytest.mark.parametrize(
    "f", [lambda a: a * 0, lambda a: a - a, lambda a: np.floor(a), lambda a: a.detach() * 2]
)
def test_mathematical_independence(f):
    # torch-semantics.md 11.1: an identically-zero block is independent, whatever the graph.
    _raises(NOT_REQUIRE, symjac.jacobian, f, x, strict=True)
    assert np.array_equal(symjac.jacobian(f, x), np.zeros((3, 3)))


def test_create_graph_constant_jacobian():
    f = lambda a, b: (a**2).sum() + b.sum()  # noqa: E731
    _raises(
        "The jacobian of output 0 with respect to input 1 is independent of the inputs. "
        "This is not allowed in strict mode when create_graph=True.",
        symjac.jacobian,
        f,
        (x, y),
        strict=True,
        create_graph=True,
    )
    symjac.jacobian(f, (x, y), strict=True)  # only create_graph asks for a non-constant Jacobian
    J = symjac.jacobian(lambda a: a * 2, x, create_graph=True)
    assert np.array_equal(J, 2 * np.eye(3))


def test_vjp_strict():
    v = np.ones(3)
    _raises(NOT_REQUIRE, symjac.vjp, lambda a: a.detach(), x, v, strict=True)
    _raises(
        "The output of the user-provided function is independent of input 1. This is not allowed in strict mode.",
        symjac.vjp,
        lambda a, b: a * 2,
        (x, y),
        v,
        strict=True,
    )
    symjac.vjp(lambda a, b: (a.sum(), b.sum()), (x, y), (np.array(1.0), np.array(1.0)), strict=True)
    _raises(
        "with respect to input 0 is independent of the inputs. This is not allowed in strict mode when create_graph=True.",
        symjac.vjp,
        lambda a: a * 3,
        x,
        v,
        strict=True,
        create_graph=True,
    )
    out, prod = symjac.vjp(lambda a: a * 3, x, v, create_graph=True)
    assert np.array_equal(prod, 3 * v)


def test_jvp_strict():
    v = np.ones(3)
    _raises(NOT_REQUIRE, symjac.jvp, lambda a: a.detach(), x, v, strict=True)
    _raises(
        "The output of the user-provided function is independent of input 1.",
        symjac.jvp,
        lambda a, b: a * 2,
        (x, y),
        (v, v),
        strict=True,
    )
    _raises(
        "with respect to output 0 is independent of the inputs. This is not allowed in strict mode when create_graph=True.",
        symjac.jvp,
        lambda a: a * 3,
        x,
        v,
        strict=True,
        create_graph=True,
    )


HESSIAN_LINEAR = (
    "While computing the hessian, found that the jacobian of the user-provided function with "
    "respect to input 0 is independent of the input. This is not allowed in strict mode."
)


def test_hessian_strict():
    _raises(HESSIAN_LINEAR, symjac.hessian, lambda a: (3 * a).sum(), x, strict=True)
    _raises(
        "Output 0 of the user-provided function is independent of input 1.",
        symjac.hessian,
        lambda a, b: (a**3).sum() + (b**3).sum(),
        (x, y),
        strict=True,
    )
    _raises(
        "The output of the user-provided function is independent of input 1.",
        symjac.hessian,
        lambda a, b: (a**3).sum(),
        (x, y),
        strict=True,
    )
    _raises(NOT_REQUIRE, symjac.hessian, lambda a: a.detach().sum(), x, strict=True)
    symjac.hessian(lambda a, b: (a**3).sum() * (b**3).sum(), (x, y), strict=True)
    # 11.2: a quadratic's Hessian is constant, so create_graph=True strict refuses it.
    _raises(
        "The hessian of output 0 with respect to input 0 is independent of the inputs.",
        symjac.hessian,
        lambda a: (a**2).sum(),
        x,
        strict=True,
        create_graph=True,
    )
    assert np.array_equal(symjac.hessian(lambda a: (3 * a).sum(), x), np.zeros((3, 3)))


@pytest.mark.parametrize("api", [symjac.hvp, symjac.vhp])
def test_hessian_vector_strict(api):
    v = np.ones(3)
    _raises(HESSIAN_LINEAR, api, lambda a: (3 * a).sum(), x, v, strict=True)
    _raises(
        "The output of the user-provided function is independent of input 1.",
        api,
        lambda a, b: (a**3).sum(),
        (x, y),
        (v, v),
        strict=True,
    )
    _raises(
        "The hessian of the user-provided function is independent of input 0. "
        "This is not allowed in strict mode when create_graph=True.",
        api,
        lambda a: (a**2).sum(),
        x,
        v,
        strict=True,
        create_graph=True,
    )
    out, prod = api(lambda a: (a**2).sum(), x, v, create_graph=True)
    assert np.array_equal(prod, 2 * v)


def test_strict_with_vectorize_and_forward_mode_is_computed():
    # 11.3: combinations torch refuses are computed, with the same values.
    f = lambda a: a.exp()  # noqa: E731
    ref = symjac.jacobian(f, x)
    for opts in [
        dict(strict=True, vectorize=True),
        dict(strategy="forward-mode"),
        dict(strategy="forward-mode", create_graph=True, strict=True),
    ]:
        assert np.array_equal(symjac.jacobian(f, x, **opts), ref)
    assert np.array_equal(
        symjac.hessian(lambda a: (a**3).sum(), x, outer_jacobian_strategy="forward-mode"),
        symjac.hessian(lambda a: (a**3).sum(), x),
    )


def test_messages_match_torch_where_torch_agrees():
    torch = pytest.importorskip("torch")
    AF = torch.autograd.functional
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    scenarios = [
        (lambda a: a.detach(), tx, {}),
        (lambda a, b: (a.sum(), b.sum()), (tx, ty), {}),
    ]
    for f, args, opts in scenarios:
        with pytest.raises(RuntimeError) as theirs:
            AF.jacobian(f, args, strict=True, **opts)
        with pytest.raises(RuntimeError) as ours:
            symjac.jacobian(f, args, strict=True, **opts)
        assert str(ours.value) == str(theirs.value)
    with pytest.raises(RuntimeError) as theirs:
        AF.hessian(lambda a: (3 * a).sum(), tx, strict=True)
    with pytest.raises(RuntimeError) as ours:
        symjac.hessian(lambda a: (3 * a).sum(), tx, strict=True)
    assert str(ours.value) == str(theirs.value)
