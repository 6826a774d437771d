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
import math
import os
import platform

import llvmlite.binding as llvm
import llvmlite.ir as ir

# ISA letter of the vector-function ABI, and the vector register width in bytes.
_ISAS = (("e", 64, ("avx512f", "avx512dq")), ("d", 32, ("avx2",)), ("b", 16, ("sse4.2",)))


@functools.cache
def _host_features() -> frozenset:
    llvm.initialize_native_target()
    features = llvm.get_host_cpu_features()
    return frozenset(name for name, on in features.items() if on)


def _register_bytes() -> tuple[str, int]:
    """The ISA letter and width used for batch kernels (override: SYMJAC_SIMD_BYTES)."""
    wanted = os.environ.get("SYMJAC_SIMD_BYTES", "").strip()
    if wanted and not wanted.isdigit():
        raise ValueError(
            f"SYMJAC_SIMD_BYTES={wanted!r}: give a register width in bytes (64, 32, 16; 8 for none)"
        )
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
def vector_symbol(base: str, nargs: int, count: int) -> str | None:
    """libmvec's name for ``base`` (a libm name, e.g. "exp") on ``count`` double lanes, if it
    has one (float kernels use the double routines too: see codegen._Lowerer.call)."""
    letter, _ = _register_bytes()
    lib = _libmvec()
    if lib is None or not letter:
        return None
    name = f"_ZGV{letter}N{count}{'v' * nargs}_{base}"
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


# --- inline vector routines -------------------------------------------------------------------
# A call to a vector routine clobbers every vector register, so each value live across it is
# spilled and reloaded: in a small tanh MLP that was most of the batch time (1406 spill slots
# touched per 8 points; 7.5 M/s, against 16 M/s with the calls replaced by arithmetic). The
# routines below are plain arithmetic that LLVM schedules with the rest of the kernel.

_LN2_HI = float.fromhex("0x1.62e42fee00000p-1")  # k * _LN2_HI is exact for |k| < 2**20
_LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
_EXPM1_TAYLOR = [1.0 / math.factorial(k) for k in range(2, 14)]  # |r| <= ln2/2: < 1e-17 left


def _reduce(lw, y):
    """``(k, expm1(r))`` with y = k ln2 + r, |r| <= ln2/2 (Cody-Waite), expm1(r) by its Taylor
    series to r**13, for vectors of doubles y <= 0 (not NaN: fptosi of NaN is poison)."""
    b, c = lw.b, lw.const
    k = lw.call("llvm.roundeven", True, [b.fmul(y, c(1 / math.log(2)))])
    r = b.fsub(b.fsub(y, b.fmul(k, c(_LN2_HI))), b.fmul(k, c(_LN2_LO)))
    poly = c(_EXPM1_TAYLOR[-1])
    for coefficient in reversed(_EXPM1_TAYLOR[:-1]):
        poly = b.fadd(b.fmul(poly, r), c(coefficient))
    return k, b.fadd(r, b.fmul(b.fmul(r, r), poly))


def _power_of_two(lw, k):
    """2**k for integer-valued doubles k in [-1022, 1023]."""
    i64 = ir.VectorType(ir.IntType(64), lw.lanes)
    bits = lw.b.shl(lw.b.add(lw.b.fptosi(k, i64), ir.Constant(i64, 1023)), ir.Constant(i64, 52))
    return lw.b.bitcast(bits, lw.t)


def expm1_nonpositive(lw, y):
    """expm1(y) for vectors of doubles y in [-64, 0] (not NaN): 2**k expm1(r) + (2**k - 1),
    which does not cancel for k <= 0."""
    b = lw.b
    k, p = _reduce(lw, y)
    scale = _power_of_two(lw, k)
    return b.fadd(b.fmul(scale, p), b.fsub(scale, lw.const(1.0)))


def exp_nonpositive(lw, y):
    """exp(y) for vectors of doubles y in [-745, 0] (not NaN), within a few ulp, denormal
    results included: 2**k1 * (1 + expm1(r)) * 2**(k - k1), k1 = k/2, each factor normal."""
    b, c = lw.b, lw.const
    k, p = _reduce(lw, y)
    half = lw.call("llvm.trunc", True, [b.fmul(k, c(0.5))])
    return b.fmul(b.fmul(_power_of_two(lw, half), b.fadd(c(1.0), p)), _power_of_two(lw, b.fsub(k, half)))


_TANH_REDUCED = 373.0  # |x| below which tanh and tanh' reduce -2|x| (exp(-2|x|) > 0 there)


def _reduced_argument(lw, ax):
    """-2|x|, or 0 past ``_TANH_REDUCED``: the same instructions in tanh and its derivative,
    which LLVM then computes once (their range reduction and polynomial are most of the work)."""
    inside = lw.b.fcmp_ordered("<", ax, lw.const(_TANH_REDUCED))
    return inside, lw.b.fmul(lw.b.select(inside, ax, lw.const(0.0)), lw.const(-2.0))


def tanh_derivative(lw, x):
    """1 - tanh(x)**2 of a vector of doubles as 4t / (1 + t)**2, t = exp(-2|x|): no
    cancellation (1 - tanh**2 of a 3-ulp tanh near 1 was off by up to 2.4e-4 relative at
    |x| > 14, against the scalar kernel), and 0 past |x| = 373, where the value underflows."""
    b, c = lw.b, lw.const
    inside, y = _reduced_argument(lw, lw.call("llvm.fabs", True, [x]))
    t = exp_nonpositive(lw, y)
    one_plus = b.fadd(c(1.0), t)
    value = b.select(inside, b.fdiv(b.fmul(c(4.0), t), b.fmul(one_plus, one_plus)), c(0.0))
    return b.select(b.fcmp_unordered("uno", x, x), x, value)  # NaN in, NaN out


def tanh(lw, x):
    """tanh of a vector of doubles, within 3 ulp: sign(x) * -e / (e + 2), e = expm1(-2|x|)."""
    b, c = lw.b, lw.const
    ax = lw.call("llvm.fabs", True, [x])
    small = b.fcmp_ordered("<", ax, c(22.0))  # past 22, tanh is 1 in double
    _, y = _reduced_argument(lw, ax)
    k, p = _reduce(lw, y)
    # 2**k is not a normal number past |x| = 354, where tanh is 1 and the select drops e.
    scale = _power_of_two(lw, b.select(small, k, c(0.0)))
    e = b.fadd(b.fmul(scale, p), b.fsub(scale, c(1.0)))  # expm1(-2|x|)
    magnitude = b.select(small, b.fdiv(b.fneg(e), b.fadd(e, c(2.0))), c(1.0))
    signed = lw.call("llvm.copysign", True, [magnitude, x])
    return b.select(b.fcmp_unordered("uno", x, x), x, signed)  # NaN in, NaN out
