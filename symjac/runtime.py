"""Compile an IR module to native code and call it: the Kernel owns its LLVM engine.

LLVM is initialised lazily (native target and asm printer only). Modules are verified, then
optimised with the new pass manager at O3 for the host CPU, then JIT-compiled by MCJIT.
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass

import llvmlite.binding as llvm
import numpy as np

from .codegen import lower_program
from .progress import stage
from .simplify import F32_REGION, Program

_KERNEL_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_TM = None
_TM_LOCK = threading.Lock()


def _new_target_machine():
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3
    )


def target_machine():
    """The host target machine for optimising and printing (created once).

    Never handed to an engine: an MCJIT engine takes ownership of its target machine and frees
    it with itself, so each Kernel gets its own.
    """
    global _TM
    with _TM_LOCK:
        if _TM is None:
            _TM = _new_target_machine()
        return _TM


def _optimize(mod) -> None:
    """Run the O3 pipeline of the new pass manager on ``mod``."""
    tm = target_machine()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


@dataclass(frozen=True)
class ResultSlot:
    """Where one result array lives in the kernel's output buffers."""

    region: int
    offset: int
    shape: tuple[int, ...]


class Kernel:
    """A compiled Program: ``kernel(arrays) -> result arrays`` (fresh arrays every call).

    ``in_shapes`` are the shapes of the arrays packed, in order, into the input buffer;
    ``slots`` say where each result lives in the zero-initialised output buffers.
    """

    def __init__(self, program: Program, in_shapes, slots: list[ResultSlot], n64: int, n32: int):
        tm = target_machine()
        with stage("compiling stores with LLVM", len(program.stores) + len(program.assignments)):
            module = lower_program(program, "symjac_kernel", llvm.get_process_triple(), str(tm.target_data))
            self.ir = str(module)
            mod = llvm.parse_assembly(self.ir)
            mod.verify()
            _optimize(mod)
            self.optimized_ir = str(mod)
            self._engine = llvm.create_mcjit_compiler(mod, _new_target_machine())
            self._engine.finalize_object()
        self.address = self._engine.get_function_address("symjac_kernel")
        self._fn = _KERNEL_TYPE(self.address)
        self.program = program
        dtype = np.float32 if program.compute == "float32" else np.float64
        sizes = [math.prod(s) for s in in_shapes]
        self._in = np.zeros(max(sum(sizes), 1), dtype=dtype)
        self._in_ptr = self._in.ctypes.data
        views, start = [], 0
        for shape, size in zip(in_shapes, sizes, strict=True):
            views.append(self._in[start : start + size].reshape(shape))
            start += size
        self._in_views = views
        self._slots = [(s.region, s.offset, s.offset + math.prod(s.shape), s.shape) for s in slots]
        self._n64, self._n32 = n64, n32
        self._whole = None
        if len(slots) == 1 and (n64 == 0 or n32 == 0) and n64 + n32 > 0:
            self._whole = slots[0].region
        self._lock = threading.Lock()

    def assembly(self) -> str:
        mod = llvm.parse_assembly(self.optimized_ir)
        return target_machine().emit_assembly(mod)

    def __call__(self, arrays) -> list[np.ndarray]:
        out64 = np.zeros(self._n64) if self._n64 else _EMPTY64
        out32 = np.zeros(self._n32, dtype=np.float32) if self._n32 else _EMPTY32
        with self._lock:
            for view, a in zip(self._in_views, arrays, strict=True):
                view[...] = a
            self._fn(self._in_ptr, _address(out64), _address(out32))
        if self._whole is not None:  # one result filling the buffer: no slicing
            return [(out32 if self._whole == F32_REGION else out64).reshape(self._slots[0][3])]
        return [
            (out32 if region == F32_REGION else out64)[start:stop].reshape(shape)
            for region, start, stop, shape in self._slots
        ]


_EMPTY64 = np.zeros(0)
_EMPTY32 = np.zeros(0, dtype=np.float32)


def _address(arr: np.ndarray) -> int:
    # c_char.from_buffer is about 3x cheaper than arr.ctypes.data on the hot path.
    return ctypes.addressof(ctypes.c_char.from_buffer(arr)) if arr.size else 0
