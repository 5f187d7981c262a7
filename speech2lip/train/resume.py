"""Resuming training: the checkpoint (`ckpt/last.pt`: weights, optimizer, step, options and
their digest) and the step logs trimmed to match the step a run starts from."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import torch

from speech2lip import __version__
from speech2lip.atomic import atomic_path
from speech2lip.errors import Speech2LipError

# the columns of train_log.csv
LOG_COLUMNS = ["step", "seconds", "total", "lips", "perceptual", "depth", "mouth",
               "mouth_perceptual", "sync"]  # fmt: skip


def save_checkpoint(path: Path, model, optimizer, step: int, opts, scaler=None) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "scaler": scaler.state_dict() if scaler is not None else {},
             "options": json.dumps(asdict(opts)), "digest": opts.digest(),
             "version": __version__, "seed": opts.seed}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise Speech2LipError(
            f"checkpoint {path} is unreadable ({str(exc).splitlines()[0]}); delete it to start over"
        ) from None


def trim_step_log(path: Path, start: int) -> None:
    """A CSV log with a `step` column, made to match a run that starts at step `start`: gone
    when it starts over; rows past `start` dropped (a killed run may have logged past its last
    checkpoint, and an earlier run's rows must not follow the new ones)."""
    path = Path(path)
    if start == 0:
        path.unlink(missing_ok=True)
        return
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        kept = [r for r in reader if int(r["step"]) <= start]
        fields = reader.fieldnames or LOG_COLUMNS
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(kept)


def last_logged(path: Path) -> dict[str, float]:
    """The losses of the last row of train_log.csv (what a finished run ended with)."""
    if not Path(path).is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: float(v) for k, v in rows[-1].items() if k not in ("step", "seconds") and v != ""}
