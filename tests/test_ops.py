"""The op table drives these tests: every elementwise entry and every API example is checked
against torch.autograd.functional in float64, in each calling style the entry supports."""

import math

import numpy as np
import pytest
from helpers import assert_same, to_torch

import symjac
from symjac.trace import ops
from symjac.trace.names import API

torch = pytest.importorskip("torch")
AF = torch.autograd.functional

# Internal entries, reached through front-end functions with arguments and tested there.
INTERNAL = {"clamp", "where", "mask_to_float", "elu", "leaky_relu", "detach", "pos", "hardtanh"}
# NumPy-only names whose torch twin has another spelling or needs an explicit oracle.
ORACLES = {
    "floor_divide": lambda x, y: torch.floor(x / y),  # torch cannot differentiate floor_divide
    "cbrt": lambda x: torch.sign(x) * torch.abs(x) ** (1 / 3),
    # torch's hardsigmoid backward uses the float32 1/6 even in float64; the same values:
    "hardsigmoid": lambda x: torch.where((x > -3) & (x < 3), x / 6 + 0.5, (x >= 3).to(x.dtype)),
    # torch.heaviside has no derivative; the same values written with where do
    "heaviside": lambda x, y: (
        torch.where(x > 0, torch.ones_like(x), torch.zeros_like(x))
        + torch.where(x == 0, y, torch.zeros_like(y))
    ),
}
BOOLEAN = [e for e in ops.ELEMENTWISE_OPS if e.boolean]
SMOOTH = [e for e in ops.ELEMENTWISE_OPS if not e.boolean and e.name not in INTERNAL]


def _sample(domain, shape, rng):
    low, high = domain[0], domain[1]
    if len(domain) > 2:  # nonzero: keep away from 0
        return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    low = max(low, -2.0) + (0.1 if math.isfinite(domain[0]) else 0.0)
    high = min(high, 2.0) - (0.1 if math.isfinite(domain[1]) else 0.0)
    return rng.uniform(low, high, shape)


def _nargs(e):
    return ops._nargs(e)


def _torch_oracle(e):
    if e.name in ORACLES:
        return ORACLES[e.name]
    for name in e.torch:
        fn = getattr(torch, name, None)
        if fn is not None and not name.startswith("__"):
            return fn
    special = [n for n in e.torch if n.startswith("special_")]
    if special:
        return getattr(torch.special, special[0][len("special_") :])
    return getattr(torch.nn.functional, e.torch[0])


def _scipy_special():
    try:
        import scipy.special
    except ImportError:
        return None
    return scipy.special


def _styles(e):
    styles = [("numpy", n) for n in e.numpy if hasattr(np, n)]
    # scipy.special's ufuncs reach symjac through __array_ufunc__ under their NumPy-style names
    sp = _scipy_special()
    styles += [("scipy.special", n) for n in e.numpy if not hasattr(np, n) and sp and hasattr(sp, n)]
    styles += [("torch", n) for n in e.torch if hasattr(torch, n) and not n.startswith("__")]
    styles += [
        ("torch.special", n)
        for n in e.torch
        if n.startswith("special_") and hasattr(torch.special, n[len("special_") :])
    ]
    styles += [
        ("torch.nn.functional", n)
        for n in e.torch
        if not hasattr(torch, n) and hasattr(torch.nn.functional, n)
    ]
    styles += [("method", n) for n in e.methods if hasattr(torch.Tensor, n) or n in e.numpy]
    return styles


def _call(style, name):
    if style == "numpy":
        return getattr(np, name)
    if style == "scipy.special":
        return getattr(_scipy_special(), name)
    if style == "torch":
        return getattr(torch, name)
    if style == "torch.special":
        return getattr(torch.special, name[len("special_") :])
    if style == "torch.nn.functional":
        return getattr(torch.nn.functional, name)
    return lambda x, *rest: getattr(x, name)(*rest)


ELEMENTWISE_PARAMS = [
    pytest.param(e, style, name, id=f"{e.name}-{style}-{name}") for e in SMOOTH for style, name in _styles(e)
]


@pytest.mark.parametrize("entry,style,name", ELEMENTWISE_PARAMS)
def test_elementwise_entry(entry, style, name, rng):
    n = _nargs(entry)
    xs = tuple(_sample(entry.domain, (3,), rng) for _ in range(n))
    fn, oracle = _call(style, name), _torch_oracle(entry)
    targs = to_torch(xs) if n > 1 else to_torch(xs[0])
    numpy_style = style in ("numpy", "scipy.special")
    ours_in = to_torch(xs) if not numpy_style else xs
    args = ours_in if n > 1 else ours_in[0]
    value = symjac.vjp(fn, args, np.ones(3) if numpy_style else torch.ones(3, dtype=torch.float64))[0]
    expected = oracle(*(targs if n > 1 else (targs,)))
    np.testing.assert_allclose(np.asarray(value), expected.numpy(), rtol=1e-12, atol=1e-14)
    assert_same(symjac.jacobian(fn, args), AF.jacobian(oracle, targs), np.float64)
    scalar = lambda *a: fn(*a).sum()  # noqa: E731
    assert_same(symjac.hessian(scalar, args), AF.hessian(lambda *a: oracle(*a).sum(), targs), np.float64)


@pytest.mark.parametrize("entry", BOOLEAN, ids=lambda e: e.name)
def test_boolean_entries_select(entry, rng):
    x, y = rng.standard_normal(4), rng.standard_normal(4)
    np_name = entry.numpy[0]
    two = _nargs(entry) == 2
    f = lambda a, b: symjac.where(
        getattr(np, np_name)(a > 0, b > 0)
        if "logical" in np_name and two  # noqa: E731
        else getattr(np, np_name)(a > 0)
        if not two
        else getattr(np, np_name)(a, b),
        a * b,
        a + b,
    )
    mask = (
        getattr(np, np_name)(x > 0, y > 0)
        if "logical" in np_name and two
        else (getattr(np, np_name)(x > 0) if not two else getattr(np, np_name)(x, y))
    )
    Ja, Jb = symjac.jacobian(f, (x, y))
    np.testing.assert_array_equal(np.diag(Ja), np.where(mask, y, 1.0))
    np.testing.assert_array_equal(np.diag(Jb), np.where(mask, x, 1.0))


EXAMPLE_PARAMS = [
    pytest.param(api, k, style, id=f"{api.name}-{k}-{style}")
    for api in API
    for k, ex in enumerate(api.examples)
    for style in ("numpy", "torch", "method", "method-on-numpy")
    if getattr(ex, "numpy" if style == "numpy" else "method" if style.startswith("method") else "torch")
    is not None
]


# Rows whose NumPy-style examples call SciPy (loaded here, before tracing, as user code does).
SCIPY_ROWS = {"scipy", "matrix_exp"}


def _import_scipy_for(api, style):
    if api.name in SCIPY_ROWS and style == "numpy":
        pytest.importorskip("scipy.special")
        pytest.importorskip("scipy.linalg")


def _structure_sum(out):
    outs = out if isinstance(out, tuple) else (out,)
    total = outs[0].sum()
    for o in outs[1:]:
        total = total + o.sum()
    return total


@pytest.mark.parametrize("api,k,style", EXAMPLE_PARAMS)
def test_api_example(api, k, style, rng):
    ex = api.examples[k]
    _import_scipy_for(api, style)
    xs = tuple(rng.uniform(ex.low, ex.high, s) for s in ex.shapes)
    oracle = lambda *a: (ex.oracle or ex.torch)(torch, *a)  # noqa: E731
    if style == "numpy":
        fn, args = (lambda *a: ex.numpy(np, *a)), xs
    elif style == "torch":
        fn, args = (lambda *a: ex.torch(torch, *a)), to_torch(xs)
    else:
        fn, args = ex.method, (to_torch(xs) if style == "method" else xs)
    targs = to_torch(xs)
    one = len(xs) == 1
    ours = symjac.jacobian(fn, args[0] if one else args)
    theirs = AF.jacobian(oracle, targs[0] if one else targs)
    assert_same(ours, theirs, np.float64)
    H = symjac.hessian(lambda *a: _structure_sum(fn(*a)), args[0] if one else args)
    Ht = AF.hessian(lambda *a: _structure_sum(oracle(*a)), targs[0] if one else targs)
    assert_same(H, Ht, np.float64)


def test_every_api_row_has_examples_or_is_a_refusal():
    for api in API:
        assert api.examples or api.name in ("metadata", "sort", "random", "boolean reductions"), api.name


def test_small_exact_linear_algebra_is_exact():
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    view = symjac.symbolic(lambda a: np.linalg.det(a), A)
    import sympy

    a = view.inputs[0]
    assert sympy.simplify(view.outputs[0][()] - (a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0])) == 0
    with pytest.raises(NotImplementedError, match="too large for an exact symbolic det"):
        symjac.jacobian(np.linalg.det, np.eye(7))


def test_operations_doc_is_generated_from_the_table():
    import pathlib

    from symjac.trace import oplist

    doc = pathlib.Path(__file__).parent.parent / "docs" / "operations.md"
    assert doc.read_text() == oplist.markdown(), (
        "regenerate: python -m symjac.trace.oplist > docs/operations.md"
    )


# --- issue 13: exact formulas use only standard SymPy functions -------------------------------


NO_STANDARD_FORM = {"matrix_exp"}


def _formula_cases():
    for e in SMOOTH:
        styles = _styles(e)
        if styles:
            yield pytest.param(("elementwise", e, styles[0]), id=f"{e.name}")
    for api in API:
        for k in range(len(api.examples)):
            yield pytest.param(("api", api, k), id=f"{api.name}-{k}")


def _formula_function(case, rng):
    if case[0] == "elementwise":
        _, e, (style, name) = case
        n = _nargs(e)
        xs = tuple(_sample(e.domain, (3,), rng) for _ in range(n))
        fn = _call(style, name)
        numpy_style = style in ("numpy", "scipy.special")
        return fn, (xs if numpy_style else to_torch(xs))
    _, api, k = case
    ex = api.examples[k]
    xs = tuple(rng.uniform(ex.low, ex.high, s) for s in ex.shapes)
    if ex.numpy is not None:
        _import_scipy_for(api, "numpy")
        return (lambda *a: ex.numpy(np, *a)), xs
    if ex.torch is not None:
        return (lambda *a: ex.torch(torch, *a)), to_torch(xs)
    return ex.method, xs


@pytest.mark.parametrize("case", list(_formula_cases()))
def test_formula_lambdifies_with_standard_sympy(case, rng):
    import sympy

    fn, args = _formula_function(case, rng)
    view = symjac.symbolic(fn, *args)
    symbols = [s for x in view.inputs for s in x.flat]
    known = {
        v
        for v in vars(sympy).values()
        if isinstance(v, type) and issubclass(v, (sympy.Function, sympy.Piecewise))
    }
    for f in view.matrix.atoms(sympy.Function):
        # expm has no closed form in SymPy: its entries lambdify through their _imp_
        if not (case[0] == "api" and case[1].name in NO_STANDARD_FORM):
            assert type(f) in known, f"{type(f).__name__} is not a standard SymPy function"
    evaluate = sympy.lambdify(symbols, view.matrix, "numpy")
    point = np.concatenate([np.asarray(a, dtype=float).reshape(-1) for a in args])
    ours = np.asarray(evaluate(*point), dtype=float)
    jac = symjac.jacobian(fn, args[0] if len(args) == 1 else tuple(args))
    # view.matrix: a row per output element, a column per input element, in order
    rows = jac if view._call.out_tuple else (jac,)
    expected = np.vstack(
        [
            np.hstack(
                [np.asarray(b, dtype=float).reshape(o.size, -1) for b in (row if len(args) > 1 else (row,))]
            )
            for row, o in zip(rows, view.outputs, strict=True)
        ]
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-10)
