"""Whether a batch is split across threads: running per-point times of both ways, the faster taken.

Whether two threads beat one is the machine's business and can change within the hour: vCPUs
that are hyperthreads of one physical core share its vector units, and a neighbour may take a
core for a while. A few probes settled once were unreliable (the batch threads of
``symjac.backend.runtime`` were fresh for every batch then, and slow to start: three probes said
"no" to MLP batches that two threads ran 1.75x faster). So each way keeps a running average of
seconds per point, batches take the faster way, and every ``TRIAL_EVERY`` large batches the other
way runs ``TRIAL_LENGTH`` times in a row, only its last time counted. At most about one large
batch in eight runs the slower way.
"""

from __future__ import annotations

TRIAL_EVERY = 16  # large batches between trials of the way not taken
TRIAL_LENGTH = 3  # batches a trial runs, the last one timed
WEIGHT = 0.3  # of the newest time in a running average


class Split:
    """The running choice between one thread (False) and all of them (True) for one kernel."""

    def __init__(self):
        self.seconds: dict = {False: None, True: None}  # running seconds per point of each way
        self.batches = 0
        self.trial: tuple | None = None  # (way, batches left in it)

    def choose(self) -> tuple[bool, bool]:
        """``(split, timed)``: whether this batch runs on all threads, and whether its time counts."""
        if self.trial is not None:
            way, left = self.trial
            self.trial = (way, left - 1) if left > 1 else None
            return way, left == 1
        self.batches += 1
        if self.seconds[False] is None:
            return False, True
        if self.seconds[True] is None or self.batches % TRIAL_EVERY == 0:
            way = True if self.seconds[True] is None else not self.faster()
            self.trial = (way, TRIAL_LENGTH - 1) if TRIAL_LENGTH > 1 else None
            return way, TRIAL_LENGTH == 1
        return self.faster(), True

    def faster(self) -> bool:
        """Whether all threads are faster on the times so far (one thread until both are timed)."""
        one, many = self.seconds[False], self.seconds[True]
        return one is not None and many is not None and many < one

    def record(self, split: bool, seconds_per_point: float) -> None:
        old = self.seconds[split]
        self.seconds[split] = seconds_per_point if old is None else old + WEIGHT * (seconds_per_point - old)
