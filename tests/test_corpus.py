"""The idiomatic model corpus (tests/corpus/) through jacobian, compile and symbolic.

Every model is run as written. The reference is torch.autograd on the model itself where
autograd can differentiate it, else central finite differences of the model run on numbers.
"""

import importlib
import pathlib
import sys

import numpy as np
import pytest
import sympy

import symjac

torch = pytest.importorskip("torch")
sys.path.insert(0, str(pathlib.Path(__file__).parent))

from corpus import MODELS  # noqa: E402

# Models that need operations this branch does not have yet (they come with issue 13 item 4).
MISSING_OPS: dict[str, str] = {}  # models whose operations are not in the op table yet


def _load(name):
    return importlib.import_module(f"corpus.{name}")


def _as_numpy(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _like(x, value):
    return torch.as_tensor(value, dtype=x.dtype) if isinstance(x, torch.Tensor) else value


def _reference(model, inputs):
    """The Jacobian blocks d out / d inputs[j] as float64 arrays of shape out + in."""
    if model.ORACLE == "autograd":
        J = torch.autograd.functional.jacobian(model.f, inputs if len(inputs) > 1 else inputs[0])
        return [_as_numpy(b).astype(np.float64) for b in (J if len(inputs) > 1 else (J,))]
    blocks = []
    for j, x in enumerate(inputs):
        base = _as_numpy(x).astype(np.float64)
        out0 = _as_numpy(model.f(*inputs))
        block = np.zeros(out0.shape + base.shape)
        h = 1e-6
        for idx in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[idx] += h
            minus[idx] -= h
            args_p = list(inputs)
            args_m = list(inputs)
            args_p[j], args_m[j] = _like(x, plus), _like(x, minus)
            diff = _as_numpy(model.f(*args_p)) - _as_numpy(model.f(*args_m))
            block[(...,) + idx] = diff / (2 * h)
        blocks.append(block)
    return blocks


def _tolerance(model, inputs):
    single = any(isinstance(x, torch.Tensor) and x.dtype == torch.float32 for x in inputs)
    if single:
        return {"rtol": 1e-4, "atol": 1e-5}
    if model.ORACLE == "fd":
        return {"rtol": 1e-6, "atol": 1e-7}
    return {"rtol": 1e-10, "atol": 1e-12}


def _blocks(result, n):
    return list(result) if n > 1 else [result]


def _params(name):
    marks = [pytest.mark.xfail(strict=True, reason=MISSING_OPS[name])] if name in MISSING_OPS else []
    return pytest.param(name, marks=marks, id=name)


PARAMS = [_params(name) for name in MODELS]


@pytest.mark.parametrize("name", PARAMS)
def test_jacobian(name):
    model = _load(name)
    inputs = model.inputs()
    ours = symjac.jacobian(model.f, inputs if len(inputs) > 1 else inputs[0])
    for ours_b, ref in zip(_blocks(ours, len(inputs)), _reference(model, inputs), strict=True):
        assert type(ours_b) is type(inputs[0])  # torch in, torch out; NumPy in, NumPy out
        assert ours_b.dtype == inputs[0].dtype  # float32 modules stay float32
        np.testing.assert_allclose(_as_numpy(ours_b), ref, **_tolerance(model, inputs))


@pytest.mark.parametrize("name", PARAMS)
def test_compile_point_and_batch(name):
    model = _load(name)
    inputs = model.inputs()
    cf = symjac.compile(model.f, *inputs)
    tol = _tolerance(model, inputs)
    refs = _reference(model, inputs)
    for ours_b, ref in zip(_blocks(cf(*inputs), len(inputs)), refs, strict=True):
        np.testing.assert_allclose(_as_numpy(ours_b), ref, **tol)
    # A batch of 3 points: the example point shifted along a fixed direction.
    shifts = (0.0, 0.05, -0.08)
    points = [
        tuple(
            _like(x, _as_numpy(x) + s * np.cos(np.arange(_as_numpy(x).size)).reshape(x.shape)) for x in inputs
        )
        for s in shifts
    ]
    batch = tuple(_like(inputs[j], np.stack([_as_numpy(p[j]) for p in points])) for j in range(len(inputs)))
    out = _blocks(cf(*batch), len(inputs))
    for k, point in enumerate(points):
        for ours_b, ref in zip(out, _reference(model, point), strict=True):
            np.testing.assert_allclose(_as_numpy(ours_b)[k], ref, **tol)


@pytest.mark.parametrize("name", PARAMS)
def test_symbolic(name):
    model = _load(name)
    inputs = model.inputs()
    view = symjac.symbolic(model.f, *inputs)
    symbols = [s for arr in view.inputs for s in arr.flat]
    values = np.concatenate([_as_numpy(x).astype(np.float64).ravel() for x in inputs])
    matrix = np.array(sympy.lambdify(symbols, view.matrix, "numpy")(*values), dtype=float)
    refs = _reference(model, inputs)
    n_out = refs[0].size // _as_numpy(inputs[0]).size
    expected = np.concatenate([r.reshape(n_out, -1) for r in refs], axis=1)
    tol = _tolerance(model, inputs)
    np.testing.assert_allclose(matrix, expected, rtol=max(tol["rtol"], 1e-6), atol=max(tol["atol"], 1e-7))
