"""Which function a Python frame is calling right now, read from its bytecode's source positions.

While a trace runs, NumPy's and torch's factories (``np.zeros``...) are swapped for versions that
return traced constants when the user's code calls them (:mod:`symjac.trace.assembly`). Compiled
code calls them too, by attribute, from inside a call the user made: NumPy's random generators
(Cython) call ``np.empty`` for their result. Such a call has no Python frame of its own, so the
nearest frame is the user's, and a traced constant handed to C code is read as an array's memory:
a segmentation fault, or garbage numbers. The user's frame's current instruction tells them
apart: it is the call of ``rng.standard_normal``, not of ``np.empty``.

Since Python 3.11 each instruction has source positions: the call's span starts where the
expression naming its callee starts, and the last load inside that span, before the call, is the
callee (``np.zeros`` in ``np.zeros(3)``, ``z`` in ``z(3)``).
"""

from __future__ import annotations

import dis
import sys

_ATTRIBUTES = frozenset({"LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR"})
_NAMES = frozenset(
    {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FAST", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FAST_CHECK",
     "LOAD_FAST_AND_CLEAR", "LOAD_FROM_DICT_OR_GLOBALS", "LOAD_FROM_DICT_OR_DEREF"}
)  # fmt: skip
_UNKNOWN = ("?", None)
_CALLEES: dict = {}  # (code, offset) -> (kind, name) of the callee's last load
_POSITIONS = sys.version_info >= (3, 11)


def calls(frame, name: str, function) -> bool:
    """Whether ``frame`` is calling ``function`` (by attribute ``name``, or a variable bound to
    it). Before Python 3.11 (no positions) every call counts, as it did."""
    if not _POSITIONS:
        return True
    key = (frame.f_code, frame.f_lasti)
    callee = _CALLEES.get(key)
    if callee is None:
        if len(_CALLEES) > 4096:  # new code objects keep coming (lambdas made in a loop)
            _CALLEES.clear()
            _CODES.clear()
        callee = _CALLEES[key] = _callee(frame.f_code, frame.f_lasti)
    kind, loaded = callee
    if kind == "attribute":
        return loaded == name
    if kind == "name":
        value = frame.f_locals.get(loaded, frame.f_globals.get(loaded))
        return value is function
    return False


def _callee(code, offset: int) -> tuple:
    instructions = _instructions(code)
    # f_lasti may point into the call's inline cache: the call is the last instruction at or before.
    call = None
    for ins in instructions:
        if ins.offset > offset:
            break
        call = ins
    where = getattr(call, "positions", None)
    if where is None or where.lineno is None or where.col_offset is None:
        return _UNKNOWN
    start, end = (where.lineno, where.col_offset), (where.end_lineno, where.end_col_offset)
    best = None
    for ins in instructions:
        if ins.offset >= call.offset:
            break
        p = ins.positions
        if p is None or p.lineno is None or (p.lineno, p.col_offset) != start:
            continue
        if (p.end_lineno, p.end_col_offset) >= end:
            continue
        if ins.opname in _ATTRIBUTES or ins.opname in _NAMES:
            best = ins
    if best is None:
        return _UNKNOWN
    name = best.argval if isinstance(best.argval, str) else None
    if name is None:  # a superinstruction's pair of names: the callee is the last
        name = best.argval[-1] if isinstance(best.argval, tuple) and best.argval else None
    return ("attribute" if best.opname in _ATTRIBUTES else "name", name)


_CODES: dict = {}


def _instructions(code) -> list:
    found = _CODES.get(code)
    if found is None:
        found = _CODES[code] = list(dis.get_instructions(code))
    return found
