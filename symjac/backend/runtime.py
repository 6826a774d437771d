"""Compile an IR module to native code and call it: the Kernel owns its LLVM engine.

LLVM is initialised lazily (native target and asm printer only). Modules are verified, then
optimised with the new pass manager at O3 for the host CPU, then JIT-compiled by MCJIT.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import time
from dataclasses import dataclass

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
import sympy
from llvmlite.binding import ffi, newpassmanagers

from ..elements import rolling
from ..elements.simplify import F32_REGION, Program
from ..progress import stage
from . import vecmath
from .codegen import add_batch_loop, add_kernel
from .threads import Split

_KERNEL_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_BATCH_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
_TM = None
SIMD_OUTPUT_BYTES = 16384  # at most this much output per vector of points for a SIMD kernel
UNROLLED_BATCH_BYTES = 1 << 20  # results of a batch from which a rolled kernel's unrolled form pays
INLINE_LIMIT = 32  # statements up to which kernels are inlined into the batch loop (bigger: no gain, slow O3)
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


def _optimize(mod, loop_vectorization: bool = True, loop_unrolling: bool = True) -> None:
    """Run the O3 pipeline of the new pass manager on ``mod``.

    One pass builder per module: a run registers instrumentation callbacks into its builder
    that point into the run's stack frame, so a reused builder would call dangling ones. The
    O3 pass manager is single-use too (its inliner moves its passes out when it runs).
    """
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = loop_vectorization
    pto.loop_unrolling = loop_unrolling
    pb = llvm.create_pass_builder(target_machine(), pto)
    pm = pb.getModulePassManager()
    try:
        pm.run(mod, pb)
    finally:
        _close_pass_manager(pm)
        pb.close()
        pto.close()


def _close_pass_manager(pm) -> None:
    # llvmlite's ModulePassManager lists ffi.ObjectRef before NewPassManager among its bases,
    # so close() finds ObjectRef's no-op _dispose and never frees the pipeline: about 55 KB per
    # build (llvmlite 0.44-0.50). Free it through NewPassManager's _dispose while that is so.
    if type(pm)._dispose is ffi.ObjectRef._dispose and not pm.closed:
        newpassmanagers.NewPassManager._dispose(pm)
        pm.detach()
    else:
        pm.close()


@dataclass(frozen=True)
class ResultSlot:
    """Where one result array lives in the kernel's output buffers."""

    region: int
    offset: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    """How a kernel's buffers are laid out: everything needed to call its object code.

    ``in_shapes`` are the arrays packed, in order, into the input buffer (of dtype ``compute``);
    ``slots`` say where each result lives in the output buffers of ``n64`` doubles and ``n32``
    floats. The single-point kernel wants them zeroed unless ``full``; the batch loops zero each
    point's part themselves (``codegen.add_batch_loop``), so batch buffers may hold anything.
    """

    in_shapes: tuple
    slots: tuple
    n64: int
    n32: int
    compute: str
    full: bool = False  # every output element is stored (zeros too): buffers need no zeroing

    def allocate(self, n: int):
        """Output buffers ``(out64, out32)`` for ``n`` points of a batch loop (not zeroed)."""
        return np.empty((n, self.n64)), np.empty((n, self.n32), dtype=np.float32)

    @property
    def n_in(self) -> int:
        return sum(math.prod(s) for s in self.in_shapes)


def _module(name: str):
    tm = target_machine()
    module = ir.Module(name=name)
    module.triple = llvm.get_process_triple()
    module.data_layout = str(tm.target_data)
    return module


def _native(module, loop_vectorization: bool = True, loop_unrolling: bool = True) -> tuple[bytes, str, str]:
    """Verify, optimise and emit ``module``: (object code, IR, optimised IR)."""
    text = str(module)
    mod = llvm.parse_assembly(text)
    mod.verify()
    _optimize(mod, loop_vectorization, loop_unrolling)
    return target_machine().emit_object(mod), text, str(mod)


def _inline(program: Program) -> bool:
    """Whether to inline a kernel into its batch loop: only small ones gain, big ones slow O3."""
    return len(program.stores) + len(program.assignments) <= INLINE_LIMIT


def _strides(layout: Layout) -> tuple[int, int, int]:
    return max(layout.n_in, 1), layout.n64, layout.n32


def compile_object(program: Program, layout: Layout, batch: bool = False) -> tuple[bytes, str, str]:
    """Native object code, the IR and the optimised IR of ``symjac_kernel`` (and, with
    ``batch``, its scalar loop over points ``symjac_kernel_batch``)."""
    with stage("compiling stores with LLVM", len(program.stores) + len(program.assignments)):
        module = _module("symjac_kernel")
        add_kernel(module, program, "symjac_kernel")
        if batch:
            strides, inline = _strides(layout), _inline(program)
            add_batch_loop(module, "symjac_kernel", strides, program.compute, inline, clear=not layout.full)
        # Points go through the SIMD kernel, not a vectorised loop; and a rolled loop
        # (symjac.elements.rolling) vectorised scatters its stores, three times slower than scalar.
        return _native(module, loop_vectorization=False)


def simd_lanes(layout: Layout) -> int:
    """Points per SIMD kernel call for ``layout``; 1 where scalar code is as fast."""
    lanes = vecmath.lanes(layout.compute)
    # Lanes write their points' results apart; past L1's size that scatter costs more than
    # SIMD arithmetic saves (a sparse Brusselator: 2.5 M/s SIMD, 3.8 M/s scalar).
    if (8 * layout.n64 + 4 * layout.n32) * lanes > SIMD_OUTPUT_BYTES:
        return 1
    return lanes


def compile_simd_object(program: Program, layout: Layout):
    """``(object, IR, optimised IR, lanes)`` of the batch kernel ``symjac_kernel_simd_batch(in,
    out64, out32, n)``, which evaluates the points of whole vectors among ``n``; None where the
    single-point kernel's loop over points is as fast.

    Where SIMD does not pay (``lanes`` 1) but the single-point kernel is rolled
    (``symjac.elements.rolling``), this is the unrolled kernel's loop over points: rolled loops are as
    fast for one point, but less than half as fast when results stream to memory.
    """
    lanes = simd_lanes(layout) if _vector_math(program) else 1
    size = len(program.stores) + len(program.assignments)
    if lanes == 1:
        images, loops, _ = rolling.roll(program)
        if not images and not loops:
            return None
    with stage("compiling the SIMD batch kernel" if lanes > 1 else "compiling the batch kernel", size):
        module = _module("symjac_kernel_simd")
        strides = _strides(layout)
        add_kernel(module, program, "symjac_kernel_simd", lanes, strides, roll=False)
        inline, clear = _inline(program), not layout.full
        add_batch_loop(module, "symjac_kernel_simd", strides, program.compute, inline, lanes, clear=clear)
        return (*_native(module, loop_vectorization=lanes > 1), lanes)


def _vector_math(program: Program) -> bool:
    """Whether ``program`` calls functions (exp, tanh, sqrt, a select...) that a SIMD kernel
    computes a vector of points at a time. Arithmetic alone is as fast, point by point, as the
    lanes' loads and stores cost: Robertson's kinetics batched at 454 M/s one point at a time,
    337 M/s eight at a time (2-core AVX-512 machine, 2026-12-07); a tanh MLP 4-16-16-2 at 1.6
    against 7.2 M/s."""
    exprs = [e for _, e in program.assignments] + [e for _, _, e in program.stores]
    for e in exprs:
        for node in sympy.preorder_traversal(e):
            if isinstance(node, sympy.Function) or (isinstance(node, sympy.Pow) and not node.exp.is_Integer):
                return True
    return False


class Kernel:
    """Native code for one Layout: ``kernel(arrays)`` and ``kernel.batch(...)`` give fresh arrays.

    Built from a Program (``Kernel.build``) or from cached object code; it owns its engine.
    """

    def __init__(self, obj: bytes, layout: Layout, ir: str = "", optimized_ir: str = "", simd=None):
        self._engine = _engine(obj)
        self._simd_source = simd  # () -> compile_simd_object's result, called at the first batch
        self._simd = None  # (batch function, lanes, engine, optimised IR) or False once known
        self._threads_pay = None  # a forced choice to split batches across threads (None: measured)
        self._split = Split()  # which way is faster here, measured on real batches
        self.object_code = obj
        self.ir = ir
        self.optimized_ir = optimized_ir
        self.layout = layout
        self.address = self._engine.get_function_address("symjac_kernel")
        self.batch_address = self._engine.get_function_address("symjac_kernel_batch")
        self._fn = _KERNEL_TYPE(self.address)
        self._batch = _BATCH_TYPE(self.batch_address) if self.batch_address else None
        self._dtype = np.float32 if layout.compute == "float32" else np.float64
        sizes = [math.prod(s) for s in layout.in_shapes]
        self._in = np.zeros(max(sum(sizes), 1), dtype=self._dtype)
        self._in_ptr = self._in.ctypes.data
        views, start = [], 0
        for shape, size in zip(layout.in_shapes, sizes, strict=True):
            views.append(self._in[start : start + size].reshape(shape))
            start += size
        self._in_views = views
        self._in_bounds = [(start - size, start) for start, size in zip(np.cumsum(sizes), sizes, strict=True)]
        self._slots = [(s.region, s.offset, s.offset + math.prod(s.shape), s.shape) for s in layout.slots]
        self._n64, self._n32 = layout.n64, layout.n32
        self._whole = None
        if len(layout.slots) == 1 and (self._n64 == 0 or self._n32 == 0) and self._n64 + self._n32 > 0:
            self._whole = layout.slots[0].region
        self._lock = threading.Lock()

    @classmethod
    def build(cls, program: Program, layout: Layout, batch: bool = False, simd=None) -> Kernel:
        obj, ir, optimized = compile_object(program, layout, batch)
        kernel = cls(obj, layout, ir, optimized, simd)
        kernel.program = program
        return kernel

    def simd(self):
        """``(batch function, lanes, engine, optimised IR)`` of the batch kernel (SIMD, or the
        unrolled kernel of a rolled one: ``compile_simd_object``), built on first use (like
        JAX's ``jit(vmap(f))``, a compile of its own); False where there is none."""
        if self._simd is None:
            with self._lock:
                if self._simd is None:
                    built = self._simd_source() if self._simd_source is not None else None
                    if built is None:
                        self._simd = False
                    else:
                        obj, _, optimized, lanes = built
                        vecmath.load_libmvec()  # its symbols must resolve, also for cached code
                        engine = _engine(obj)
                        fn = _BATCH_TYPE(engine.get_function_address("symjac_kernel_simd_batch"))
                        self._simd = (fn, lanes, engine, optimized)
        return self._simd

    def _batch_kernel_pays(self, n: int) -> bool:
        """Whether a batch of ``n`` points should build (or use) the batch kernel.

        A SIMD kernel always pays. An unrolled kernel of a rolled one (lanes 1) pays once
        results stream to memory, where rolled loops run at 0.4x its speed; below about L2's
        size they are within 5-17% of it, and the unrolled compile would cost more than the
        batch (a 2048-state Brusselator: 1.5 s).
        """
        if self._simd is not None or simd_lanes(self.layout) > 1:
            return True
        return n * (8 * self.layout.n64 + 4 * self.layout.n32) >= UNROLLED_BATCH_BYTES

    @property
    def simd_ir(self) -> str:
        """The optimised IR of the SIMD batch kernel, if one has been built."""
        return self._simd[3] if self._simd else ""

    def assembly(self) -> str:
        return target_machine().emit_assembly(llvm.parse_assembly(self.optimized_ir))

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

    def batch(
        self, arrays, batch_shape: tuple, out64=None, out32=None, threads: int = 1, min_chunk: int = 1024
    ) -> list[np.ndarray]:
        """Evaluate at every point of ``batch_shape``; each array has shape batch + its shape.

        Results have shape batch + their shape. Points are split across ``threads`` (ctypes
        releases the GIL during the native loop), at least ``min_chunk`` points to a thread.
        """
        if self._batch is None:
            raise RuntimeError("this kernel was built without its batch loop (Kernel.build(..., batch=True))")
        n = math.prod(batch_shape)
        if n == 0:  # an empty batch: empty results of the right shapes, nothing to run
            return [
                np.zeros(batch_shape + shape, np.float32 if region == F32_REGION else np.float64)
                for region, _, _, shape in self._slots
            ]
        only = arrays[0] if len(arrays) == 1 else None
        if isinstance(only, np.ndarray) and only.dtype == self._dtype and only.flags.c_contiguous:
            packed = only.reshape(n, -1)  # already laid out point after point: no copy
        else:
            packed = np.empty((n, max(self.layout.n_in, 1)), dtype=self._dtype)
            for (lo, hi), a in zip(self._in_bounds, arrays, strict=True):
                packed[:, lo:hi] = np.reshape(a, (n, hi - lo))
        if out64 is None and out32 is None:
            out64, out32 = self.layout.allocate(n)
        elif out64 is None or out32 is None:
            fresh = self.layout.allocate(n)
            out64, out32 = fresh[0] if out64 is None else out64, fresh[1] if out32 is None else out32
        simd = self.simd() if self._batch_kernel_pays(n) else False

        def run(lo: int, hi: int) -> None:
            mid = lo
            if simd and hi - lo >= simd[1]:  # whole vectors of points, then the rest one by one
                mid = lo + (hi - lo) // simd[1] * simd[1]
                simd[0](packed[lo:].ctypes.data, _address(out64[lo:]), _address(out32[lo:]), mid - lo)
            if hi > mid:
                self._batch(packed[mid:].ctypes.data, _address(out64[mid:]), _address(out32[mid:]), hi - mid)

        # Chunks start at whole vectors, so that the same points (the last n % lanes) take the
        # scalar kernel however a batch is split: results never depend on the thread count.
        step = simd[1] if simd else 1

        def spread(lo: int, hi: int) -> None:
            chunks = _chunks(hi - lo, threads, step, min_chunk) if threads > 1 else ()
            if len(chunks) <= 1:
                run(lo, hi)
                return
            # The calling thread takes the first chunk, the pool's threads the others: threads
            # kept alive keep their stacks' pages and malloc arenas (a batch of 288 MLP 8-256-256-4
            # points, 5 ms, ran no faster on two fresh threads than on one).
            pending = [_pool(len(chunks) - 1).submit(run, lo + a, lo + b) for a, b in chunks[1:]]
            run(lo + chunks[0][0], lo + chunks[0][1])
            for future in pending:
                future.result()

        if threads > 1 and n >= 4 * min_chunk:  # worth splitting, maybe: see symjac.backend.threads
            forced = self._threads_pay
            split, timed = (forced, False) if forced is not None else self._split.choose()
            start = time.perf_counter()
            if split:
                spread(0, n)
            else:
                run(0, n)
            if timed:
                self._split.record(split, (time.perf_counter() - start) / n)
        else:
            spread(0, n)
        return [
            (out32 if region == F32_REGION else out64)[:, start:stop].reshape(batch_shape + shape)
            for region, start, stop, shape in self._slots
        ]


def _engine(obj: bytes):
    """An MCJIT engine holding ``obj`` (it owns its own target machine: see target_machine)."""
    empty = llvm.parse_assembly("")
    empty.triple = llvm.get_process_triple()
    engine = llvm.create_mcjit_compiler(empty, _new_target_machine())
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return engine


_POOL = None  # (process id, executor, its workers)
_POOL_LOCK = threading.Lock()


def _pool(workers: int):
    """The process's worker threads for batches (grown to ``workers`` when more are asked for; a
    forked child, which has none of its parent's threads, makes its own)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[2] < workers:
            from concurrent.futures import ThreadPoolExecutor

            if _POOL is not None and _POOL[0] == os.getpid():
                _POOL[1].shutdown(wait=False)
            executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="symjac-batch")
            _POOL = (os.getpid(), executor, workers)
        return _POOL[1]


def _chunks(n: int, threads: int, step: int = 1, min_chunk: int = 1024) -> list[tuple[int, int]]:
    threads = max(1, min(threads, n // max(min_chunk, 1) or 1))
    edges = np.linspace(0, n, threads + 1).astype(int) // step * step
    edges[-1] = n
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


_EMPTY64 = np.zeros(0)
_EMPTY32 = np.zeros(0, dtype=np.float32)


def _address(arr: np.ndarray) -> int:
    # c_char.from_buffer is about 3x cheaper than arr.ctypes.data on the hot path.
    if not arr.size:
        return 0
    if arr.flags.c_contiguous and arr.flags.writeable:
        return ctypes.addressof(ctypes.c_char.from_buffer(arr))
    return arr.ctypes.data
