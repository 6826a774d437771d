"""Progress on stderr for long symbolic work (large traces and compiles); silent for small ones.

Uses tqdm when it is installed, else prints a line every tenth of the work. Set the environment
variable ``SYMJAC_PROGRESS=0`` to silence it, ``=1`` to show it for any size.
"""

from __future__ import annotations

import os
import sys
import time

LARGE = 2000  # work items (output elements, expressions) from which a stage reports


class Progress:
    def __init__(self, label: str, total: int):
        setting = os.environ.get("SYMJAC_PROGRESS", "")
        self.enabled = setting != "0" and (setting == "1" or total >= LARGE)
        self.label, self.total, self.done = label, total, 0
        self._bar = None
        self._next = total / 10
        self._start = time.perf_counter()
        if not self.enabled:
            return
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=f"symjac: {label}", file=sys.stderr, leave=False)
        except ImportError:
            print(f"symjac: {label} ({total}) ...", file=sys.stderr, flush=True)

    def update(self, n: int = 1):
        if not self.enabled:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.done >= self._next:
            self._next += self.total / 10
            print(
                f"symjac: {self.label}: {100 * self.done // max(self.total, 1)}%", file=sys.stderr, flush=True
            )

    def close(self):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        print(
            f"symjac: {self.label}: done in {time.perf_counter() - self._start:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stage(label: str, total: int):
    """A one-step stage (CSE, LLVM compile) reported when its size is large."""
    return Progress(label, total)
