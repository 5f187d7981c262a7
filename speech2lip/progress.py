"""Progress lines for long stages: done / total, the rate and an estimate of the time left.

Snakemake shows a stage's log only at the end (or with `tail -f logs/...`), and tqdm's bar is
off when the output is not a terminal; these lines are what a user follows in the log file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    """`1 h 02 min`, `3 min 05 s` or `42 s`."""
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class Progress:
    """Call `update(done)` as work completes: a line is logged when `every` seconds have passed
    since the last one, and at the end, e.g. `train: 120/500 steps (24 %), 1 min 10 s, about
    3 min 42 s left`."""

    def __init__(
        self, what: str, total: int, unit: str, logger: logging.Logger, every: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.what, self.total, self.unit, self.log = what, max(int(total), 0), unit, logger
        self.every, self.clock = every, clock
        self.start = self.last = clock()
        self.first: tuple[float, int] | None = None  # (time, done) at the first update

    def update(self, done: int) -> None:
        now = self.clock()
        if self.first is None:  # the rate counts from here (a resumed run starts part-way)
            self.first = (now, done)
        if now - self.last < self.every and done < self.total:
            return
        self.last = now
        elapsed = now - self.start
        share = f" ({100 * done / self.total:.0f} %)" if self.total else ""
        line = f"{self.what}: {done}/{self.total} {self.unit}{share}, {duration(elapsed)}"
        since = now - self.first[0]
        rate = (done - self.first[1]) / since if since > 0 else 0.0
        if done < self.total and rate > 0:
            line += f", about {duration((self.total - done) / rate)} left"
        self.log.info(line)
