"""Exceptions raised while tracing, each naming the operation and the traceable alternative."""

from __future__ import annotations

import os
import sys


class UntraceableError(TypeError):
    """A Python construct needs the value of a traced tensor, which is not known while tracing."""


class InPlaceError(TypeError):
    """An in-place write (``out=``, item assignment on an input) that symjac cannot record."""


class UnsupportedOpError(NotImplementedError):
    """A function symjac's op table does not have."""


class DtypeError(TypeError, RuntimeError):
    """An input dtype symjac cannot differentiate (RuntimeError too, as torch raises)."""


_UNTRACEABLE = {
    "bool": (
        "bool() of a traced tensor",
        "a Python `if`, `while`, `and`, `or` or `not` on traced data needs its value, which is "
        "not known while tracing. Choose between values with symjac.where(condition, a, b) "
        "(or numpy.where / torch.where), and symjac.maximum/minimum, abs, clip for the usual cases.",
    ),
    "float": (
        "float() of a traced tensor",
        "its number is not known while tracing. Keep it a tensor and use tensor operations "
        "(x * 2, numpy.exp(x), x.sum()) instead of converting to a Python number. To write it "
        "into an array (a[i] = x), create the array inside the function (np.zeros / "
        "torch.zeros there are traced) or build it with numpy.stack / torch.stack.",
    ),
    "int": (
        "int() of a traced tensor",
        "its number is not known while tracing; integer casts are not differentiable. "
        "Keep it a float tensor (symjac.floor / numpy.floor for rounding).",
    ),
    "item": (
        ".item()/.tolist() of a traced tensor",
        "its value is not known while tracing. Keep it a tensor.",
    ),
    "complex": ("complex() of a traced tensor", "complex values are not supported."),
    "index": (
        "a traced tensor used as an index",
        "indices must be known while tracing (data-dependent indexing, sort, argsort and argmax "
        "are not traceable). Index with Python ints, slices or constant arrays, or select "
        "values with symjac.where.",
    ),
    "numpy": (
        ".numpy() of a traced tensor",
        "its values are not known while tracing. Call NumPy functions on the tensor itself "
        "(numpy.exp(x)); symjac records them.",
    ),
}


_IN_LIBRARY = {
    "bool": "a Python `if`, `while`, `and` or `or`",
    "float": "float()",
    "int": "int()",
    "item": ".item()",
    "index": "an index",
}


def untraceable(kind: str, var) -> UntraceableError:
    what, advice = _UNTRACEABLE[kind]
    where = library_function(sys._getframe(2)) if kind in ("bool", "float", "int", "item", "index") else None
    if where is not None:
        # The `if` (or float()) is inside a library the user called, not in the user's code.
        return UntraceableError(
            f"symjac cannot trace {where}: it needs the value of a traced tensor (the result of "
            f"`{var._op}`, shape {tuple(var.shape)}) for {_IN_LIBRARY[kind]} inside the library "
            "function, where only numbers are known. Call a traceable equivalent "
            "instead (see docs/operations.md: NumPy, torch and symjac functions on the tensor "
            "itself), or write the formula out with tensor operations."
        )
    return UntraceableError(
        f"symjac cannot trace {what} (the result of `{var._op}`, shape {tuple(var.shape)}): {advice}"
    )


_LIBRARIES = ("numpy", "scipy", "torch", "sympy", "pandas", "sklearn", "jax")


def library_function(frame) -> str | None:
    """The outermost library function on the stack above the user's code, if the stack at
    ``frame`` is inside one (``scipy.special.logsumexp``), else None."""
    outermost = None
    while frame is not None:
        name = frame.f_globals.get("__name__", "") or ""
        top = name.split(".", 1)[0]
        if top == "symjac":
            frame = frame.f_back
            continue
        filename = frame.f_code.co_filename
        if top in _LIBRARIES or "site-packages" in filename or "dist-packages" in filename:
            outermost = frame
            frame = frame.f_back
            continue
        break
    if outermost is None:
        return None
    code = outermost.f_code
    module = outermost.f_globals.get("__name__", "?")
    public = _public_module(module)
    return f"{public}.{getattr(code, 'co_qualname', code.co_name)}"


def _public_module(module: str) -> str:
    """``scipy.special._logsumexp`` -> ``scipy.special``: the name users import it by."""
    parts = module.split(".")
    while len(parts) > 1 and parts[-1].startswith("_"):
        parts.pop()
    return ".".join(parts)


def torch_name(func) -> str:
    """A torch function's name as users write it: ``torch.nn.functional.pad``, ``torch.sin``."""
    name = getattr(func, "__name__", repr(func))
    module = getattr(func, "__module__", None) or ""
    if module.startswith("torch.nn.functional") or module == "torch._C._nn":
        spelled = f"torch.nn.functional.{name}"
    elif module.startswith("torch.special") or module == "torch._C._special":
        spelled = f"torch.special.{name.removeprefix('special_')}"
    elif module.startswith("torch.linalg") or module == "torch._C._linalg":
        spelled = f"torch.linalg.{name.removeprefix('linalg_')}"
    elif module.startswith("torch.fft") or module == "torch._C._fft":
        spelled = f"torch.fft.{name.removeprefix('fft_')}"
    else:
        spelled = f"torch.{name}"
    return spelled + _module_hint()


def _module_hint() -> str:
    """`` (called by nn.Linear)`` when a torch.nn module's forward is on the stack."""
    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self") if frame.f_code.co_name == "forward" else None
        if owner is not None and type(owner).__module__.startswith("torch.nn"):
            return f" (called by nn.{type(owner).__name__})"
        frame = frame.f_back
    return ""


def unknown_method(name: str, var, attribute: bool = False) -> AttributeError:
    """An unsupported Tensor/ndarray method or attribute, with what to write instead."""
    from .trace import ops

    what = f"the attribute .{name}" if attribute else f"the method .{name}()"
    if name in ops.TORCH_API or name in ops.NUMPY_API:
        spelled = f"torch.{name}(x, ...)" if name in ops.TORCH_API else f"numpy.{name}(x, ...)"
        advice = f"call the function form instead: {spelled}"
    elif attribute or name in ("grad", "backward", "register_hook", "retain_grad"):
        advice = (
            "symjac computes derivatives itself; return the value and call symjac.jacobian "
            "(or compile/vjp) on the function instead of using autograd inside it"
        )
    else:
        advice = "see docs/operations.md for the supported operations"
    shape = f" (shape {tuple(var.shape)})" if var is not None else ""
    return UnsupportedMethodError(f"symjac cannot trace {what} of a traced tensor{shape}: {advice}.")


class UnsupportedMethodError(AttributeError, NotImplementedError):
    """A tensor method or attribute symjac does not record."""


def unknown_op(name: str, args) -> NotImplementedError:
    # A traced tensor by its slots: errors sits below the tensor module, which imports it.
    position = next((i for i, a in enumerate(args) if hasattr(a, "_trace") and hasattr(a, "_node")), 0)
    where = library_function(sys._getframe(1))
    if where is not None and not where.startswith("torch."):  # torch frames only dispatch
        name = f"{name}, called inside the library function {where},"
    return UnsupportedOpError(
        f"symjac cannot trace {name} (argument {position} is a traced tensor): it is not in the "
        "op table. See docs/operations.md or symjac.trace.ops.NUMPY_API / TORCH_API / METHODS for "
        "what is supported."
    )


class InternalError(RuntimeError):
    """A failure inside symjac itself (a bug): chained to the original exception."""


# Bug-type failures in a symjac frame; anything symjac raises on purpose comes from a `raise`
# statement and passes through, as do the user's own exceptions.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_USER_FACING = (
    UntraceableError,
    InPlaceError,
    UnsupportedOpError,
    UnsupportedMethodError,
    DtypeError,
    InternalError,
)


def _in_symjac(frame) -> bool:
    return frame.f_code.co_filename.startswith(_PACKAGE_DIR)


def _in_library(frame) -> bool:
    filename = frame.f_code.co_filename
    name = (frame.f_globals.get("__name__", "") or "").split(".", 1)[0]
    return (
        name in _LIBRARIES
        or name in ("llvmlite", "mpmath", "functools", "contextlib", "threading", "concurrent")
        or "site-packages" in filename
        or "dist-packages" in filename
        or filename.startswith(_STDLIB)
        or filename.startswith(("<frozen", "<lambdifygenerated"))  # SymPy's generated code
    )


def _stdlib() -> str:
    import sysconfig

    return sysconfig.get_paths()["stdlib"]


_STDLIB = _stdlib()


def internal_origin(exc: BaseException):
    """The symjac frame where ``exc`` went wrong, or None when it is the user's or deliberate.

    Walks the traceback from where the exception was raised outwards, over library frames
    (NumPy, SymPy, llvmlite, the standard library): the first frame that is symjac's or the
    user's decides. An exception raised in the user's code (their ZeroDivisionError, their own
    ValueError) is theirs; one raised by a symjac ``raise`` statement is a deliberate message.
    """
    import linecache

    if not isinstance(exc, Exception) or isinstance(exc, (MemoryError, *_USER_FACING)):
        return None
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    for frame, lineno in reversed(frames):
        if _in_symjac(frame):
            line = linecache.getline(frame.f_code.co_filename, lineno).lstrip()
            return None if line.startswith("raise") else (frame, lineno, frames)
        if not _in_library(frame):
            return None  # the user's code
    return None


def internal_error(api: str, exc: BaseException, origin) -> InternalError:
    """The message for a symjac bug: the API, where, the operation being processed if known."""
    frame, lineno, frames = origin
    where = f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_name} (line {lineno})"
    op = None
    for f, _ in reversed(frames):  # the innermost symjac frame that names the op it processes
        value = f.f_locals.get("op") if _in_symjac(f) else None
        name = value if isinstance(value, str) else getattr(value, "name", None)
        if isinstance(name, str):
            op = name
            break
    doing = f" while processing the operation `{op}`" if op else ""
    return InternalError(
        f"symjac.{api}: internal error in symjac{doing}, in {where}: {type(exc).__name__}: {exc}. "
        "This is a bug in symjac, not in your code; please report it with the function you "
        "traced (the original exception is chained above)."
    )


def public(func, name: str | None = None):
    """Decorate a public entry point: a symjac bug surfaces as :class:`InternalError`.

    The user's own exceptions and symjac's deliberate messages pass through unchanged; so does
    every exception on the success path, which costs one ``try``.
    """
    import functools

    api = name or func.__name__

    @functools.wraps(func)
    def entry(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            origin = internal_origin(exc)
            if origin is None:
                raise
            raise internal_error(api, exc, origin) from exc

    return entry


def public_as(name: str):
    """:func:`public` for a method or helper that stands for the API ``name``."""
    return lambda func: public(func, name)
