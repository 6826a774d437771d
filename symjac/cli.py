"""The ``symjac`` command line: ``symjac show FILE.py:function --shape 6 ...`` (or ``module:function``).

Each subcommand is a ``(configure, run)`` pair in ``COMMANDS``. A user's mistake (a wrong target,
the wrong number of ``--shape`` flags, code that cannot be traced) ends in one line on stderr and
exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import pathlib
import shutil
import sys
import time
import traceback

import numpy as np

USAGE_ERROR = 2  # argparse's status for a bad command line; ours for every other user mistake
SUMMARY_ENTRIES = 10  # entries a summarised matrix lists


class UsageError(Exception):
    """A mistake in the command or in the user's code: reported in one line, exit status 2."""


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one}" if n == 1 else f"{n} {many or one + 's'}"


# --- loading the target -----------------------------------------------------------------------


def _load(target: str):
    """The function named by ``path/to/file.py:func`` or ``package.module:func``."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise UsageError(f"expected FILE.py:FUNCTION or MODULE:FUNCTION, got {target!r}")
    if where.endswith(".py") or os.sep in where or "/" in where or pathlib.Path(where).exists():
        module = _load_file(pathlib.Path(where))
        origin = where
    else:
        module = _load_module(where)
        origin = f"module {where}"
    func = module
    for part in name.split("."):
        func = getattr(func, part, None)
    if not callable(func):
        raise UsageError(f"{origin} has no function {name!r}")
    return func


def _load_file(file: pathlib.Path):
    if not file.is_file():
        raise UsageError(f"no such file: {file}")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent.resolve()))  # so the model can import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise UsageError(f"{file} failed to import: {_describe(exc)}") from exc
    return module


def _load_module(name: str):
    # `symjac` is a console script, so the working directory is not on sys.path as with `python -m`
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise UsageError(
                f"no module named {name!r} (give a file as path/to/model.py:FUNCTION, or run from "
                "the folder that holds the package)"
            ) from exc
        raise UsageError(f"module {name} failed to import: {_describe(exc)}") from exc
    except Exception as exc:
        raise UsageError(f"module {name} failed to import: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line)``, the line being the last one outside symjac."""
    text = f"{type(exc).__name__}: {exc}"
    package = str(pathlib.Path(__file__).parent)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(package)]
    if frames and frames[-1].filename != __file__:
        text += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    return text


def _shape(text: str) -> tuple[int, ...]:
    text = text.strip().strip("()")
    if text in ("", "scalar"):
        return ()
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--shape takes comma-separated sizes such as 3,3, got {text!r}"
        ) from None


def _check_arity(func, name: str, n_shapes: int):
    """One --shape per positional parameter (parameters with defaults may be left out)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let tracing decide
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return
    required = sum(p.default is p.empty for p in positional)
    if not required <= n_shapes <= len(positional):
        wanted = str(required) if required == len(positional) else f"{required} to {len(positional)}"
        raise UsageError(
            f"{name} takes {_plural(len(positional), 'argument')}, got {_plural(n_shapes, '--shape flag')}: "
            f"give {wanted} (one per argument, e.g. --shape 6 --shape 3,3)"
        )


# --- show -------------------------------------------------------------------------------------


def _configure_show(p: argparse.ArgumentParser):
    p.add_argument("target", help="path/to/model.py:function or package.module:function")
    p.add_argument(
        "--shape",
        action="append",
        type=_shape,
        default=[],
        help="shape of the next argument, e.g. 6 or 3,3 (repeat per argument; 'scalar' for 0-d)",
    )
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--names", help="comma-separated base names for the arguments' symbols")
    p.add_argument("--full", action="store_true", help="print the whole matrix, however large")
    p.add_argument("--latex", metavar="FILE", help="write the Jacobian as LaTeX to FILE ('-' prints it)")
    p.add_argument("--spy", metavar="PNG", help="save the sparsity picture to PNG (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")


def _matrix_text(view, full: bool) -> str:
    """The pretty matrix when it fits the terminal (or ``full``), else a summary."""
    from .symbolic import pretty, sstr

    rows, cols = view.shape
    width, height = shutil.get_terminal_size((100, 40))
    if full or rows * cols <= 400:
        text = pretty(view.matrix)
        lines = text.splitlines()
        if full or (max(map(len, lines), default=0) <= width and len(lines) <= max(height, 40)):
            return text
    entries = list(view._entries())
    shown = entries[:SUMMARY_ENTRIES]
    out = [
        f"{rows} x {cols} matrix, {_plural(len(entries), 'nonzero entry', 'nonzero entries')}"
        + (f" (first {len(shown)}; --full prints the matrix):" if len(shown) < len(entries) else ":")
    ]
    out += [f"  J[{r}, {c}] = {sstr(e)}" for r, c, e in shown]
    return "\n".join(out)


def _run_show(args) -> int:
    import symjac

    func = _load(args.target)
    if not args.shape:
        raise UsageError("give one --shape per argument of the function (e.g. --shape 6)")
    name = args.target.rpartition(":")[2]
    _check_arity(func, name, len(args.shape))
    dtype = np.dtype(args.dtype)
    examples = [np.zeros(s, dtype=dtype) for s in args.shape]
    start = time.perf_counter()
    names = args.names.split(",") if args.names else None
    try:
        view = symjac.symbolic(func, *examples, names=names)
    except Exception as exc:
        raise UsageError(f"cannot trace {name}: {_describe(exc)}") from exc
    t_symbolic = time.perf_counter() - start
    rows, cols = view.shape
    print(f"Exact Jacobian ({_plural(rows, 'output element')} x {_plural(cols, 'input element')}):")
    print(_matrix_text(view, args.full))
    print()
    print(view.report_table())
    rng = np.random.default_rng(0)
    point = tuple(rng.uniform(0.1, 1.0, s).astype(dtype) for s in args.shape)
    inputs = point[0] if len(point) == 1 else point
    start = time.perf_counter()
    symjac.jacobian(func, inputs)
    t_build = time.perf_counter() - start
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.2:
        symjac.jacobian(func, inputs)
        n += 1
    t_call = (time.perf_counter() - start) / n
    print()
    print(
        f"symbolic: {t_symbolic * 1e3:.1f} ms, compile: {t_build * 1e3:.1f} ms, "
        f"warm call: {t_call * 1e6:.1f} us (symjac.jacobian at a random point)"
    )
    if args.latex:
        text = view.latex()
        if args.latex == "-":
            print(text)
        else:
            try:
                pathlib.Path(args.latex).write_text(text + "\n")
            except OSError as exc:
                raise UsageError(f"cannot write --latex {args.latex}: {exc.strerror}") from exc
            print(f"wrote {args.latex}")
    if args.spy:
        try:
            view.spy(args.spy)
        except ImportError as exc:  # matplotlib is an optional extra
            raise UsageError(str(exc)) from exc
        except OSError as exc:
            raise UsageError(f"cannot write --spy {args.spy}: {exc.strerror}") from exc
        print(f"wrote {args.spy}")
    return 0


def _configure_cache(p) -> None:
    p.add_argument("action", choices=["info", "clear"], help="info: where and how big; clear: empty it")


def _run_cache(args) -> int:
    from .backend import diskcache

    if args.action == "clear":
        print(f"symjac: removed {diskcache.clear()} files from {diskcache.cache_dir()}")
        return 0
    i = diskcache.info()
    state = "in use" if i["usable"] else "absent or refused (not used)"
    print(f"kernel cache: {i['path']} ({state})")
    print(f"entries: {i['entries']}, {i['bytes'] / 2**20:.1f} MiB of {i['max_bytes'] / 2**20:.0f} MiB")
    return 0


COMMANDS = {
    "show": (
        "print a function's exact Jacobian, its structure and timings",
        _configure_show,
        _run_show,
    ),
    "cache": ("where the kernel cache is and its size, or clear it", _configure_cache, _run_cache),
}


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Exact Jacobians of tensor code.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, configure, run) in COMMANDS.items():
        p = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
        # also accepted after the subcommand; SUPPRESS keeps a top-level --debug from being reset
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        configure(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None, prog: str = "symjac") -> int:
    """Run the command line; returns the exit status (2 for a usage error)."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):
        from . import progress

        progress.configure(enabled=False)
    try:
        return args.run(args)
    except UsageError as exc:
        if args.debug:
            raise
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as exc:  # still one line unless --debug
        if args.debug:
            raise
        from .errors import InternalError, internal_origin

        if isinstance(exc, InternalError) or internal_origin(exc) is not None:  # a symjac bug
            print(
                f"{prog} {args.command}: internal error: {type(exc).__name__}: {exc} "
                "(rerun with --debug for the traceback, and please report it)",
                file=sys.stderr,
            )
        else:  # the user's code, or symjac's message about it
            print(f"{prog} {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
