"""The training loop: one readable loop over deterministic batches, resumable bit for bit.

Batches are a pure function of (seed, step): step s trains on frames drawn with
`numpy.random.default_rng([seed, s])` and seeds torch with `seed + s`, so a run resumed from a
checkpoint at step k continues exactly as the uninterrupted run would. Checkpoints are dicts
(model, optimiser, step, options and their hash, package version), written atomically and
loaded with `weights_only=True`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from speech2lip.config import TrainConfig
from speech2lip.data.batches import (
    read_batch,
    to_device,
)
from speech2lip.data.shards import WarpData
from speech2lip.errors import Speech2LipError
from speech2lip.models import black_holes
from speech2lip.models.assembled import Speech2Lip
from speech2lip.models.expert import window_starts
from speech2lip.progress import Progress
from speech2lip.train.adversarial import Adversary
from speech2lip.train.guidance import lip_shapes
from speech2lip.train.resume import (
    LOG_COLUMNS,
    last_logged,
    load_checkpoint,
    save_checkpoint,
    trim_step_log,
    why_not_resume,
)
from speech2lip.train.sync import TRAIN_FILL_ROUNDS, read_sync_batch, sync_loss, sync_windows
from speech2lip.workers import die_with_parent

log = logging.getLogger(__name__)


def pick_precision(name: str, device_type: str) -> str:
    """`auto`: bf16 on a CUDA device that supports it, else fp16 on CUDA, fp32 elsewhere."""
    if name != "auto":
        return name
    if device_type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def lips_pixel_prob(data: WarpData, train_ids: np.ndarray, focus: float) -> np.ndarray:
    """Where L_m draws its random pixels `(lh * lw,)`: a share `1 - focus` uniformly, the share
    `focus` in proportion to each canonical pixel's standard deviation over the train frames
    (the speech-sensitive pixels: mouth interior and lip edges), measured on up to 400 frames."""
    ids = train_ids[:: max(1, len(train_ids) // 400)]
    lips = data.read_field("canonical_lips", ids).astype(np.float32)
    std = lips.std(axis=0).mean(axis=-1).reshape(-1)
    uniform = np.full_like(std, 1.0 / len(std))
    if focus <= 0 or std.sum() <= 0:
        return uniform
    return (1 - focus) * uniform + focus * std / std.sum()


def mean_lips(data: WarpData, train_ids: np.ndarray) -> np.ndarray:
    """The train frames' mean canonical lips `(3, lh, lw)` in 0..1, each pixel over the frames
    where it is valid (the plain mean where it never is)."""
    total = count = plain = 0.0
    ids = np.sort(train_ids)
    for start in range(0, len(ids), 64):
        chunk = ids[start : start + 64]
        lips = data.read_field("canonical_lips", chunk).astype(np.float64) / 255
        mask = data.read_field("canonical_mask", chunk).astype(np.float64)[..., None]
        total, count, plain = total + (lips * mask).sum(0), count + mask.sum(0), plain + lips.sum(0)
    mean = np.where(count > 0, total / np.maximum(count, 1), plain / len(train_ids))
    return mean.transpose(2, 0, 1).astype(np.float32)


def lr_scale(step: int, steps: int, final: float, spent: float = 0.0) -> float:
    """Cosine decay from 1 at step 0 to `final` at the last step (a function of the step, so
    a resumed run follows the same schedule). With a time budget, `spent` is the share of it
    used so far, and the schedule follows whichever of the two is further along."""
    done = max(step / max(steps - 1, 1), min(spent, 1.0))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * done))


def batch_ids(train_ids: np.ndarray, seed: int, step: int, size: int) -> np.ndarray:
    """The frames of step `step`: a pure function of (seed, step)."""
    return np.sort(np.random.default_rng([seed, step]).choice(train_ids, size, replace=False))


def _as_is(item):
    return item


class StepBatches(torch.utils.data.Dataset):
    """Item `step` = (step, the numpy batch of that step): DataLoader workers read ahead while
    the main process trains, and the batches stay a pure function of (seed, step)."""

    def __init__(
        self,
        data: WarpData,
        train_ids: np.ndarray,
        opts: TrainConfig,
        shapes: np.ndarray | None = None,
    ) -> None:
        self.data, self.train_ids, self.opts, self.shapes = data, train_ids, opts, shapes
        self.sync_starts = window_starts(np.sort(train_ids)) if opts.sync_weight > 0 else None

    def __len__(self) -> int:
        return self.opts.steps

    def __getitem__(self, step: int) -> tuple[int, dict[str, np.ndarray]]:
        o = self.opts
        ids = batch_ids(self.train_ids, o.seed, step, o.batch_frames)
        out = read_batch(self.data, ids, o.model.audio_radius, o.model.features,
                         whole=whole_frames(o, len(ids)))  # fmt: skip
        if self.shapes is not None:  # lip-shape guidance: the frames' own codes
            out["lip_shape"] = self.shapes[ids]
        if self.sync_starts is not None and len(self.sync_starts) and step >= o.sync_start:
            starts, wrong = sync_windows(self.sync_starts, o.seed, step, o.sync_windows)
            out.update(read_sync_batch(self.data, starts, wrong, o.model.audio_radius,
                                       o.sync_offset, o.model.features))  # fmt: skip
        return step, out


def whole_frames(opts: TrainConfig, batch: int) -> int:
    """How many of a batch's frames (the first ones) are drawn whole and composed into their
    mouth boxes (L_w, the depth's photometric loss): `train.mouth_frames`, 0 for all."""
    return batch if opts.mouth_frames <= 0 else min(opts.mouth_frames, batch)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask[:, None].to(a.dtype)
    return ((a - b) ** 2 * m).sum() / (m.sum() * a.shape[1]).clamp(min=1)


def losses(
    model: Speech2Lip,
    batch: dict,
    opts: TrainConfig,
    step: int,
    perceptual=None,
    expert=None,
    pixel_prob: torch.Tensor | None = None,
    adversary=None,
) -> dict[str, torch.Tensor]:
    """Every loss term of one step (unweighted) and the weighted total under "total".
    `pixel_prob` `(lh * lw,)`: how L_m draws its random pixels (`lips_pixel_prob`; uniform
    when None). With lip-shape guidance the lips are conditioned on the frames' own lip-shape
    codes (`lip_shape`), so they learn to follow them. `adversary` (`Adversary`, from
    `opts.adversarial_start`): the patch critic scores `opts.adversarial_frames` whole crops."""
    code, _ = model.condition(batch["mel_context"], batch.get("lip_shape"))
    target, mask = batch["canonical_lips"], batch["canonical_mask"]
    b = target.shape[0]
    full = whole_frames(opts, b)
    critic = adversary is not None and step >= opts.adversarial_start
    n_whole = max(full, min(opts.adversarial_frames, b)) if critic else full
    n_drawn = b if model.conv_lips else n_whole  # a convolutional decoder draws every frame
    drawn = model.canonical_lips(code[:n_drawn], batch["time"][:n_drawn])
    lips = drawn[:full]
    if model.conv_lips:  # L_m on every pixel of every frame
        out = {"lips": masked_mse(drawn, target, mask)}
    elif opts.lips_pixels > 0:  # L_m on random pixels of every frame: more frames per step
        n_pix = target.shape[2] * target.shape[3]
        if pixel_prob is None:
            pix = torch.randint(0, n_pix, (b, opts.lips_pixels), device=target.device)
        else:  # more of them where the lips move (mouth interior, lip edges)
            pix = torch.multinomial(pixel_prob.expand(b, -1), opts.lips_pixels, replacement=True)
        rgb = model.lips_at(pix, code, batch["time"])
        want = target.flatten(2).transpose(1, 2).gather(1, pix[..., None].expand(-1, -1, 3))
        keep = mask.flatten(1).gather(1, pix).to(rgb.dtype)
        out = {"lips": (((rgb - want) ** 2).mean(-1) * keep).sum() / keep.sum().clamp(min=1)}
    else:
        out = {"lips": masked_mse(lips, target[:full], mask[:full])}
    total = opts.lips_weight * out["lips"]
    if critic:
        out["adversarial"] = adversary.score(drawn[:n_whole], target, mask, batch.get("lip_shape"))
        total = total + opts.adversarial_weight * out["adversarial"]
    target, mask = target[:full], mask[:full]
    whole = {k: v[:full] for k, v in batch.items() if not k.startswith("sync_")}
    use_perceptual = perceptual is not None and opts.perceptual_weight > 0
    if use_perceptual:  # L_m's perceptual part, on whole crops
        m = mask[:, None].to(lips.dtype)
        out["perceptual"] = perceptual(lips * m + target * (1 - m), target)
        total = total + opts.perceptual_weight * out["perceptual"]
    if opts.depth_weight > 0:
        out["depth"] = model.depth_photometric(whole["mouth"], whole["mouth_origin"],
                                               whole["relative_pose"])  # fmt: skip
        total = total + opts.depth_weight * out["depth"]
    if opts.mouth_weight > 0 and step >= opts.mouth_start:
        grid, valid = model.c2o(whole["relative_pose"], whole["mouth_origin"],
                                init=whole["c2o_grid"], init_valid=whole["c2o_mask"],
                                iterations=opts.c2o_iterations)  # fmt: skip
        holes = None
        if opts.holes_probability > 0:
            _, holes = black_holes(whole["mouth"], opts.holes_probability)
        composed = model.compose(
            lips, whole["mouth"], grid, valid, holes, fill_rounds=TRAIN_FILL_ROUNDS
        )
        out["mouth"] = F.mse_loss(composed.float(), whole["mouth"])
        total = total + opts.mouth_weight * out["mouth"]
        if use_perceptual:  # L_w's perceptual part
            out["mouth_perceptual"] = perceptual(composed, whole["mouth"])
            total = total + opts.perceptual_weight * out["mouth_perceptual"]
    if expert is not None and opts.sync_weight > 0 and "sync_mouth" in batch:
        out["sync"] = sync_loss(model, batch, opts, expert)
        total = total + opts.sync_weight * out["sync"]
    out["total"] = total
    return out


def train(
    data: WarpData,
    out_dir: Path,
    opts: TrainConfig,
    device: str = "cpu",
    resume: str = "auto",
    perceptual=None,
    on_step: Callable[[int, dict, Speech2Lip], None] | None = None,
    workers: int = 0,
    train_ids: np.ndarray | None = None,
    expert=None,
    step_logs: tuple[Path, ...] = (),
    wav: np.ndarray | None = None,
) -> tuple[Speech2Lip, dict]:
    """Train on `data`'s train split; checkpoints in `out_dir/ckpt/`, a CSV log in
    `out_dir/train_log.csv`. `resume`: 'auto' (continue when the last checkpoint has the same
    options, data, code and model layout, else start over and say so), 'yes' (continue or
    refuse), 'no'. `workers` DataLoader processes read batches ahead (0: read in this process).
    `train_ids` replaces the train split (e.g. to hold out other frames). `expert`: the frozen
    sync expert of L_s (`opts.sync_weight` > 0). `opts.precision` bf16/fp16 runs the networks
    under autocast (the geometry stays float32); `opts.compile` compiles the lip MLP and the
    Blend-Net.
    `step_logs`: the caller's other CSVs with a `step` column (e.g. `heldout.csv`), trimmed
    like `train_log.csv` to the step the run starts from. `opts.minutes`: a wall-clock budget
    for this call's loop; it stops at the budget or at `opts.steps`, whichever comes first, the
    learning rate decaying with whichever is further along (not reproducible bit for bit: the
    clock decides where it stops)."""
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    model = Speech2Lip(data.canonical, opts.model).to(device)
    depth_params = list(model.depth.parameters())
    others = [p for n, p in model.named_parameters() if not n.startswith("depth.")]
    optimizer = torch.optim.Adam([{"params": others, "lr": opts.lr},
                                  {"params": depth_params, "lr": opts.depth_lr}])  # fmt: skip
    device_type = torch.device(device).type
    precision = pick_precision(opts.precision, device_type)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")
    if expert is not None:
        expert = expert.to(device).eval().requires_grad_(False)
    adversary = (Adversary(device, model.shape_dim) if opts.adversarial_weight > 0
                 else None)  # fmt: skip
    start = 0
    last = ckpt_dir / "last.pt"
    if resume != "no" and last.is_file():
        state = load_checkpoint(last)
        why = why_not_resume(state, model, opts, data)
        if why is None and int(state.get("step", 0)) > opts.steps:
            why = f"is at step {state['step']}, past train.steps = {opts.steps}"
        if why is None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state.get("scaler", {}))
            if adversary is not None:
                adversary.load_state_dict(state["critic"])
            start = int(state["step"])
            log.info("train: resuming from %s at step %d", last, start)
        elif resume == "yes":
            raise Speech2LipError(
                f"{last} {why}; remove {ckpt_dir} or run without --resume yes to start over"
            )
        else:
            log.info("train: %s %s: starting over", last, why)
    elif resume == "yes":
        raise Speech2LipError(f"--resume: no checkpoint at {last}")
    train_ids = data.split_ids("train") if train_ids is None else np.asarray(train_ids)
    if len(train_ids) < opts.batch_frames:
        raise Speech2LipError(
            f"the train split has {len(train_ids)} frames, fewer than train.batch_frames "
            f"({opts.batch_frames})"
        )
    if model.lips_base is not None:  # (a resumed run's is the same)
        model.lips_base.copy_(torch.from_numpy(mean_lips(data, train_ids)))
    elif opts.model.lips_base == "mean":
        log.info("train: lips_base: mean applies to the implicit lip model only; the "
                 "convolutional decoder draws its lips whole")  # fmt: skip
    shapes = None
    if model.shape is not None:
        shapes, fitted = lip_shapes(data, train_ids, opts, wav)
        model.shape.load(fitted)
        gain = float(np.max(fitted["gain"])) if "gain" in fitted else None  # calibrated
        model.guidance = {"cv_opening_r": fitted["cv_opening_r"],  # for train.json
                          "cv_r_per_code": [None if not np.isfinite(v) else float(v)
                                            for v in fitted["cv_r"]],
                          "gain": gain,  # P/B/M's pull (none without phone rows)
                          "closure": (float(fitted["closure"])
                                      if model.shape.closure_row is not None else 0.0)}  # fmt: skip
    log_path = out_dir / "train_log.csv"
    for path in (log_path, *step_logs):
        trim_step_log(path, start)
    pixel_prob = None
    if opts.lips_pixels > 0 and opts.lips_focus > 0 and not model.conv_lips:
        pixel_prob = torch.as_tensor(lips_pixel_prob(data, train_ids, opts.lips_focus),
                                     device=device)  # fmt: skip
    if opts.compile:  # in place: the state dict keeps its keys
        model.lips.compile()
        model.blend.compile()
    t0 = time.monotonic()
    history = last_logged(log_path) if start >= opts.steps else {}  # already done: its losses
    loader = torch.utils.data.DataLoader(
        StepBatches(data, train_ids, opts, shapes), batch_size=None,
        sampler=range(start, opts.steps),
        num_workers=workers, prefetch_factor=2 if workers else None,
        worker_init_fn=partial(die_with_parent, os.getpid()) if workers else None,
        collate_fn=_as_is,  # keep numpy: converted on the training device below
    )  # fmt: skip
    progress = Progress("train", opts.steps, "steps", log)
    budget = opts.minutes * 60 if opts.minutes else None  # seconds of this run's loop
    for step, arrays in loader:
        torch.manual_seed(opts.seed + step)
        spent = (time.monotonic() - t0) / budget if budget else 0.0
        scale = lr_scale(step, opts.steps, opts.lr_final, spent)
        for group, base in zip(optimizer.param_groups, (opts.lr, opts.depth_lr), strict=True):
            group["lr"] = base * scale
        batch = to_device(arrays, device)
        with torch.autocast(device_type, dtype=amp, enabled=amp is not None):
            terms = losses(model, batch, opts, step, perceptual, expert, pixel_prob, adversary)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        history = {k: float(v.detach()) for k, v in terms.items()}
        if adversary is not None and (critic := adversary.critic_step()) is not None:
            history["critic"] = critic
        done = step + 1
        out_of_time = budget is not None and time.monotonic() - t0 >= budget
        last_step = done == opts.steps or out_of_time
        if done % opts.log_every == 0 or last_step:
            row = {"step": done, "seconds": round(time.monotonic() - t0, 2), **history}
            new = not log_path.exists()
            with open(log_path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS, restval="")
                if new:
                    writer.writeheader()
                writer.writerow(row)
            log.info("train: step %d/%d %s", done, opts.steps,
                     " ".join(f"{k} {v:.4f}" for k, v in history.items()))  # fmt: skip
        if done % opts.checkpoint_every == 0 or last_step:
            save_checkpoint(last, model, optimizer, done, opts, data, scaler,
                            critic=adversary.state_dict() if adversary else None)  # fmt: skip
        if on_step is not None:
            on_step(done, history, model)
        progress.update(done)
        if out_of_time and done != opts.steps:
            log.info("train: train.minutes (%g) spent at step %d of %d: stopping there",
                     opts.minutes, done, opts.steps)  # fmt: skip
            break
    return model, history
