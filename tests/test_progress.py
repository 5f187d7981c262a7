"""Progress lines: at most one per interval, with the rate's estimate of the time left."""

from __future__ import annotations

import logging

from speech2lip.progress import Progress, duration


def test_lines_come_every_interval_with_an_estimate(caplog):
    now = [0.0]
    log = logging.getLogger("speech2lip.test")
    progress = Progress("train", 100, "steps", log, every=20.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="speech2lip.test"):
        for step in range(1, 101):
            now[0] = step * 0.5  # 2 steps per second
            progress.update(step)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "train: 40/100 steps (40 %), 20 s, about 30 s left"
    assert lines[-1] == "train: 100/100 steps (100 %), 50 s"
    assert len(lines) == 3  # at 20 s, 40 s and the end


def test_durations_read_well():
    assert duration(42) == "42 s" and duration(185) == "3 min 05 s"
    assert duration(3725) == "1 h 02 min" and duration(-1) == "0 s"
