"""Pause Python's cyclic garbage collector during a build.

A build allocates hundreds of thousands of SymPy objects and keeps most of them alive, so every
collection of the oldest generation walks them all again for nothing (they are freed by
reference counting, not by the cycle collector). Paused, an MLP builds in 195 ms instead of
228, a 2048-state Brusselator in 5.5 s instead of 6.6.
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def gc_paused():
    """Run the body with the cycle collector off (left as found afterwards)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
