"""Inputs symjac cannot honour are refused with an error naming the argument, never a silent
wrong number: bad ``wrt``, long double, complex, object, masked and matrix arrays, complex
SymPy expressions; and the edge cases that have a right answer get it."""

import pickle

import numpy as np
import pytest
import sympy

import symjac
from symjac import errors

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def f2(a, b):
    return (a * b).sin() * a


def s2(a, b):
    return (a * b.exp()).sum()


MODES = [("jacobian", f2), ("hessian", s2), ("jvp", f2), ("vjp", f2), ("hvp", s2)]


@pytest.mark.parametrize("mode,func", MODES)
@pytest.mark.parametrize("wrt", [(0, 0), [1, 1], (0, 1, 0)])
def test_duplicate_wrt_is_refused(mode, func, wrt):
    with pytest.raises(ValueError, match=r"compile: wrt lists input \d more than once"):
        symjac.compile(func, np.zeros(2), np.zeros(2), mode=mode, wrt=wrt)


@pytest.mark.parametrize("mode,func", MODES)
@pytest.mark.parametrize("wrt", [2, -1, (0, 5)])
def test_out_of_range_wrt_is_refused(mode, func, wrt):
    with pytest.raises(ValueError, match=r"compile: wrt index -?\d is out of range for 2 inputs"):
        symjac.compile(func, np.zeros(2), np.zeros(2), mode=mode, wrt=wrt)


@pytest.mark.parametrize("wrt", [True, 0.0, "0", (0, 1.0), ()])
def test_malformed_wrt_is_refused(wrt):
    with pytest.raises((TypeError, ValueError), match="compile: wrt"):
        symjac.compile(f2, np.zeros(2), np.zeros(2), wrt=wrt)


def test_from_sympy_wrt_is_checked():
    x, y = sympy.symbols("x y")
    with pytest.raises(ValueError, match="from_sympy: wrt lists input 0 more than once"):
        symjac.from_sympy(x * y, [[x], [y]], wrt=(0, 0))
    with pytest.raises(ValueError, match="from_sympy: wrt index 3 is out of range"):
        symjac.from_sympy(x * y, [[x], [y]], wrt=3)


def test_valid_wrt_still_agrees_with_jacobian():
    a, b = np.array([0.3, -0.7]), np.array([1.1, 0.4])
    cf = symjac.compile(f2, np.zeros(2), np.zeros(2), wrt=(1, 0))
    ja, jb = symjac.jacobian(f2, (a, b))
    got_b, got_a = cf(a, b)
    np.testing.assert_allclose(got_a, ja, rtol=1e-14)
    np.testing.assert_allclose(got_b, jb, rtol=1e-14)


f = lambda x: x.sin() * 2  # noqa: E731


@pytest.mark.parametrize("api", ["jacobian", "compile", "hessian"])
def test_long_double_is_refused(api):
    x = np.ones(3, dtype=np.longdouble)
    if np.finfo(np.longdouble).bits <= 64:
        pytest.skip("long double is float64 on this platform")
    call = {
        "jacobian": lambda: symjac.jacobian(f, x),
        "compile": lambda: symjac.compile(f, x),
        "hessian": lambda: symjac.hessian(lambda x: x.sin().sum(), x),
    }[api]
    with pytest.raises(errors.DtypeError, match=r"inputs\[0\] has dtype float128 \(long double\)"):
        call()


@pytest.fixture(scope="module")
def cf():
    return symjac.compile(f, np.zeros(3))


@pytest.mark.parametrize(
    "value,message",
    [
        (np.ones(3) + 0.5j, "argument 0 is complex"),
        (np.ones((4, 3), dtype=np.complex64), "argument 0 is complex"),
        (np.array([1.0, None, 2.0], dtype=object), "dtype object.*holds None"),
        (np.array([1.0, 2.0, 3.0], dtype=object), "argument 0 has dtype object"),
        (np.array(["1", "2", "3"]), "argument 0 has dtype <U1"),
        (np.ma.masked_array([1.0, 2.0, 3.0], mask=[0, 1, 0]), "argument 0 is a masked array"),
        (lambda: np.matrix([[1.0, 2.0, 3.0]]), "argument 0 is a numpy.matrix"),
    ],
)
def test_compiled_call_refuses_lossy_inputs(cf, value, message):
    with pytest.raises(TypeError, match=message):
        cf(value() if callable(value) else value)


def test_compiled_call_refuses_long_double(cf):
    if np.finfo(np.longdouble).bits <= 64:
        pytest.skip("long double is float64 on this platform")
    with pytest.raises(errors.DtypeError, match="argument 0 has dtype float128"):
        cf(np.ones(3, dtype=np.longdouble))


def test_compiled_product_names_the_vector():
    jvp = symjac.compile(f, np.zeros(3), mode="jvp")
    with pytest.raises(TypeError, match=r"v\[0\] is complex"):
        jvp(np.ones(3), v=np.ones(3) * 1j)


def test_lossless_inputs_still_work(cf):
    x = np.array([0.1, 0.2, 0.3])
    want = np.diag(2 * np.cos(x))
    np.testing.assert_allclose(cf(x.tolist()), want, rtol=1e-15)
    np.testing.assert_allclose(cf(np.array([0, 1, 2])), np.diag(2 * np.cos([0.0, 1.0, 2.0])), rtol=1e-15)
    np.testing.assert_allclose(cf(x.astype(np.float32)), np.diag(2 * np.cos(x.astype(np.float32))), rtol=1e-7)


@pytest.mark.parametrize(
    "value,message",
    [
        (lambda: np.matrix([[1.0, 2.0]]), r"inputs\[0\] is a numpy.matrix"),
        (np.ma.masked_array([1.0, 2.0], mask=[0, 1]), r"inputs\[0\] is a masked array"),
    ],
)
@pytest.mark.parametrize("api", [symjac.jacobian, symjac.compile])
def test_matrix_and_masked_inputs_are_refused(api, value, message):
    with pytest.raises(TypeError, match=message):
        api(f, value() if callable(value) else value)


def test_from_sympy_refuses_complex_expressions():
    x = sympy.symbols("x0:2")
    with pytest.raises(ValueError, match=r"outputs\[0\]\[0\] = I\*x0 is complex"):
        symjac.from_sympy(sympy.Matrix([x[0] * sympy.I, x[1]]), [x])
    with pytest.raises(ValueError, match=r"outputs\[1\] = .* is complex"):
        symjac.from_sympy((x[0], sympy.exp(sympy.I * x[1])), [x])
    q = sympy.symbols("q", real=True)
    real = symjac.from_sympy(sympy.re(sympy.exp(sympy.I * q)), [[q]])  # = cos(q)
    np.testing.assert_allclose(real(np.array([0.5])), [-np.sin(0.5)], rtol=1e-15)


@pytest.mark.parametrize(
    "func",
    [
        lambda x: x * x.any(),
        lambda x: x * x.all(),
        lambda x: x * np.any(x > 0),
        lambda x: x * np.all(x),
    ],
)
def test_boolean_reductions_are_refused_clearly(func):
    with pytest.raises(errors.UntraceableError, match=r"cannot trace (numpy\.|\.)(any|all).*symjac.where"):
        symjac.jacobian(func, np.ones(2))


def test_torch_boolean_reductions_are_refused_clearly():
    torch = pytest.importorskip("torch")
    with pytest.raises(errors.UntraceableError, match="cannot trace torch.any"):
        symjac.jacobian(lambda x: x * torch.any(x), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("batch", [(0,), (2, 0), (0, 5)])
@pytest.mark.parametrize("kwargs", [{}, {"value": True}, {"mode": "jvp"}, {"sparse": "csr"}])
def test_empty_batch_gives_empty_results(batch, kwargs):
    cf = symjac.compile(f, np.zeros(3), **kwargs)
    ones = (1,) * len(batch)
    product = kwargs.get("mode") == "jvp"
    full = cf(np.ones(ones + (3,)), **({"v": np.ones(ones + (3,))} if product else {}))
    empty = cf(np.zeros(batch + (3,)), **({"v": np.zeros(batch + (3,))} if product else {}))
    for got, ref in zip(
        empty if isinstance(empty, tuple) else (empty,),
        full if isinstance(full, tuple) else (full,),
        strict=True,
    ):
        assert got.shape == batch + ref.shape[len(batch) :] and got.dtype == ref.dtype


def test_eliminate_zeros_on_a_sparse_result():
    pytest.importorskip("scipy")
    cs = symjac.compile(lambda x: x.sin() * x[::-1], np.zeros(4), sparse="csr")
    x = np.array([0.0, 1.0, 2.0, 0.0])
    first, second = cs(x), cs(x)
    dense = first.toarray()
    first.eliminate_zeros()
    assert first.nnz < second.nnz
    np.testing.assert_array_equal(first.toarray(), dense)
    np.testing.assert_array_equal(second.toarray(), dense)  # the other result is untouched
    np.testing.assert_array_equal(cs(x).indices, second.indices)


def test_cache_false_survives_pickling(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMJAC_CACHE_DIR", str(tmp_path))
    cf = symjac.compile(lambda x: x.cos() * 3.5, np.zeros(2), cache=False)
    again = pickle.loads(pickle.dumps(cf))
    assert again._cache_name is None and not list(tmp_path.iterdir())
    np.testing.assert_array_equal(again(np.ones(2)), cf(np.ones(2)))
    cached = pickle.loads(pickle.dumps(symjac.compile(lambda x: x.cos() * 3.5, np.zeros(2))))
    assert cached._cache_name is not None and cached.cache_hit
