"""Differential test: random compositions of table ops, random shapes and broadcasting, against torch.

A failing case shrinks (hypothesis) to a minimal expression tree; add that tree to REGRESSIONS
so it is checked on every run.
"""

import numpy as np
import pytest
from helpers import assert_same, to_torch
from hypothesis import example, given
from hypothesis import strategies as st

import symjac

torch = pytest.importorskip("torch")
AF = torch.autograd.functional

UNARY = {
    "sin": lambda a: a.sin(),
    "cos": lambda a: a.cos(),
    "tanh": lambda a: a.tanh(),
    "exp": lambda a: (a / 4).exp(),
    "square": lambda a: a * a,
    "abs": lambda a: a.abs(),
    "sigmoid": lambda a: a.sigmoid(),
    "atan": lambda a: a.atan(),
    "neg": lambda a: -a,
    "log1p_sq": lambda a: (a * a).log1p(),
    "sqrt_soft": lambda a: (1 + a * a).sqrt(),
    "sum_keep": lambda a: a.sum(dim=-1, keepdim=True),
    "mean0_keep": lambda a: a.mean(dim=0, keepdim=True) if a.dim() > 0 else a,
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1 + b * b),
    "max": lambda a, b: (
        torch.maximum(a, b)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        else np.maximum(a, b)
    ),
    "pow": lambda a, b: (1 + a * a) ** (b.tanh()),
}

leaves = st.sampled_from([("x",), ("y",), ("const", 0.5), ("const", -2.0)])
trees = st.recursive(
    leaves,
    lambda sub: st.one_of(
        st.tuples(st.sampled_from(sorted(UNARY)), sub),
        st.tuples(st.sampled_from(sorted(BINARY)), sub, sub),
    ),
    max_leaves=6,
)
shape_pairs = st.sampled_from(
    [((3,), (3,)), ((2, 3), (3,)), ((2, 3), (1, 3)), ((2, 3), (2, 1)), ((), (2,)), ((2, 2), (2, 2))]
)


def build(tree):
    def f(x, y):
        def ev(t):
            if t[0] == "x":
                return x
            if t[0] == "y":
                return y
            if t[0] == "const":
                return t[1] + 0 * x  # a constant tensor shaped like x
            if t[0] in UNARY:
                return UNARY[t[0]](ev(t[1]))
            return BINARY[t[0]](ev(t[1]), ev(t[2]))

        return ev(tree) + 0 * x + 0 * y  # always a tensor depending on both inputs' shapes

    return f


REGRESSIONS = [
    (("max", ("x",), ("x",)), ((3,), (3,))),  # a tie: torch splits the derivative 0.5/0.5
]


@given(trees, shape_pairs, st.integers(0, 2**16))
@example(*REGRESSIONS[0], 0)
def test_random_expressions_match_torch(tree, shapes, seed):
    rng = np.random.default_rng(seed)
    x, y = (rng.uniform(-1.5, 1.5, s) for s in shapes)
    f = build(tree)
    tx, ty = to_torch((x, y))
    expected = AF.jacobian(f, (tx, ty))
    assert_same(symjac.jacobian(f, (tx, ty)), expected, np.float64, expect_torch=True)
    out, _ = symjac.jvp(f, (tx, ty), (torch.ones_like(tx), torch.ones_like(ty)))
    torch.testing.assert_close(out, f(tx, ty), rtol=1e-12, atol=1e-12)
