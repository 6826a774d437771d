"""SIMD lanes for batch kernels, and the vector math library that serves them.

A batch kernel evaluates ``lanes`` points at once: every value is an LLVM vector whose lanes
hold different points. Arithmetic maps to vector instructions directly; math functions need a
vector implementation, which glibc's libmvec provides under the x86 vector-function ABI names
(``_ZGVdN4v_exp``: AVX2, 4 lanes, one vector argument). We call those symbols directly: LLVM's
own ``-vector-library`` mapping is not reachable from llvmlite's pass builder. A function that
libmvec lacks (or a machine without libmvec) is computed lane by lane with the scalar libm call,
so a kernel is never wrong for want of a vector routine, only slower.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

import llvmlite.binding as llvm

# ISA letter of the vector-function ABI, and the vector register width in bytes.
_ISAS = (("e", 64, ("avx512f", "avx512dq")), ("d", 32, ("avx2",)), ("b", 16, ("sse4.2",)))


@functools.cache
def _host_features() -> frozenset:
    llvm.initialize_native_target()
    features = llvm.get_host_cpu_features()
    return frozenset(name for name, on in features.items() if on)


def _register_bytes() -> tuple[str, int]:
    """The ISA letter and width used for batch kernels (override: SYMJAC_SIMD_BYTES)."""
    wanted = os.environ.get("SYMJAC_SIMD_BYTES")
    features = _host_features()
    for letter, width, needs in _ISAS:
        if wanted and int(wanted) < width:
            continue
        if all(f in features for f in needs):
            return letter, width
    return "", 8


def lanes(compute: str) -> int:
    """Points per vector for a kernel computing in ``compute`` ("float64"/"float32"); 1: none."""
    letter, width = _register_bytes()
    if not letter:
        return 1
    return width // (4 if compute == "float32" else 8)


@functools.cache
def _libmvec():
    path = ctypes.util.find_library("mvec")
    if not path:
        return None
    try:
        lib = ctypes.CDLL(path)
        # MCJIT resolves undefined symbols through the libraries loaded "permanently".
        llvm.load_library_permanently(path)
    except OSError:
        return None
    return lib


@functools.cache
def vector_symbol(base: str, nargs: int, compute: str, count: int) -> str | None:
    """libmvec's name for ``base`` (a libm name, e.g. "exp") on ``count`` lanes, if it has one."""
    letter, _ = _register_bytes()
    lib = _libmvec()
    if lib is None or not letter:
        return None
    name = f"_ZGV{letter}N{count}{'v' * nargs}_{base}{'f' if compute == 'float32' else ''}"
    return name if hasattr(lib, name) else None


def load_libmvec() -> bool:
    """Make libmvec's symbols visible to the JIT linker; False where there is no libmvec."""
    return _libmvec() is not None


def abi_tag() -> str:
    """What a cached batch kernel depends on beyond the CPU: the lane width and libmvec, whose
    set of routines grows with the C library's version (an unresolved symbol aborts the JIT)."""
    letter, width = _register_bytes()
    mvec = "-".join(platform.libc_ver()) if _libmvec() is not None else "none"
    return f"simd={letter}{width}:mvec={mvec}"
