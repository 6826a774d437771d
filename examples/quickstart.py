"""symjac quickstart: the three examples of torch.autograd.functional.jacobian's documentation.

For each, print the exact Jacobian as SymPy sees it, then its numeric value from the compiled
kernel, and check it against torch's autograd when torch is installed.
"""

import numpy as np
import sympy

import symjac

try:
    import torch
    from torch.autograd.functional import jacobian as torch_jacobian
except ImportError:  # torch is optional: the numbers are then checked by finite differences
    torch = None


def exp_reducer(x):
    return x.exp().sum(dim=1)


def exp_adder(x, y):
    return 2 * x.exp() + 3 * y


def central_difference(func, inputs, j, eps=1e-6):
    """Finite-difference Jacobian block of func's output with respect to inputs[j]."""
    x = inputs[j]
    cols = []
    for k in range(x.size):
        step = np.zeros(x.size)
        step[k] = eps
        plus = list(inputs)
        minus = list(inputs)
        plus[j] = x + step.reshape(x.shape)
        minus[j] = x - step.reshape(x.shape)
        cols.append((np.asarray(func(*plus)) - np.asarray(func(*minus))) / (2 * eps))
    out_shape = np.asarray(func(*inputs)).shape
    return np.stack(cols, axis=-1).reshape(out_shape + x.shape)


def numeric_exp_reducer(x):
    return np.exp(x).sum(axis=1)


def numeric_exp_adder(x, y):
    return 2 * np.exp(x) + 3 * y


rng = np.random.default_rng(0)
examples = [
    ("exp_reducer", exp_reducer, numeric_exp_reducer, (rng.random((2, 2)),), {}),
    (
        "exp_reducer, create_graph=True",
        exp_reducer,
        numeric_exp_reducer,
        (rng.random((2, 2)),),
        {"create_graph": True},
    ),
    ("exp_adder", exp_adder, numeric_exp_adder, (rng.random(2), rng.random(2)), {}),
]

for title, func, numeric, inputs, options in examples:
    print(f"== {title} ==")
    view = symjac.symbolic(func, *inputs)
    print("exact Jacobian (rows: output elements, columns: input elements):")
    sympy.pprint(view.matrix)
    args = inputs[0] if len(inputs) == 1 else inputs
    result = symjac.jacobian(func, args, **options)
    print("value:", result)
    blocks = result if isinstance(result, tuple) else (result,)
    for j, block in enumerate(blocks):
        expected = central_difference(numeric, list(inputs), j)
        assert np.allclose(block, expected, rtol=1e-6, atol=1e-8), (title, block, expected)
    if torch is not None:
        targs = tuple(torch.from_numpy(a) for a in inputs)
        targs = targs[0] if len(targs) == 1 else targs
        ours = symjac.jacobian(func, targs, **options)
        theirs = torch_jacobian(func, targs, **options)
        ours = ours if isinstance(ours, tuple) else (ours,)
        theirs = theirs if isinstance(theirs, tuple) else (theirs,)
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert torch.allclose(a, b.detach(), rtol=1e-12, atol=1e-12), (title, a, b)
        print("matches torch.autograd.functional.jacobian to 1e-12 (float64)")
    print()
print("quickstart OK")
