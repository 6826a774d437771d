"""Run a build on deep expressions (a chain of 2000 ``sin``) without a recursion limit.

symjac's own passes over expressions and graphs are iterative, but SymPy's are not: ``diff``,
``cse``, ``xreplace``, ``free_symbols`` and printing recurse once per level of nesting. A
chain about 150 deep raised RecursionError, and raising the recursion limit alone let the
interpreter overflow the main thread's C stack (a segfault). A build that hits the limit is run
again in a thread with a large stack (virtual memory, committed only as it is used) under a
raised limit, where the recursion depth it needs fits.
"""

from __future__ import annotations

import contextvars
import sys
import threading

STACK_BYTES = 1 << 30
RECURSION_LIMIT = 200_000  # about 5 KB of stack per level fits in STACK_BYTES
SAFE_LIMIT = 4000  # a recursion limit that an 8 MB thread stack holds
_lock = threading.Lock()
_active = 0
_saved_limit = None


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, retried on a deep stack if it runs out of recursion depth.

    Example:
        >>> import sympy
        >>> e = sympy.Symbol("x")
        >>> for _ in range(5000):
        ...     e = sympy.sin(e, evaluate=False)
        >>> call(lambda: e.free_symbols)  # SymPy walks the 5000 levels recursively
        {x}
    """
    if threading.current_thread().name == _THREAD_NAME:  # already on a deep stack
        return fn(*args, **kwargs)
    if sys.getrecursionlimit() > SAFE_LIMIT:  # no RecursionError would come before a crash
        return on_deep_stack(fn, *args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except RecursionError:
        pass
    return on_deep_stack(fn, *args, **kwargs)


_THREAD_NAME = "symjac-deep-stack"


def on_deep_stack(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a thread with a ``STACK_BYTES`` stack and a raised limit."""
    global _active, _saved_limit
    context = contextvars.copy_context()  # arith.light() and the like carry over
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = context.run(fn, *args, **kwargs)
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    with _lock:
        if _active == 0:
            _saved_limit = sys.getrecursionlimit()
            sys.setrecursionlimit(max(_saved_limit, RECURSION_LIMIT))
        _active += 1
        previous = threading.stack_size()
        threading.stack_size(STACK_BYTES)
        try:
            worker = threading.Thread(target=run, name=_THREAD_NAME, daemon=True)
            worker.start()
        finally:
            threading.stack_size(previous)
    try:
        worker.join()
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                sys.setrecursionlimit(_saved_limit)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
