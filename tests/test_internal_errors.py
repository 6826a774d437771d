"""A symjac bug reaches the user as one InternalError that says so; the user's own exceptions
and symjac's deliberate messages pass through untouched (issue 13)."""

import numpy as np
import pytest

import symjac
from symjac import cli, errors
from symjac.trace import ops

X = np.array([0.5, -1.0])


@pytest.fixture
def broken_sum(monkeypatch):
    # A genuine internal failure: an evaluator with the wrong signature fails with a TypeError
    # inside symjac's own frame (the callee's frame is never created).
    monkeypatch.setitem(ops.PRIMITIVES, "sum", ops.Primitive("sum", ops.number))


def _assert_internal(excinfo, api):
    exc = excinfo.value
    message = str(exc)
    assert type(exc) is errors.InternalError
    assert message.startswith(f"symjac.{api}: internal error in symjac")
    assert "while processing the operation `sum`" in message
    assert "please report it" in message
    assert isinstance(exc.__cause__, TypeError)  # chained: raise ... from exc


@pytest.mark.parametrize("api", ["jacobian", "hessian", "vjp", "jvp", "hvp", "vhp"])
def test_drop_in_functions_report_internal_errors(broken_sum, api):
    f = getattr(symjac, api)
    with pytest.raises(errors.InternalError) as excinfo:
        extra = (X,) if api in ("jvp", "hvp", "vhp") else ()
        f(lambda x: (x**2).sum(), X, *extra, expand="elements")
    _assert_internal(excinfo, api)


def test_compile_and_symbolic_report_internal_errors(broken_sum):
    with pytest.raises(errors.InternalError) as excinfo:
        symjac.compile(lambda x: (x**2).sum(), X)(X)
    assert "internal error in symjac" in str(excinfo.value)
    with pytest.raises(errors.InternalError) as excinfo:
        symjac.symbolic(lambda x: (x**2).sum(), X).matrix  # noqa: B018
    assert "internal error in symjac" in str(excinfo.value)


def test_linearize_reports_internal_errors(broken_sum):
    with pytest.raises(errors.InternalError) as excinfo:
        symjac.linearize(lambda x, u: x * u.sum(), X, X)
    assert "internal error in symjac" in str(excinfo.value)
    assert "please report it" in str(excinfo.value)


def test_the_users_exceptions_pass_through():
    def divides(x):
        return x * (1 / 0)

    def bad_shapes(x):
        return x + np.ones(2) @ np.ones(3)

    class Mine(ValueError):
        pass

    def raises_own(x):
        raise Mine("my message")

    for f, kind in ((divides, ZeroDivisionError), (bad_shapes, ValueError), (raises_own, Mine)):
        for call in (
            lambda f=f: symjac.jacobian(f, X),
            lambda f=f: symjac.compile(f, X),
            lambda f=f: symjac.symbolic(f, X),
        ):
            with pytest.raises(kind) as excinfo:
                call()
            assert type(excinfo.value) is kind
            assert not isinstance(excinfo.value, errors.InternalError)


def test_deliberate_messages_pass_through():
    with pytest.raises(ValueError, match="cannot reshape") as excinfo:
        symjac.jacobian(lambda x: x.reshape(3), X)
    assert type(excinfo.value) is ValueError
    with pytest.raises(errors.UnsupportedOpError):
        symjac.jacobian(lambda x: np.nextafter(x, 1.0), X)


def test_cli_tells_internal_errors_from_the_users(tmp_path, monkeypatch, capsys):
    model = tmp_path / "model_for_cli.py"
    model.write_text("def f(x):\n    return (x ** 2).sum()\n\ndef g(x):\n    return x * (1 // 0)\n")
    assert cli.main(["show", f"{model}:g", "--shape", "2"]) == 2  # the user's error: usage status
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "internal error" not in err
    monkeypatch.setitem(ops.PRIMITIVES, "sum", ops.Primitive("sum", ops.number))
    assert cli.main(["show", f"{model}:f", "--shape", "2"]) == 1
    err = capsys.readouterr().err
    assert "internal error" in err and "please report it" in err
