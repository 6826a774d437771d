"""A compiled function's native entry point: a CPython builtin written in LLVM IR, no ctypes per call.

As numba does for its wrappers, the entry is a ``METH_FASTCALL | METH_KEYWORDS`` C function
emitted in IR: it takes the argument's buffer (``PyObject_GetBuffer``: any C-contiguous buffer of
the kernel's dtype and exact shape), allocates the result with NumPy's C API (``PyArray_New``),
calls the kernel and returns the array. Every other call (keywords, a batch, torch tensors, a
wrong shape or dtype) goes to the compiled function's ``__call__`` unchanged, so the entry
computes exactly what the compiled function computes. One wrapper serves every kernel of the
process: the kernel's address and shapes travel in the builtin's ``self``, a tuple that also
keeps the kernel alive. C-API addresses are constants of the IR, so the wrapper is compiled per
process (a few milliseconds, once) and never cached on disk.
"""

from __future__ import annotations

import ctypes
import struct
import threading

import numpy as np
from llvmlite import binding as llvm

from . import runtime

METH_FASTCALL, METH_KEYWORDS = 0x80, 0x02
PYBUF_FORMAT, PYBUF_C_CONTIGUOUS = 0x0004, 0x0038
NPY_FLOAT, NPY_DOUBLE = 11, 12
MAX_DIMS = 8
# The i64 fields of the entry's parameters (``self[0]``, a bytes object).
KERNEL, ITEMSIZE, FORMAT, IN_NDIM, IN_DIMS = 0, 1, 2, 3, 4
OUT_TYPE, OUT_NDIM, OUT_DIMS = 4 + MAX_DIMS, 5 + MAX_DIMS, 6 + MAX_DIMS
REGION, OUT_BYTES = 6 + 2 * MAX_DIMS, 7 + 2 * MAX_DIMS
N_FIELDS = 8 + 2 * MAX_DIMS

_IR = """
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)

define ptr @symjac_entry(ptr %self, ptr %args, i64 %nargs, ptr %kwnames) {{
entry:
  %params_obj = call ptr inttoptr (i64 {PyTuple_GetItem} to ptr)(ptr %self, i64 0)
  %p = call ptr inttoptr (i64 {PyBytes_AsString} to ptr)(ptr %params_obj)
  %one = icmp eq i64 %nargs, 1
  %nokw = icmp eq ptr %kwnames, null
  %simple = and i1 %one, %nokw
  br i1 %simple, label %buffer, label %fallback

buffer:
  %view = alloca [11 x i64], align 8
  %arg = load ptr, ptr %args
  %rc = call i32 inttoptr (i64 {PyObject_GetBuffer} to ptr)(ptr %arg, ptr %view, i32 {flags})
  %got = icmp eq i32 %rc, 0
  br i1 %got, label %check, label %no_buffer

no_buffer:
  call void inttoptr (i64 {PyErr_Clear} to ptr)()
  br label %fallback

check:
  %itemsize_at = getelementptr i64, ptr %view, i64 3
  %itemsize = load i64, ptr %itemsize_at
  %want_itemsize_at = getelementptr i64, ptr %p, i64 {ITEMSIZE}
  %want_itemsize = load i64, ptr %want_itemsize_at
  %ok1 = icmp eq i64 %itemsize, %want_itemsize
  %ndim_at = getelementptr i32, ptr %view, i64 9
  %ndim32 = load i32, ptr %ndim_at
  %ndim = sext i32 %ndim32 to i64
  %want_ndim_at = getelementptr i64, ptr %p, i64 {IN_NDIM}
  %want_ndim = load i64, ptr %want_ndim_at
  %ok2 = icmp eq i64 %ndim, %want_ndim
  %format_at = getelementptr i64, ptr %view, i64 5
  %format = load ptr, ptr %format_at
  %c0 = load i8, ptr %format
  %c0_64 = zext i8 %c0 to i64
  %want_format_at = getelementptr i64, ptr %p, i64 {FORMAT}
  %want_format = load i64, ptr %want_format_at
  %ok3 = icmp eq i64 %c0_64, %want_format
  %ok12 = and i1 %ok1, %ok2
  %ok123 = and i1 %ok12, %ok3
  br i1 %ok123, label %format_end, label %reject

format_end:
  %c1_at = getelementptr i8, ptr %format, i64 1
  %c1 = load i8, ptr %c1_at
  %ok4 = icmp eq i8 %c1, 0
  %shape_at = getelementptr i64, ptr %view, i64 6
  %shape = load ptr, ptr %shape_at
  br i1 %ok4, label %dims, label %reject

dims:
  %k = phi i64 [ 0, %format_end ], [ %k1, %dim_ok ]
  %more = icmp slt i64 %k, %ndim
  br i1 %more, label %dim, label %run

dim:
  %d_at = getelementptr i64, ptr %shape, i64 %k
  %d = load i64, ptr %d_at
  %kk = add i64 %k, {IN_DIMS}
  %want_d_at = getelementptr i64, ptr %p, i64 %kk
  %want_d = load i64, ptr %want_d_at
  %same = icmp eq i64 %d, %want_d
  %k1 = add i64 %k, 1
  br i1 %same, label %dim_ok, label %reject

dim_ok:
  br label %dims

reject:
  call void inttoptr (i64 {PyBuffer_Release} to ptr)(ptr %view)
  br label %fallback

run:
  %type_at = getelementptr i64, ptr %p, i64 {OUT_TYPE}
  %type = load i64, ptr %type_at
  %type32 = trunc i64 %type to i32
  %out_ndim_at = getelementptr i64, ptr %p, i64 {OUT_NDIM}
  %out_ndim = load i64, ptr %out_ndim_at
  %out_ndim32 = trunc i64 %out_ndim to i32
  %out_dims = getelementptr i64, ptr %p, i64 {OUT_DIMS}
  %result = call ptr inttoptr (i64 {PyArray_New} to ptr)(ptr inttoptr (i64 {PyArray_Type} to ptr),
      i32 %out_ndim32, ptr %out_dims, i32 %type32, ptr null, ptr null, i32 0, i32 0, ptr null)
  %failed = icmp eq ptr %result, null
  br i1 %failed, label %no_memory, label %compute

no_memory:
  call void inttoptr (i64 {PyBuffer_Release} to ptr)(ptr %view)
  ret ptr null

compute:
  %data_at = getelementptr i8, ptr %result, i64 {DATA_OFFSET}
  %data = load ptr, ptr %data_at
  %nbytes_at = getelementptr i64, ptr %p, i64 {OUT_BYTES}
  %nbytes = load i64, ptr %nbytes_at
  call void @llvm.memset.p0.i64(ptr %data, i8 0, i64 %nbytes, i1 false)
  %region_at = getelementptr i64, ptr %p, i64 {REGION}
  %region = load i64, ptr %region_at
  %is64 = icmp eq i64 %region, 0
  %out64 = select i1 %is64, ptr %data, ptr null
  %out32 = select i1 %is64, ptr null, ptr %data
  %kernel_at = getelementptr i64, ptr %p, i64 {KERNEL}
  %kernel_address = load i64, ptr %kernel_at
  %kernel = inttoptr i64 %kernel_address to ptr
  %input = load ptr, ptr %view
  call void %kernel(ptr %input, ptr %out64, ptr %out32)
  call void inttoptr (i64 {PyBuffer_Release} to ptr)(ptr %view)
  ret ptr %result

fallback:
  %callable = call ptr inttoptr (i64 {PyTuple_GetItem} to ptr)(ptr %self, i64 1)
  %out = call ptr inttoptr (i64 {PyObject_Vectorcall} to ptr)(ptr %callable, ptr %args, i64 %nargs,
      ptr %kwnames)
  ret ptr %out
}}
"""


class _MethodDef(ctypes.Structure):
    _fields_ = [
        ("ml_name", ctypes.c_char_p),
        ("ml_meth", ctypes.c_void_p),
        ("ml_flags", ctypes.c_int),
        ("ml_doc", ctypes.c_char_p),
    ]


_LOCK = threading.Lock()
_WRAPPER = None  # (engine, method def, PyCFunction_NewEx) once built


def _c_api_address(name: str) -> int:
    return ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value


def _numpy_api() -> tuple[int, int]:
    """Addresses of ``PyArray_Type`` and ``PyArray_New`` (slots 2 and 93 of NumPy's C-API table)."""
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # NumPy 1.x
        from numpy.core import _multiarray_umath as umath
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.argtypes, get.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_void_p
    table = (ctypes.c_void_p * 94).from_address(get(umath._ARRAY_API, None))
    return table[2], table[93]


def _data_offset() -> int:
    """Where an ndarray object keeps its data pointer (after the object header, whose size
    depends on the CPython build): found by looking, not assumed."""
    probe = np.zeros(1)
    words = (ctypes.c_uint64 * 8).from_address(id(probe))
    for k, word in enumerate(words):
        if k and word == probe.ctypes.data:
            return 8 * k
    raise RuntimeError("symjac.backend.entry: cannot find the ndarray data pointer")


def _wrapper():
    global _WRAPPER
    with _LOCK:
        if _WRAPPER is None:
            array_type, array_new = _numpy_api()
            names = ("PyTuple_GetItem", "PyBytes_AsString", "PyObject_GetBuffer", "PyErr_Clear")
            names += ("PyBuffer_Release", "PyObject_Vectorcall")
            fields = dict(KERNEL=KERNEL, ITEMSIZE=ITEMSIZE, FORMAT=FORMAT, IN_NDIM=IN_NDIM, IN_DIMS=IN_DIMS)
            fields.update(
                OUT_TYPE=OUT_TYPE, OUT_NDIM=OUT_NDIM, OUT_DIMS=OUT_DIMS, REGION=REGION, OUT_BYTES=OUT_BYTES
            )
            text = _IR.format(
                **{n: _c_api_address(n) for n in names},
                **fields,
                PyArray_New=array_new,
                PyArray_Type=array_type,
                DATA_OFFSET=_data_offset(),
                flags=PYBUF_FORMAT | PYBUF_C_CONTIGUOUS,
            )
            module = runtime._module("symjac_entry")
            mod = llvm.parse_assembly(
                f'target triple = "{module.triple}"\ntarget datalayout = "{module.data_layout}"\n{text}'
            )
            mod.verify()
            runtime._optimize(mod)
            engine = runtime._engine(runtime.target_machine().emit_object(mod))
            method = _MethodDef(
                b"symjac_entry",
                engine.get_function_address("symjac_entry"),
                METH_FASTCALL | METH_KEYWORDS,
                None,
            )
            new = ctypes.pythonapi.PyCFunction_NewEx
            new.argtypes = [ctypes.POINTER(_MethodDef), ctypes.py_object, ctypes.c_void_p]
            new.restype = ctypes.py_object
            _WRAPPER = (engine, method, new)
        return _WRAPPER


def native_entry(cf):
    """The builtin that runs ``cf`` at one point without ctypes, or None when no fast path exists.

    The fast path needs one input and one dense result (no ``v``, ``value`` or ``sparse``).
    """
    layout = cf.kernel.layout
    spec = cf.spec
    shapes = cf._in_shapes
    if len(shapes) != 1 or len(layout.slots) != 1 or spec.value or getattr(spec, "sparse", None):
        return None
    (slot,) = layout.slots
    in_shape, out_shape = tuple(shapes[0]), tuple(slot.shape)
    if len(in_shape) > MAX_DIMS or len(out_shape) > MAX_DIMS:
        return None
    single = layout.compute == "float32"
    out64 = slot.region == 0
    out_item = 8 if out64 else 4
    fields = [0] * N_FIELDS
    fields[KERNEL] = cf.kernel.address
    fields[ITEMSIZE] = 4 if single else 8
    fields[FORMAT] = ord("f" if single else "d")
    fields[IN_NDIM] = len(in_shape)
    fields[IN_DIMS : IN_DIMS + len(in_shape)] = in_shape
    fields[OUT_TYPE] = NPY_DOUBLE if out64 else NPY_FLOAT
    fields[OUT_NDIM] = len(out_shape)
    fields[OUT_DIMS : OUT_DIMS + len(out_shape)] = out_shape
    fields[REGION] = slot.region
    fields[OUT_BYTES] = 0 if layout.full else int(np.prod(out_shape, dtype=np.int64)) * out_item
    params = struct.pack(f"={N_FIELDS}q", *fields)
    engine, method, new = _wrapper()
    # self: the parameters, the full call for everything else, and what keeps the kernel alive.
    return new(ctypes.byref(method), (params, cf.__call__, cf.kernel, engine), None)
