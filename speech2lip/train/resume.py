"""Resuming training: the checkpoint (`ckpt/last.pt`: weights, optimizer, step, options and
their digest, and fingerprints of the training data and of the code) and the step logs trimmed
to match the step a run starts from."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from speech2lip import __version__
from speech2lip.atomic import atomic_path
from speech2lip.errors import Speech2LipError

# the columns of train_log.csv
LOG_COLUMNS = ["step", "seconds", "total", "lips", "perceptual", "depth", "mouth",
               "mouth_perceptual", "sync", "adversarial", "critic"]  # fmt: skip


@functools.cache
def code_fingerprint() -> str:
    """A hash of this speech2lip's Python sources: a checkpoint from other code is not
    continued (it may have another model, loss or sampling; the train stage re-runs because
    its code changed, and must not hand back the old run)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def data_fingerprint(data) -> str:
    """A hash of the warp index the run trains on (it names every shard, with its size)."""
    return hashlib.sha256(data.index_path.read_bytes()).hexdigest()[:16]


def why_not_resume(state: dict, model, opts, data) -> str | None:
    """Why checkpoint `state` cannot be continued by this run, in words; None when it can."""
    if state.get("digest") != opts.digest():
        return f"was trained with other options (hash {state.get('digest')}, now {opts.digest()})"
    if "code" not in state:
        return "was written by an older speech2lip"
    if state["code"] != code_fingerprint():
        return "was written by other speech2lip code"
    if state.get("data") != data_fingerprint(data):
        return "was trained on other data (the warp stage re-ran since)"
    theirs = state.get("model", {})
    # buffers may differ in size (the lip-shape regressor's fitted rows); parameters may not
    if theirs.keys() != model.state_dict().keys() or any(
        theirs[k].shape != p.shape for k, p in model.named_parameters()
    ):
        return "holds a model of another layout"
    return None


def save_checkpoint(
    path: Path, model, optimizer, step: int, opts, data, scaler=None, critic=None
) -> None:
    """`critic`: the patch critic's state (`Adversary.state_dict`), when it trains."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "scaler": scaler.state_dict() if scaler is not None else {},
             "options": json.dumps(asdict(opts)), "digest": opts.digest(),
             "data": data_fingerprint(data), "code": code_fingerprint(),
             "version": __version__, "seed": opts.seed}  # fmt: skip
    if critic is not None:
        state["critic"] = critic
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
