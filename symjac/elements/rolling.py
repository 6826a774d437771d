"""Roll repeated stores into loops, so that a large kernel's code does not grow with its size.

The Jacobian of a 2048-state Brusselator is 10752 stores but only seven computations: the same
few operations on different inputs (``d f_i / d u_i = 2 u_i v_i - 4.4 - 4 alpha`` for every
``i``) or the same constant. Unrolled, every store is code of its own, and LLVM's time grows
with it (2.2 s of a 3.9 s build). Here stores whose computation, temporaries inlined, has the
same shape (the same operations and constants in the same order, inputs numbered by first
appearance) form a group, and a large group becomes one loop over a table of its members'
input slots and output offsets, whose body is its first member's computation.

Inlining repeats work that stores shared through temporaries, so only small computations
(``ROLL_NODES``) are rolled. A rolled store's result is bitwise the one unrolled code gives:
every member evaluates the same operations in the same order, only on other inputs.

Constant stores (three in four of the Brusselator's: the neighbours' ``alpha``) are cheaper
still as an image: one copy of a constant array over their part of the output, before any
other store, at memory speed rather than a store each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .simplify import F32_REGION, F64_REGION, Program

ROLL_MIN_STATEMENTS = 512  # smaller kernels stay straight-line: LLVM is quick on them
ROLL_MIN_GROUP = 16  # members a group needs to become a loop
ROLL_NODES = 48  # expression nodes of one store's computation, temporaries inlined, at most


@dataclass(frozen=True, eq=False)
class Loop:
    """Rolled groups that read the same inputs: for each member ``m`` and each ``(region,
    expr)`` ``k`` of ``stores``, ``out[region][offsets[m, k]] = expr`` on ``m``'s inputs.

    Each ``expr`` is a first member's stored expression, on program temporaries (``defs``) and
    the input symbols ``inputs``; member ``m`` reads its ``j``-th input from slot
    ``table[m, j]`` where the first member reads ``inputs[j]``. Groups with equal tables share
    one loop, and the work their computations share.
    """

    stores: tuple  # (region, expr) per group
    inputs: tuple
    table: np.ndarray  # int32 (int64 past 2**31), (members, len(inputs))
    offsets: np.ndarray  # int32 (int64 past 2**31), (members, len(stores))
    defs: dict


@dataclass(frozen=True, eq=False)
class Image:
    """Constant results: ``values`` copied to the output region from offset ``start`` on
    (positions in between that are not constants get zeros, or their stores later)."""

    region: int
    start: int
    values: np.ndarray  # float64 or float32, as the region


def roll(program: Program) -> tuple[list[Image], list[Loop], Program]:
    """``(images, loops, the program's other stores with the temporaries they need)``."""
    if len(program.assignments) + len(program.stores) < ROLL_MIN_STATEMENTS:
        return [], [], program
    images, imaged = _images(program)
    defs = dict(program.assignments)
    sizes: dict = {}
    for sym, expr in program.assignments:
        sizes[sym] = _size(expr, sizes)
    groups: dict = {}
    for k, (region, _, expr) in enumerate(program.stores):
        if k in imaged or _size(expr, sizes) > ROLL_NODES:
            continue
        shape = _shape(expr, defs, program.slots)
        if shape is not None:
            groups.setdefault((region, shape[0]), []).append((k, shape[1]))
    fused: dict = {}  # the table's bytes -> (inputs, table, [(region, expr)], [offsets])
    rolled = set(imaged)
    for (region, _), members in groups.items():
        if len(members) < ROLL_MIN_GROUP:
            continue
        first, inputs = members[0]
        table = _indices([[program.slots[s] for s in ins] for _, ins in members])
        offsets = _indices([program.stores[k][1] for k, _ in members])
        entry = fused.setdefault((table.shape, table.tobytes()), (tuple(inputs), table, [], []))
        entry[2].append((region, program.stores[first][2]))
        entry[3].append(offsets)
        rolled.update(k for k, _ in members)
    loops = [
        Loop(tuple(stores), inputs, table, np.stack(offsets, axis=1), defs)
        for inputs, table, stores, offsets in fused.values()
    ]
    if not rolled:
        return [], [], program
    rest = tuple(st for k, st in enumerate(program.stores) if k not in rolled)
    return (
        images,
        loops,
        Program(program.slots, _live(program.assignments, rest, defs), rest, program.compute),
    )


IMAGE_FILL = 0.25  # constants per position of the span an image covers, at least


def _images(program: Program) -> tuple[list[Image], set]:
    """Images of each region's constant stores, where there are enough and they lie close."""
    images, imaged = [], set()
    for region in (F64_REGION, F32_REGION):
        found = [
            (k, offset, float(e))
            for k, (r, offset, e) in enumerate(program.stores)
            if r == region and (e.is_Float or e.is_Rational)
        ]
        if len(found) < ROLL_MIN_GROUP:
            continue
        start = min(offset for _, offset, _ in found)
        span = max(offset for _, offset, _ in found) - start + 1
        if len(found) < IMAGE_FILL * span:
            continue
        values = np.zeros(span)
        for _, offset, value in found:
            values[offset - start] = value
        if program.compute == "float32":  # the constant is rounded to the compute type first
            values = values.astype(np.float32).astype(np.float64)
        images.append(Image(region, start, values.astype(np.float32 if region == F32_REGION else np.float64)))
        imaged.update(k for k, _, _ in found)
    return images, imaged


def _size(expr, sizes: dict, budget: int = ROLL_NODES + 1) -> int:
    """Nodes of ``expr`` with temporaries inlined, counted no further than ``budget``."""
    if expr.is_Atom:
        return sizes.get(expr, 1) if expr.is_Symbol else 1
    if budget <= 1:  # too big already: stop descending (deep expressions end here)
        return 2
    total = 1
    for a in expr.args:
        total += _size(a, sizes, budget - total)
        if total >= budget:  # each level spends budget: deep expressions stop early
            break
    return total


def _shape(expr, defs: dict, slots: dict):
    """``(shape, inputs)``: a hashable pre-order of ``expr`` with temporaries inlined and inputs
    numbered by first appearance, and those inputs; None if it reads an unknown symbol."""
    tokens: list = []
    inputs: dict = {}

    def walk(e) -> bool:
        if e.is_Symbol:
            if e in slots:
                tokens.append(("in", inputs.setdefault(e, len(inputs))))
                return True
            d = defs.get(e)
            return d is not None and walk(d)
        if e.is_Float:  # lowered as float(e): equal doubles lower alike
            tokens.append(("F", float(e)))
        elif e.is_Rational:  # p/q is lowered as a division when p is 1: keep both
            tokens.append(("Q", e.p, e.q))
        elif e.is_Atom:
            tokens.append((type(e), e))
        else:
            tokens.append((type(e), len(e.args)))
            return all(walk(a) for a in e.args)
        return True

    return (tuple(tokens), list(inputs)) if walk(expr) else None


def _live(assignments, stores, defs: dict) -> tuple:
    """The assignments that ``stores`` read, directly or through other temporaries, in order."""
    live: set = set()
    todo = [s for _, _, e in stores for s in getattr(e, "free_symbols", ()) if s in defs]
    while todo:
        t = todo.pop()
        if t not in live:
            live.add(t)
            todo.extend(s for s in defs[t].free_symbols if s in defs and s not in live)
    return tuple((t, d) for t, d in assignments if t in live)


def _indices(values) -> np.ndarray:
    """An index table: int32, or int64 where an index does not fit (results past 2**31 entries)."""
    table = np.array(values, dtype=np.int64)
    return table.astype(np.int32) if table.size == 0 or table.max() < 2**31 else table
