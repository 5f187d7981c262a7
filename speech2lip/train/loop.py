"""The training loop: one readable loop over deterministic batches, resumable bit for bit.

Batches are a pure function of (seed, step): step s trains on frames drawn with
`numpy.random.default_rng([seed, s])` and seeds torch with `seed + s`, so a run resumed from a
checkpoint at step k continues exactly as the uninterrupted run would. Checkpoints are dicts
(model, optimiser, step, options and their hash, package version), written atomically and
loaded with `weights_only=True`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from speech2lip import __version__
from speech2lip.atomic import atomic_path
from speech2lip.errors import Speech2LipError
from speech2lip.models import render_points
from speech2lip.train.model import ModelSizes, Speech2Lip
from speech2lip.warp.audio import context_indices
from speech2lip.warp.shards import WarpData

log = logging.getLogger(__name__)

FIELDS = ["canonical_lips", "canonical_mask", "mouth", "mouth_origin", "relative_pose",
          "c2o_grid", "c2o_mask"]  # fmt: skip
LOG_COLUMNS = ["step", "seconds", "total", "lips", "perceptual", "depth", "mouth"]
# Frame i's audio code is built from the mel windows of frames i + AUDIO_OFFSET - r ..
# i + AUDIO_OFFSET + r: with -2 the centre window (0.2 s = 5 frames) is centred on frame i.
AUDIO_OFFSET = -2


@dataclass(frozen=True)
class LoopOptions:
    """What the loop needs beyond the model sizes (the `train` config, resolved)."""

    steps: int = 1000
    batch_frames: int = 4
    lips_pixels: int = 0
    mouth_frames: int = 0
    lr: float = 2e-3
    depth_lr: float = 1e-4
    lips_weight: float = 1.0
    perceptual_weight: float = 0.0
    mouth_weight: float = 1.0
    mouth_start: int = 0
    depth_weight: float = 0.1
    holes_probability: float = 0.5
    c2o_iterations: int = 2
    checkpoint_every: int = 200
    log_every: int = 50
    seed: int = 0
    sizes: ModelSizes = field(default_factory=ModelSizes)

    def digest(self) -> str:
        """Hash of everything that changes the trained weights (not the logging cadence)."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("checkpoint_every", "log_every")}
        keep["steps"] = None  # a longer run may continue a shorter one
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def batch_ids(train_ids: np.ndarray, seed: int, step: int, size: int) -> np.ndarray:
    """The frames of step `step`: a pure function of (seed, step)."""
    return np.sort(np.random.default_rng([seed, step]).choice(train_ids, size, replace=False))


def read_batch(data: WarpData, ids: np.ndarray, radius: int) -> dict[str, np.ndarray]:
    """One batch of frames from the shards, as numpy (what DataLoader workers produce)."""
    out = {name: data.read_field(name, ids) for name in FIELDS}
    ctx = context_indices(ids + AUDIO_OFFSET, radius, len(data))
    out["mel_context"] = data.read_field("mel", ctx.reshape(-1)).reshape(*ctx.shape, 80, 16)
    out["time"] = (ids / len(data)).astype(np.float32)
    return out


def to_device(arrays: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    """A numpy batch as tensors on `device` (images in 0..1, masks bool, poses float32)."""
    out = {k: torch.as_tensor(np.ascontiguousarray(v)).to(device) for k, v in arrays.items()}
    for key in ("canonical_lips", "mouth"):
        out[key] = out[key].permute(0, 3, 1, 2).float() / 255
    for key in ("canonical_mask", "c2o_mask"):
        out[key] = out[key].bool()
    for key in ("relative_pose", "c2o_grid"):
        out[key] = out[key].float()
    return out


def to_tensors(data: WarpData, ids: np.ndarray, radius: int, device) -> dict[str, torch.Tensor]:
    """One batch of frames from the shards as tensors on `device`."""
    return to_device(read_batch(data, ids, radius), device)


def _as_is(item):
    return item


class StepBatches(torch.utils.data.Dataset):
    """Item `step` = (step, the numpy batch of that step): DataLoader workers read ahead while
    the main process trains, and the batches stay a pure function of (seed, step)."""

    def __init__(self, data: WarpData, train_ids: np.ndarray, opts: LoopOptions) -> None:
        self.data, self.train_ids, self.opts = data, train_ids, opts

    def __len__(self) -> int:
        return self.opts.steps

    def __getitem__(self, step: int) -> tuple[int, dict[str, np.ndarray]]:
        o = self.opts
        ids = batch_ids(self.train_ids, o.seed, step, o.batch_frames)
        return step, read_batch(self.data, ids, o.sizes.audio_radius)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[:, None].to(a.dtype)
    return ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[1]).clamp(min=1)


def losses(
    model: Speech2Lip, batch: dict, opts: LoopOptions, step: int, perceptual=None
) -> dict[str, torch.Tensor]:
    """Every loss term of one step (unweighted) and the weighted total under "total"."""
    code = model.audio_code(batch["mel_context"])
    target, mask = batch["canonical_lips"], batch["canonical_mask"]
    b = target.shape[0]
    full = b if opts.mouth_frames <= 0 else min(opts.mouth_frames, b)  # frames drawn whole
    lips = model.canonical_lips(code[:full], batch["time"][:full], random=True)
    if opts.lips_pixels > 0:  # L_m on random pixels of every frame: more frames per step
        pix = torch.randint(0, target.shape[2] * target.shape[3], (b, opts.lips_pixels),
                            device=target.device)  # fmt: skip
        time_ = batch["time"] if model.lips.use_time else None
        rgb = render_points(model.lips, model.uv[pix], code, time_, model.cell, random=True)
        want = target.flatten(2).transpose(1, 2).gather(1, pix[..., None].expand(-1, -1, 3))
        keep = mask.flatten(1).gather(1, pix).to(rgb.dtype)
        out = {"lips": (((rgb - want) ** 2).mean(-1) * keep).sum() / keep.sum().clamp(min=1)}
    else:
        out = {"lips": masked_mse(lips, target[:full], mask[:full])}
    total = opts.lips_weight * out["lips"]
    target, mask = target[:full], mask[:full]
    batch = {k: v[:full] for k, v in batch.items()}  # L_w and the perceptual term: whole frames
    if perceptual is not None and opts.perceptual_weight > 0:
        m = mask[:, None].to(lips.dtype)
        out["perceptual"] = perceptual(lips * m + target * (1 - m), target)
        total = total + opts.perceptual_weight * out["perceptual"]
    if opts.depth_weight > 0:
        out["depth"] = model.depth_photometric(batch["mouth"], batch["mouth_origin"],
                                               batch["relative_pose"])  # fmt: skip
        total = total + opts.depth_weight * out["depth"]
    if opts.mouth_weight > 0 and step >= opts.mouth_start:
        grid, valid = model.c2o(batch["relative_pose"], batch["mouth_origin"],
                                init=batch["c2o_grid"], init_valid=batch["c2o_mask"],
                                iterations=opts.c2o_iterations)  # fmt: skip
        holes = None
        if opts.holes_probability > 0:
            from speech2lip.models import black_holes

            _, holes = black_holes(batch["mouth"], opts.holes_probability)
        composed = model.compose(lips, batch["mouth"], grid, valid, holes)
        out["mouth"] = F.mse_loss(composed, batch["mouth"])
        total = total + opts.mouth_weight * out["mouth"]
    out["total"] = total
    return out


def lips_psnr(model: Speech2Lip, data: WarpData, ids: np.ndarray, radius: int, device) -> float:
    """Held-out PSNR (dB) of the canonical lips inside their valid masks."""
    err, count = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(ids), 16):
            batch = to_tensors(data, ids[start : start + 16], radius, device)
            lips = model.canonical_lips(model.audio_code(batch["mel_context"]), batch["time"],
                                        random=False)  # fmt: skip
            m = batch["canonical_mask"][:, None].float()
            err += float((((lips - batch["canonical_lips"]) ** 2) * m).sum())
            count += float(m.sum()) * 3
    return 10 * math.log10(1.0 / max(err / max(count, 1), 1e-12))


def constant_lips_psnr(data: WarpData, ids: np.ndarray, lips: np.ndarray) -> float:
    """PSNR (dB) of one fixed canonical-lips image `(lh, lw, 3)` (0..255) against frames `ids`
    inside their masks: what a predictor that ignores the audio scores."""
    err, count = 0.0, 0.0
    for _, arrays in data.stream(ids, batch=32):
        m = arrays["canonical_mask"][..., None].astype(bool)
        diff = (arrays["canonical_lips"].astype(np.float64) - lips) / 255
        err += float((diff**2 * m).sum())
        count += float(m.sum()) * 3
    return 10 * math.log10(1.0 / max(err / max(count, 1), 1e-12))


def static_psnr(data: WarpData, ids: np.ndarray) -> float:
    """The "static mouth" baseline: the canonical frame's lips for every held-out frame."""
    canon = data[int(data.canonical["canonical_index"])]["canonical_lips"].astype(np.float64)
    return constant_lips_psnr(data, ids, canon)


def mean_mouth_psnr(data: WarpData, train_ids: np.ndarray, ids: np.ndarray) -> float:
    """A second baseline that ignores the audio: the mean canonical lips of the train frames
    for every held-out frame. A model that does not beat it has not learned from the audio."""
    total = None
    for _, arrays in data.stream(train_ids, batch=64):
        part = arrays["canonical_lips"].astype(np.float64).sum(axis=0)
        total = part if total is None else total + part
    return constant_lips_psnr(data, ids, total / len(train_ids))


def save_checkpoint(path: Path, model, optimizer, step: int, opts: LoopOptions) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
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


def train(
    data: WarpData,
    out_dir: Path,
    opts: LoopOptions,
    device: str = "cpu",
    resume: str = "auto",
    perceptual=None,
    on_step: Callable[[int, dict, Speech2Lip], None] | None = None,
    workers: int = 0,
    train_ids: np.ndarray | None = None,
) -> tuple[Speech2Lip, dict]:
    """Train on `data`'s train split; checkpoints in `out_dir/ckpt/`, a CSV log in
    `out_dir/train_log.csv`. `resume`: 'auto' (continue when the last checkpoint's options
    hash matches, else start over and say so), 'yes' (continue or refuse), 'no'. `workers`
    DataLoader processes read batches ahead (0: read in this process). `train_ids` replaces
    the train split (e.g. to hold out other frames)."""
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    model = Speech2Lip(data.canonical, opts.sizes).to(device)
    depth_params = list(model.depth.parameters())
    others = [p for n, p in model.named_parameters() if not n.startswith("depth.")]
    optimizer = torch.optim.Adam([{"params": others, "lr": opts.lr},
                                  {"params": depth_params, "lr": opts.depth_lr}])  # fmt: skip
    start = 0
    last = ckpt_dir / "last.pt"
    if resume != "no" and last.is_file():
        state = load_checkpoint(last)
        if state.get("digest") == opts.digest():
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = int(state["step"])
            log.info("train: resuming from %s at step %d", last, start)
        elif resume == "yes":
            raise Speech2LipError(
                f"{last} was trained with other options (hash {state.get('digest')}, now "
                f"{opts.digest()}); remove {ckpt_dir} or run without --resume to start over"
            )
        else:
            log.info("train: %s has other options: starting over", last)
    elif resume == "yes":
        raise Speech2LipError(f"--resume: no checkpoint at {last}")
    train_ids = data.split_ids("train") if train_ids is None else np.asarray(train_ids)
    if len(train_ids) < opts.batch_frames:
        raise Speech2LipError(
            f"the train split has {len(train_ids)} frames, fewer than train.batch_frames "
            f"({opts.batch_frames})"
        )
    log_path = out_dir / "train_log.csv"
    if start == 0:
        log_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    history: dict[str, float] = {}
    loader = torch.utils.data.DataLoader(
        StepBatches(data, train_ids, opts), batch_size=None, sampler=range(start, opts.steps),
        num_workers=workers, prefetch_factor=2 if workers else None,
        collate_fn=_as_is,  # keep numpy: converted on the training device below
    )  # fmt: skip
    for step, arrays in loader:
        torch.manual_seed(opts.seed + step)
        batch = to_device(arrays, device)
        terms = losses(model, batch, opts, step, perceptual)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        history = {k: float(v.detach()) for k, v in terms.items()}
        done = step + 1
        if done % opts.log_every == 0 or done == opts.steps:
            row = {"step": done, "seconds": round(time.monotonic() - t0, 2), **history}
            new = not log_path.exists()
            with open(log_path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS, restval="")
                if new:
                    writer.writeheader()
                writer.writerow(row)
            log.info("train: step %d/%d %s", done, opts.steps,
                     " ".join(f"{k} {v:.4f}" for k, v in history.items()))  # fmt: skip
        if done % opts.checkpoint_every == 0 or done == opts.steps:
            save_checkpoint(last, model, optimizer, done, opts)
        if on_step is not None:
            on_step(done, history, model)
    return model, history
