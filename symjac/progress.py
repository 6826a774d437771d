"""Progress of long builds through one channel, the ``symjac`` logger; short builds say nothing.

A stage (differentiating, CSE, an LLVM compile) that is still running after a second logs an INFO
record naming it, then one per tenth of its work, then its time. Applications whose ``logging``
handles INFO records of ``logging.getLogger("symjac")`` receive them like any other; where
logging would drop them they go to stderr, one line each. ``SYMJAC_PROGRESS=0`` (or the
``symjac`` logger's level set above INFO) silences them; ``=1`` reports every stage however short.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

LOGGER = logging.getLogger("symjac")
AFTER = 1.0  # seconds a stage runs before it reports


class _Stderr(logging.StreamHandler):
    """A handler for whatever ``sys.stderr`` is at the time (test runners replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


_STDERR = _Stderr()
_STDERR.setFormatter(logging.Formatter("symjac: %(message)s"))
_settings = {"enabled": None}  # None: follow SYMJAC_PROGRESS


def configure(enabled: bool | None = None):
    """Turn progress reports on or off for this process (None: follow ``SYMJAC_PROGRESS``)."""
    _settings["enabled"] = enabled


def _delay() -> float | None:
    """Seconds before a stage reports, or None when reports are off."""
    setting = os.environ.get("SYMJAC_PROGRESS", "")
    enabled = _settings["enabled"]
    if enabled is False or (enabled is None and setting == "0"):
        return None
    return 0.0 if setting == "1" else AFTER


def _emit(message: str):
    if LOGGER.isEnabledFor(logging.INFO) and LOGGER.hasHandlers():
        LOGGER.info(message)
    elif LOGGER.level <= logging.INFO:
        # logging would drop it (not configured, or not for INFO): stderr, as logging.lastResort
        # does for warnings. Setting the symjac logger's level above INFO silences it.
        _STDERR.handle(LOGGER.makeRecord(LOGGER.name, logging.INFO, __file__, 0, message, (), None))


class Progress:
    """Context manager for one stage of ``total`` work items; ``update()`` per item done."""

    def __init__(self, label: str, total: int):
        self.label, self.total, self.done = label, total, 0
        self.started = False  # True once the stage has reported itself
        self._next = total / 10
        self._start = time.perf_counter()
        self._timer = None
        delay = _delay()
        if delay is None:
            return
        if delay == 0.0:
            self._report_start()
        else:
            self._timer = threading.Timer(delay, self._report_start)
            self._timer.daemon = True
            self._timer.start()

    def _report_start(self):
        self.started = True
        _emit(f"{self.label} ({self.total}) ...")

    def update(self, n: int = 1):
        self.done += n
        if self.started and self.done >= self._next:
            while self._next <= self.done:
                self._next += self.total / 10
            _emit(f"{self.label}: {100 * self.done // max(self.total, 1)}%")

    def close(self):
        if self._timer is not None:
            self._timer.cancel()
        if self.started:
            _emit(f"{self.label}: done in {time.perf_counter() - self._start:.1f} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stage(label: str, total: int) -> Progress:
    """A one-step stage (CSE, an LLVM compile) of ``total`` statements."""
    return Progress(label, total)
