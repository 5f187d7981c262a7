"""Worker processes die with their stage: SIGKILL of the parent leaves no orphan and no file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speech2lip.atomic import atomic_path
from speech2lip.workers import die_with_parent, parent_alive


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited (nobody reaped it yet)


def kill_when(proc: subprocess.Popen, text: str, timeout: float = 240) -> list[int]:
    """SIGKILL `proc` once `text` shows in its stderr; its children at that moment."""
    deadline, seen = time.monotonic() + timeout, []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            break
        assert time.monotonic() < deadline, f"no {text!r} in time"
    else:
        raise AssertionError(f"the stage ended before {text!r}: {''.join(seen[-5:])}")
    kids = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return kids


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_warp_workers_die_with_a_killed_stage(demo_geometry, tmp_path):
    base, out = demo_geometry, tmp_path / "warp"
    r = base / "resample"
    cmd = [sys.executable, "-m", "speech2lip", "warp", "--frames", str(r / "frames.mkv"),
           "--meta", str(r / "meta.json"), "--audio", str(r / "audio.wav"),
           "--landmarks", str(base / "landmarks/landmarks.npz"),
           "--geometry", str(base / "pose_depth/geometry.h5"), "--out-dir", str(out),
           "--threads", "2",
           "--params", json.dumps({"shard_frames": 16, "batch_frames": 2})]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    kids = kill_when(proc, "written")
    assert kids, "the stage had no worker processes"
    written = set((out / "shards").glob("shard_*.h5"))
    time.sleep(4)
    assert not [k for k in kids if running(k)], "a worker outlived its stage"
    assert set((out / "shards").glob("shard_*.h5")) == written  # nothing renamed after death
    assert not (out / "index.json").exists()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_train_data_worker_dies_with_a_killed_stage(demo_warp, tmp_path):
    from conftest import TINY_SIZES, TINY_TRAIN

    params = json.dumps({**TINY_TRAIN, "steps": 2000, "log_every": 1,
                         "model": {**TINY_SIZES, "blend_channels": [4, 8]}})  # fmt: skip
    cmd = [
        sys.executable,
        "-m",
        "speech2lip",
        "train",
        "--index",
        str(demo_warp / "index.json"),
        "--out-dir",
        str(tmp_path),
        "--params",
        params,
        "--threads",
        "2",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    kids = kill_when(proc, "train: step 2/")
    assert kids, "no DataLoader worker"
    time.sleep(3)
    assert not [k for k in kids if running(k)], "the DataLoader worker outlived training"


def test_an_orphan_never_renames_its_file(tmp_path):
    target = tmp_path / "out.txt"
    orphan = atomic_path(target, keep_if=lambda: parent_alive(-1))
    with pytest.raises(RuntimeError, match="not renamed into place"), orphan as tmp:
        tmp.write_text("orphaned work")
    assert not target.exists() and not list(tmp_path.iterdir())
    assert parent_alive(os.getppid())
    die_with_parent(os.getppid())  # our parent is alive: returns (and arms the signal)
