"""Write docs/operations.md from the op table: ``python -m symjac.trace.oplist > docs/operations.md``."""

from __future__ import annotations

from . import names, ops

REWRITES = [
    (
        "`if x > 0: ... else: ...` (Python control flow on a traced value)",
        "`symjac.where(x > 0, a, b)` (or `np.where` / `torch.where`); "
        "`maximum`, `minimum`, `abs`, `clip` for the usual cases",
    ),
    (
        "`float(x)`, `int(x)`, `x.item()`, `x.tolist()`, `x.numpy()`",
        "keep the value a tensor and use tensor operations",
    ),
    (
        "indexing with a traced value (`a[x[0]]`)",
        "index with Python ints, slices or constant arrays; select with `symjac.where`",
    ),
    (
        "`sort`, `argsort`, `argmax`, `argmin`, `nonzero`, `unique`, `topk`, `median`",
        "`amax`/`amin`/`maximum` for extreme values, `symjac.where` for selections, "
        "constant index arrays for reordering",
    ),
    (
        "`np.exp(x, out=y)`, item assignment into an input",
        "assign the result (`y = np.exp(x)`); copy first (`y = x.clone()`, then `y[0] = ...`)",
    ),
    (
        "random draws (`torch.rand_like(x)`, `torch.nn.functional.dropout`)",
        "draw outside the function and pass the noise in as an input or captured constant",
    ),
    (
        "`any`, `all` of traced values (`x.any()`, `np.all(x > 0)`)",
        "choose values elementwise with `symjac.where`, or decide outside the function and pass the flag in",
    ),
    ("`torch.max(x, dim).indices`", "`x.amax(dim)` or `.values` (indices depend on the data)"),
    (
        "integer casts (`.long()`, `.int()`)",
        "allowed, but the result is a constant (derivative 0), as in torch",
    ),
    (
        "`np.interp` with traced breakpoints `xp`, or `period=`",
        "constant, increasing `xp` (x and fp may be traced); wrap x into one period first",
    ),
    (
        "det / inv / solve / cholesky of matrices larger than 6x6",
        "exact symbolic forms grow factorially; restructure the model",
    ),
]


def _names(items) -> str:
    return ", ".join(f"`{n}`" for n in items) if items else "—"


def markdown() -> str:
    lines = [
        "# Supported operations",
        "",
        "Generated from the op table (`symjac/trace/ops.py` and `symjac/trace/names.py`) by "
        "`python -m symjac.trace.oplist`; do not edit by hand.",
        "",
        "## Elementwise",
        "",
        "| op | NumPy | torch | method | test domain |",
        "|---|---|---|---|---|",
    ]
    for e in ops.ELEMENTWISE_OPS:
        domain = "nonzero" if len(e.domain) > 2 else f"({e.domain[0]:g}, {e.domain[1]:g})"
        lines.append(f"| {e.name} | {_names(e.numpy)} | {_names(e.torch)} | {_names(e.methods)} | {domain} |")
    lines += [
        "",
        "## Reductions, shapes, linear algebra, activations",
        "",
        "| op | NumPy | torch | method |",
        "|---|---|---|---|",
    ]
    for api in names.API:
        if api.name in ("sort", "random", "boolean reductions"):
            continue
        lines.append(f"| {api.name} | {_names(api.numpy)} | {_names(api.torch)} | {_names(api.methods)} |")
    lines += [
        "",
        "Operators: `+ - * / // % ** @`, unary `-`, `abs()`, comparisons (masks), `& | ~` on masks, "
        "indexing (ints, slices, `None`, `...`, integer and boolean constant arrays) "
        "and index assignment on a copy. "
        "`np.array([...])` of traced scalars builds a tensor.",
        "",
        "Names that start with `scipy.` are SciPy functions that are not ufuncs: while a function "
        "is traced, symjac swaps them in SciPy's modules and in the names the function's module "
        "(or enclosing function) imported from them. SciPy's ufuncs (`scipy.special.expit`, "
        "`erf`, `xlogy`, `ndtr`, ...) dispatch by themselves under their NumPy-column names. "
        "`torch.special.NAME` appears as `special_NAME`.",
        "",
        "`matrix_exp` is a Taylor polynomial of degree 12 at A / 2**s with s squarings (s from "
        "the 1-norm of A, per evaluation); it agrees with `scipy.linalg.expm` to about 1e-13 "
        "relative and gives NaN for norms above about 4096. Its exact formulas are "
        "`MatrixExpN_i_j` functions, which `sympy.lambdify` evaluates; its kernels are large "
        "(a 3x3 Jacobian takes seconds to build), so keep it to small matrices.",
        "",
        "## What cannot be traced, and what to write instead",
        "",
        "| construct | write instead |",
        "|---|---|",
    ]
    lines += [f"| {a} | {b} |" for a, b in REWRITES]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
