"""Build progress: one channel (the symjac logger), silent for stages under a second."""

from __future__ import annotations


def test_progress_is_silent_for_short_stages_and_logs_long_ones(monkeypatch, caplog):
    import logging
    import time

    from symjac import progress

    monkeypatch.delenv("SYMJAC_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "AFTER", 0.05)
    with caplog.at_level(logging.INFO, logger="symjac"):
        with progress.stage("quick stage", 10):
            pass
        assert not caplog.records
        with progress.Progress("slow stage", 10) as p:
            time.sleep(0.3)
            p.update(10)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "slow stage (10) ..." and messages[1] == "slow stage: 100%"
    assert messages[-1].startswith("slow stage: done in ")
    progress.configure(enabled=False)
    try:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="symjac"):
            with progress.Progress("silenced", 1):
                time.sleep(0.1)
        assert not caplog.records
    finally:
        progress.configure(None)


def test_least_squares_example_prints_no_progress():
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "SYMJAC_PROGRESS"}
    env["PYTHONPATH"] = str(root)
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "least_squares_fit.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    # a build under a second says nothing; a slower one (a loaded machine) logs through one channel
    assert all(line.startswith("symjac: ") for line in done.stderr.splitlines()), done.stderr
    assert "%" not in done.stderr or "done in" in done.stderr
