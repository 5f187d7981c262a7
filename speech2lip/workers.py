"""Worker processes that never outlive the stage that started them.

A stage killed with SIGKILL cannot stop its workers itself. `die_with_parent`, run first in
each worker, asks Linux to kill the worker when its parent dies (prctl PR_SET_PDEATHSIG) and
exits at once when the parent is already gone; `parent_alive` lets a worker check before it
renames a finished file into place, so an orphan never publishes an output.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int, *_ignored) -> None:
    """Be killed when process `parent_pid` (our parent) dies; exit now if it already has.
    Extra arguments are ignored, so it can be a DataLoader's `worker_init_fn` via partial."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the check below and parent_alive remain
        pass
    if os.getppid() != parent_pid:  # died before prctl took effect
        os._exit(1)


def parent_alive(parent_pid: int) -> bool:
    """Whether our parent is still process `parent_pid` (an orphan is adopted by another)."""
    return os.getppid() == parent_pid
