"""The ``symjac`` command line: ``symjac show path/to/model.py:function --shape 6 ...``."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import time

import numpy as np


def _load(target: str):
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise SystemExit(f"symjac: expected FILE:FUNCTION, got {target!r}")
    file = pathlib.Path(path)
    if not file.exists():
        raise SystemExit(f"symjac: no such file: {file}")
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(file.parent.resolve()))
    spec.loader.exec_module(module)
    func = getattr(module, name, None)
    if not callable(func):
        raise SystemExit(f"symjac: {file} has no function {name!r}")
    return func


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


def _stage(message: str, quiet: bool):
    if not quiet:
        print(f"symjac: {message}", file=sys.stderr, flush=True)


def show(args) -> int:
    import symjac

    func = _load(args.target)
    if not args.shape:
        raise SystemExit("symjac show: give one --shape per argument of the function (e.g. --shape 6)")
    dtype = np.dtype(args.dtype)
    examples = [np.zeros(s, dtype=dtype) for s in args.shape]
    start = time.perf_counter()
    _stage(f"tracing {args.target} and differentiating exactly ...", args.quiet)
    view = symjac.symbolic(func, *examples, names=args.names.split(",") if args.names else None)
    t_symbolic = time.perf_counter() - start
    rows, cols = view.shape
    print(f"Exact Jacobian ({rows} output elements x {cols} input elements):")
    if rows * cols <= 400:
        print(view.pretty())
    else:
        print("(large: nonzero entries listed)")
        for r, c, e in view._entries():
            print(f"  J[{r}, {c}] = {e}")
    print()
    print(view.report_table())
    rng = np.random.default_rng(0)
    point = tuple(rng.uniform(0.1, 1.0, s).astype(dtype) for s in args.shape)
    inputs = point[0] if len(point) == 1 else point
    _stage("compiling the kernel ...", args.quiet)
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
            pathlib.Path(args.latex).write_text(text + "\n")
            print(f"wrote {args.latex}")
    if args.spy:
        view.spy(args.spy)
        print(f"wrote {args.spy}")
    return 0


def cache(args) -> int:
    from . import diskcache

    if args.action == "clear":
        print(f"symjac: removed {diskcache.clear()} files from {diskcache.cache_dir()}")
        return 0
    i = diskcache.info()
    state = "in use" if i["usable"] else "absent or refused (not used)"
    print(f"kernel cache: {i['path']} ({state})")
    print(f"entries: {i['entries']}, {i['bytes'] / 2**20:.1f} MiB of {i['max_bytes'] / 2**20:.0f} MiB")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="symjac", description="Exact Jacobians of tensor code.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("show", help="print a function's exact Jacobian, its structure and timings")
    p.add_argument("target", help="path/to/model.py:function")
    p.add_argument(
        "--shape",
        action="append",
        type=_shape,
        default=[],
        help="shape of the next argument, e.g. 6 or 3,3 (repeat per argument; 'scalar' for 0-d)",
    )
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--names", help="comma-separated base names for the arguments' symbols")
    p.add_argument("--latex", metavar="FILE", help="write the Jacobian as LaTeX to FILE ('-' prints it)")
    p.add_argument("--spy", metavar="PNG", help="save the sparsity picture to PNG (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    c = commands.add_parser("cache", help="where the kernel cache is and its size, or clear it")
    c.add_argument("action", choices=["info", "clear"])
    args = parser.parse_args(argv)
    return cache(args) if args.command == "cache" else show(args)


if __name__ == "__main__":
    sys.exit(main())
