"""Bad input gets a clear error naming the argument, index, type or operation."""

import numpy as np
import pytest

import symjac

x = np.array([0.3, -0.7, 1.1])
MUST = "must be either a Tensor or a tuple of Tensors but"


def test_inputs_types():
    with pytest.raises(
        TypeError, match=f"The inputs given to jacobian {MUST} the given inputs has type <class 'list'>."
    ):
        symjac.jacobian(lambda a: a, [x, x])
    with pytest.raises(TypeError, match=f"{MUST} the value at index 1 has type <class 'int'>."):
        symjac.jacobian(lambda a, b: a, (x, 2))
    with pytest.raises(TypeError, match="the given inputs has type <class 'float'>"):
        symjac.hessian(lambda a: a, 3.0)
    with pytest.raises(ValueError, match="inputs is an empty tuple"):
        symjac.jacobian(lambda: x, ())


@pytest.mark.parametrize(
    "ret,where",
    [
        (lambda a: [a, a], "the given outputs of the user-provided function has type <class 'list'>"),
        (lambda a: 3.0, "has type <class 'float'>"),
        (lambda a: None, "has type <class 'NoneType'>"),
        (lambda a: ((a, a), a), "the value at index 0 has type <class 'tuple'>"),
        (lambda a: (a, "bar"), "the value at index 1 has type <class 'str'>"),
    ],
)
def test_outputs_types(ret, where):
    with pytest.raises(
        TypeError, match=f"The outputs of the user-provided function given to jacobian {MUST}"
    ):
        symjac.jacobian(ret, x)
    with pytest.raises(TypeError, match=where):
        symjac.jacobian(ret, x)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_integer_and_bool_inputs(dtype):
    with pytest.raises(
        symjac.DtypeError, match=r"jacobian: inputs\[1\] has dtype (int64|int32|bool); only floating point"
    ):
        symjac.jacobian(lambda a, b: a, (x, np.ones(3, dtype=dtype)))
    # torch raises RuntimeError here; symjac's error is both a TypeError and a RuntimeError
    with pytest.raises(RuntimeError):
        symjac.jacobian(lambda a: a, np.ones(3, dtype=dtype))
    with pytest.raises(TypeError):
        symjac.jacobian(lambda a: a, np.ones(3, dtype=dtype))


def test_complex_inputs():
    with pytest.raises(TypeError, match=r"inputs\[0\] has the complex dtype complex128"):
        symjac.jacobian(lambda a: a, np.ones(3, dtype=complex))


def test_strategy():
    with pytest.raises(
        ValueError, match='strategy must be "forward-mode" or "reverse-mode", got \'backward\''
    ):
        symjac.jacobian(lambda a: a, x, strategy="backward")
    with pytest.raises(ValueError, match="hessian: strategy must be"):
        symjac.hessian(lambda a: a.sum(), x, outer_jacobian_strategy="nope")


def test_v_validation():
    f = lambda a: a * 2  # noqa: E731
    with pytest.raises(RuntimeError, match=r"v has invalid size: should be \(3,\) but got \(2,\)."):
        symjac.vjp(f, x, np.ones(2))
    with pytest.raises(RuntimeError, match="The given v should contain a single Tensor."):
        symjac.vjp(f, x, (np.ones(3), np.ones(3)))
    with pytest.raises(RuntimeError, match="v is a tuple of invalid length: should be 2 but got 1."):
        symjac.jvp(lambda a, b: a * b, (x, x), (np.ones(3),))
    with pytest.raises(
        RuntimeError, match=r"Entry 1 in v has invalid size: should be \(3,\) but got \(3, 1\)."
    ):
        symjac.jvp(lambda a, b: a * b, (x, x), (np.ones(3), np.ones((3, 1))))
    with pytest.raises(TypeError, match="The v given to vjp must be either a Tensor"):
        symjac.vjp(f, x, [1.0, 2.0, 3.0])
    with pytest.raises(
        RuntimeError,
        match="v can only be None if the user-provided function returns a single Tensor with a single element",
    ):
        symjac.vjp(f, x)
    for api in (symjac.jvp, symjac.hvp, symjac.vhp):
        with pytest.raises(
            RuntimeError,
            match="v can only be None if the input to the user-provided function is a single Tensor with a single element",
        ):
            api(lambda a: a.sum(), x)
    # a single-element input or output needs no v
    assert symjac.vjp(lambda a: a.sum(), x)[1].shape == (3,)
    assert symjac.jvp(lambda a: a * x, np.array([2.0]))[1].shape == (3,)
    # a 1-tuple v is accepted for a single tensor
    assert symjac.vjp(f, x, (np.ones(3),))[1].shape == (3,)


def test_v_validation_torch_sizes():
    torch = pytest.importorskip("torch")
    with pytest.raises(
        RuntimeError, match=r"v has invalid size: should be torch.Size\(\[3\]\) but got torch.Size\(\[2\]\)."
    ):
        symjac.vjp(lambda a: a * 2, torch.ones(3), torch.ones(2))


def test_single_output_checks():
    for api, args in [(symjac.hessian, ()), (symjac.hvp, (np.ones(3),)), (symjac.vhp, (np.ones(3),))]:
        with pytest.raises(
            RuntimeError, match=f"The function given to {api.__name__} should return a single Tensor"
        ):
            api(lambda a: (a.sum(),), x, *args)
        with pytest.raises(
            RuntimeError,
            match=f"The Tensor returned by the function given to {api.__name__} should contain a single element",
        ):
            api(lambda a: a * 2, x, *args)
    symjac.hessian(lambda a: a.sum().reshape(1, 1, 1), x)  # any single-element shape is fine


def test_python_control_flow_suggests_where():
    def f(a):
        if a.sum() > 0:
            return a
        return -a

    with pytest.raises(
        symjac.UntraceableError,
        match=r"bool\(\) of a traced tensor \(the result of `greater`, shape \(\)\).*symjac.where",
    ):
        symjac.jacobian(f, x)


@pytest.mark.parametrize("convert,what", [(float, "float"), (int, "int"), (lambda a: a.item(), "item")])
def test_conversions(convert, what):
    with pytest.raises(symjac.UntraceableError, match=what):
        symjac.jacobian(lambda a: a * convert(a.sum()), x)


def test_traced_index():
    with pytest.raises(symjac.UntraceableError, match="used as an index"):
        symjac.jacobian(lambda a: a[a[0]], x)


def test_unknown_operations_name_themselves():
    with pytest.raises(
        NotImplementedError,
        match=r"symjac cannot trace numpy.partition \(argument 0 is a traced tensor\).*op table",
    ):
        symjac.jacobian(lambda a: np.partition(a, 1), x)
    with pytest.raises(NotImplementedError, match=r"numpy.fft.fft"):
        symjac.jacobian(lambda a: np.fft.fft(a), x)
    with pytest.raises(NotImplementedError, match=r"numpy.ldexp"):
        symjac.jacobian(lambda a: np.ldexp(a, 2), x)


@pytest.mark.parametrize("call", [np.sort, np.argmax, np.argsort, lambda a: a.argmax()])
def test_order_dependent_operations_suggest_alternatives(call):
    with pytest.raises(symjac.UntraceableError, match="amax/amin/maximum"):
        symjac.jacobian(lambda a: call(a) * a, x)


def test_unknown_torch_operation():
    torch = pytest.importorskip("torch")
    with pytest.raises(NotImplementedError, match=r"torch.fft_fft|torch.fft"):
        symjac.jacobian(lambda a: torch.fft.fft(a), torch.ones(3))


def test_in_place():
    with pytest.raises(symjac.InPlaceError, match="out="):
        symjac.jacobian(lambda a: np.exp(a, out=np.empty(3)), x)

    def assign_input(a):
        a[0] = 1.0
        return a

    with pytest.raises(symjac.InPlaceError, match="clone"):
        symjac.jacobian(assign_input, x)


def test_index_assignment_on_a_copy():
    def f(a):
        b = a.clone()
        b[0] = a[1] * a[2]
        b[2] = 5.0
        return b

    J = symjac.jacobian(f, x)
    expected = np.array([[0, x[2], x[1]], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(J, expected)


def test_index_assignment_takes_the_values_numpy_takes(rng):
    def numpy_rules(a, value):
        b = a * 1.0
        b[1:4] = value(a)
        return b

    for value in (
        lambda a: a[:3] ** 2,
        lambda a: (a[:3] ** 2).reshape(1, 3),
        lambda a: a[:1].reshape(1, 1, 1) * 2,
    ):
        x5 = rng.standard_normal(5)
        expected = np.zeros((5, 5))
        for k in range(5):  # central differences of the same assignment in NumPy
            e = np.zeros(5)
            e[k] = 1e-6
            expected[:, k] = (numpy_rules(x5 + e, value) - numpy_rules(x5 - e, value)) / 2e-6
        for expand in ("elements", "arrays"):
            J = symjac.jacobian(lambda a, value=value: numpy_rules(a, value), x5, expand=expand)
            np.testing.assert_allclose(J, expected, atol=1e-8)

    def wider(a):
        b = a * 1.0
        b[0:3] = np.stack([a[:3], a[1:4]])  # NumPy: could not broadcast (2, 3) into (3,)
        return b

    with pytest.raises(
        ValueError, match=r"cannot assign a value of shape \(2, 3\) to a selection of shape \(3,\)"
    ):
        symjac.jacobian(wider, np.ones(5))

    def one_element(a):
        b = a * 1.0
        b[0] = a[:1].reshape(1, 1)  # NumPy: setting an array element with a sequence
        return b

    with pytest.raises(ValueError, match="array element with a sequence"):
        symjac.jacobian(one_element, np.ones(5))

    def one_element_view(a):
        b = a * 1.0
        b[..., 0] = a[1:2] ** 2  # a 0-d view, not an integer key: NumPy drops the leading axis
        return b

    x5 = np.array([1.0, 2.0, 3.0])
    for expand in ("elements", "arrays"):
        J = symjac.jacobian(one_element_view, x5, expand=expand)
        np.testing.assert_array_equal(J, [[0.0, 4.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_shape_errors_name_the_operation():
    with pytest.raises(ValueError, match=r"add: shapes \(3,\), \(2,\) cannot be broadcast"):
        symjac.jacobian(lambda a: a + np.ones(2), x)
    with pytest.raises(ValueError, match=r"matmul: shapes \(3,\) and \(2, 2\) are not aligned"):
        symjac.jacobian(lambda a: a @ np.ones((2, 2)), x)
    with pytest.raises(ValueError, match="reshape: cannot reshape"):
        symjac.jacobian(lambda a: a.reshape(2, 2), x)


def test_random_draws_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(symjac.UntraceableError, match="torch.rand_like.*Draw the noise outside"):
        symjac.jacobian(lambda a: a * torch.rand_like(a), torch.ones(3))
    with pytest.raises(symjac.UntraceableError, match="torch.dropout|torch.nn.functional.dropout|dropout"):
        symjac.jacobian(lambda a: torch.nn.functional.dropout(a, 0.5), torch.ones(3))


def test_branch_not_taken_never_injects_nan():
    # JAX's double-where trap: the sqrt branch's derivative is nan for x < 0 but is not selected
    f = lambda a: symjac.where(a > 0, np.sqrt(a), a * 0 + 1.0)  # noqa: E731
    J = symjac.jacobian(f, np.array([-1.0, 4.0]))
    np.testing.assert_array_equal(J, np.array([[0.0, 0.0], [0.0, 0.25]]))
    g = lambda a: np.maximum(np.log(np.abs(a) + 1.0), 0.0) * np.clip(a, -1.0, 1.0)  # noqa: E731
    assert np.isfinite(symjac.jacobian(g, np.array([-2.0, 0.0, 0.5]))).all()
