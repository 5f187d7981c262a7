"""The one exception type users see, and how to name the fix for a file an earlier stage made."""

from __future__ import annotations

from pathlib import Path


class Speech2LipError(Exception):
    """An error the user can fix. The message names the file (or config key) and the fix.

    The CLI prints it as a single line and exits non-zero; anything else is a bug and keeps its
    traceback.
    """


# The stage whose output each file is (named in the fix).
MAKERS = {
    "meta.json": "resample", "audio.wav": "resample", "frames.mkv": "resample",
    "landmarks.npz": "landmarks", "fit.npz": "fit3dmm", "geometry.h5": "pose_depth",
    "index.json": "warp", "expert.pt": "sync_expert", "model.pt": "train",
}  # fmt: skip


def remake(path: str | Path) -> str:
    """How to make `path` again, in words a user can paste."""
    stage = MAKERS.get(Path(path).name)
    if stage is None:
        return "re-run the stage that made it"
    return f"re-run {stage}: snakemake --cores all {path} --forcerun {stage}"
