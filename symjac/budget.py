"""Refuse a build whose size would exhaust memory or time, before any of it is spent.

Every element of every traced array becomes a SymPy expression (about a kilobyte, and about a
millisecond of build time with its derivative and code), and a dense derivative result is
allocated whole: ``jacobian(lambda x: 2 * x, np.zeros(10**7))`` grew to 8 GB in 90 s without
a word. The estimate below reads only the traced graph's shapes, so it is free.

The budget is ``MAX_ELEMENTS`` symbolic elements (a module setting; ``None`` reads the
environment variable ``SYMJAC_MAX_ELEMENTS``, else ``DEFAULT_MAX_ELEMENTS``). A dense result
may hold ``RESULT_ENTRIES_PER_ELEMENT`` times as many entries: each is one double.
"""

from __future__ import annotations

import math
import os

DEFAULT_MAX_ELEMENTS = 1_000_000
RESULT_ENTRIES_PER_ELEMENT = 256  # a result entry is 8 bytes, a symbolic element ~1-2 KB
BYTES_PER_ELEMENT = 1500
MAX_ELEMENTS: int | None = None


class BuildTooLargeError(MemoryError):
    """The estimated build exceeds the budget (see :mod:`symjac.budget`)."""


def max_elements() -> int:
    """The budget in symbolic elements: ``MAX_ELEMENTS``, ``$SYMJAC_MAX_ELEMENTS`` or the default."""
    if MAX_ELEMENTS is not None:
        return int(MAX_ELEMENTS)
    text = os.environ.get("SYMJAC_MAX_ELEMENTS", "").strip()
    if not text:
        return DEFAULT_MAX_ELEMENTS
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"SYMJAC_MAX_ELEMENTS must be a number of elements, got {text!r}") from None


def symbolic_elements(graph) -> int:
    """How many element expressions expanding ``graph`` builds: one per element of each node."""
    return sum(math.prod(shape) for shape, _, _ in graph.meta)


def result_entries(mode: str, n_in: int, n_out: int) -> int:
    """Entries of the dense results of ``mode`` for ``n_in`` input and ``n_out`` output elements."""
    if mode == "jacobian":
        return n_out * n_in
    if mode == "hessian":
        return n_in * n_in
    return n_in + n_out  # products: vectors


def check(mode: str, graph, n_in: int, n_out: int, dense: bool = True, where: str = "symjac") -> None:
    """Raise BuildTooLargeError when building ``mode`` of ``graph`` would exceed the budget.

    Example:
        >>> import numpy as np, symjac
        >>> symjac.jacobian(lambda x: 2 * x, np.zeros(10**7))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        symjac.budget.BuildTooLargeError: symjac.jacobian: ...
    """
    budget = max_elements()
    elements = symbolic_elements(graph)
    entries = result_entries(mode, n_in, n_out) if dense else 0
    if elements <= budget and entries <= budget * RESULT_ENTRIES_PER_ELEMENT:
        return
    gigabytes = (elements * BYTES_PER_ELEMENT + entries * 8) / 1e9
    minutes = elements * 1e-3 / 60
    compile_hint = (
        "sparse='csr' for a sparse Jacobian"
        if where == "symjac.compile"
        else "symjac.compile (once per function, not per call; sparse='csr' for a sparse Jacobian)"
    )
    raise BuildTooLargeError(
        f"{where}: the {mode} of a function with {n_in:,} input and {n_out:,} output elements would "
        f"build {elements:,} symbolic elements and a dense result of {entries:,} entries "
        f"(estimated {gigabytes:,.1f} GB and {minutes:,.0f} min), over the budget of {budget:,} "
        f"elements ({budget * RESULT_ENTRIES_PER_ELEMENT:,} result entries). symjac expands every "
        f"element; for large arrays use {compile_hint}, expand='arrays' (array-level rules, no expansion), "
        "or a vjp/jvp product instead of the full matrix; raise the budget with "
        "SYMJAC_MAX_ELEMENTS or symjac.budget.MAX_ELEMENTS"
    )


def check_result(mode: str, n_in: int, n_out: int, where: str = "symjac") -> None:
    """Raise BuildTooLargeError when ``mode``'s dense result alone would exceed the budget: the
    array road expands nothing, but it allocates its result whole."""
    entries = result_entries(mode, n_in, n_out)
    limit = max_elements() * RESULT_ENTRIES_PER_ELEMENT
    if entries <= limit:
        return
    raise BuildTooLargeError(
        f"{where}: the {mode} of a function with {n_in:,} input and {n_out:,} output elements is a "
        f"dense result of {entries:,} entries ({entries * 8 / 1e9:,.1f} GB), over the budget of "
        f"{limit:,} result entries. Use symjac.compile(..., sparse='csr') for a sparse Jacobian, or "
        "a vjp/jvp product instead of the full matrix; raise the budget with SYMJAC_MAX_ELEMENTS or "
        "symjac.budget.MAX_ELEMENTS"
    )
