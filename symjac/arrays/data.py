"""What a loop kernel reads by symbol: captured arrays and index tables.

Small constants are literals in the IR; from ``DATA_FROM`` elements on, an array is an external
symbol bound to a float64 copy held here (printing a 256 x 256 layer as IR took 0.1 s), so a
cached kernel names its data without holding it and the cache key stays small. Index tables
(the positions of a gather or an index assignment) are int32 arrays bound the same way.
"""

from __future__ import annotations

import math

import llvmlite.ir as ir
import numpy as np

from ..trace.ops import decode_index
from .emitter import DOUBLE, F64, I32, I64, Node, View, _dense
from .sparse import _positions


def _const(em, op, args, params, shape, mask, module, n):
    dt, shape_, data = params
    values = np.frombuffer(data, dtype=np.dtype(dt)).reshape(shape_).astype(F64)
    if values.size == 1:
        return Node(View(("scalar", float(values.flat[0])), 0, tuple(shape_), (0,) * len(shape_)), None, mask)
    if values.size >= DATA_FROM:  # read through a pointer to the array (see bind_data)
        g = _external(module, ir.ArrayType(DOUBLE, values.size), _data_symbol(values))
        return Node(_dense(g, tuple(shape_)), None, mask)
    raw = bytearray(np.ascontiguousarray(values).astype("<f8").tobytes())
    typ = ir.ArrayType(ir.IntType(8), len(raw))
    g = ir.GlobalVariable(module, typ, name=f"symjac_const{n}")
    g.global_constant = True
    g.linkage = "internal"
    g.initializer = ir.Constant(typ, raw)
    g.align = 64
    return Node(_dense(g, tuple(shape_)), None, mask)


# Captured arrays from this size are not copied into the IR (printing a 256 x 256 layer as IR
# text took 0.1 s): the kernel names an external symbol, bound to a float64 copy held here.
DATA_FROM = 64
_DATA: dict = {}  # symbol -> the array it names, alive for the process (kernels may outlive)


def _external(module, typ, name: str):
    """The global ``name`` (declared once per module however often it is read)."""
    return module.globals.get(name) or ir.GlobalVariable(module, typ, name=name)


def _data_symbol(values: np.ndarray) -> str:
    """The symbol naming a float64 array, or an int32 one (index tables), bound to a copy."""
    import hashlib

    import llvmlite.binding as llvm

    kind = "index" if np.asarray(values).dtype.kind in "iu" else "data"
    data = np.ascontiguousarray(values, dtype="<i4" if kind == "index" else "<f8")
    name = f"symjac_{kind}_{hashlib.sha256(data.tobytes()).hexdigest()[:32]}_{data.size}"
    if name not in _DATA:
        _DATA[name] = data = data.copy()
        llvm.add_symbol(name, data.ctypes.data)
    return name


def bind_data(graph) -> set:
    """Bind the symbols of ``graph``'s large captured arrays and index tables, before loading a
    kernel's object code (a cached one names them but does not hold them); returns the symbols."""
    names = set()
    for n, (op, args, params) in enumerate(graph.eqns):
        if op == "const":
            dt, shape_, data = params
            values = np.frombuffer(data, dtype=np.dtype(dt)).reshape(shape_).astype(F64)
            if values.size >= DATA_FROM:
                names.add(_data_symbol(values))
        elif op == "getitem":
            index = decode_index(params[0])
            if any(isinstance(k, np.ndarray) for k in index):
                positions = gather_positions(graph.shape(args[0]), index)
                if positions.size >= DATA_FROM:
                    names.add(_data_symbol(positions.astype(np.int32)))
        elif op == "setitem":
            index = decode_index(params[0])
            for table in assigned_positions(graph.shape(n), graph.shape(args[1]), index):
                if table.size >= DATA_FROM:
                    names.add(_data_symbol(table.astype(np.int32)))
    return names


def assigned_positions(shape, y_shape, index) -> tuple[np.ndarray, np.ndarray]:
    """For ``x[index] = y`` (x of ``shape``): the flat positions assigned, and the flat position in
    y of the element each receives (in order, so that the last of repeated positions wins)."""
    places = gather_positions(shape, index)
    target = np.broadcast_to(np.zeros((), dtype=np.int8), shape)[index].shape
    sources = np.broadcast_to(np.arange(math.prod(y_shape), dtype=np.int64).reshape(y_shape), target)
    return places, sources.ravel()


def gather_positions(shape, index) -> np.ndarray:
    """The flat positions (C order) of ``x[index]``'s elements in ``x`` of ``shape``."""
    return _positions(shape)[index].ravel()


def index_table(module, values: np.ndarray):
    """A table of int32 positions: an IR constant when short, else a symbol (see bind_data)."""
    values = np.ascontiguousarray(values, dtype="<i4")
    if values.size >= DATA_FROM:
        return _external(module, ir.ArrayType(I32, values.size), _data_symbol(values))
    typ = ir.ArrayType(I32, max(values.size, 1))
    g = ir.GlobalVariable(module, typ, name=module.get_unique_name("symjac_index"))
    g.global_constant = True
    g.linkage = "internal"
    g.initializer = ir.Constant(typ, [int(v) for v in values] or [0])
    return g


def load_index(b, table, i):
    return b.sext(b.load(b.gep(table, [i], source_etype=I32), typ=I32), I64)
