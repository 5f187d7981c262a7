"""Stage `train`: the lip model, the learned canonical depth and the Blend-Net.

Reads the `warp` stage's shards; writes `results/{subject}/train/model.pt` (everything needed
to rebuild the model alone: weights, sizes, the canonical data, options and their hash),
`train.json` (summary) and `loss_curve.png`, plus, undeclared so a failed job keeps them,
`ckpt/last.pt` (resume), `train_log.csv`, `heldout.csv` and `previews/step_NNNNNN.png`.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from speech2lip.atomic import atomic_path, write_json
from speech2lip.config import TrainConfig
from speech2lip.errors import Speech2LipError
from speech2lip.models.checkpoint import pick_device, save_model

log = logging.getLogger(__name__)
MIN_COVERAGE = 0.95  # share of the lip crop the composition should cover (else a warning)


def preview(model, data, ids: np.ndarray, radius: int, device: str) -> np.ndarray:
    """Rows of: ground-truth canonical lips | predicted | ground-truth mouth box | composed."""
    import torch

    from speech2lip.train.heldout import generate

    rows = []
    for _, b, lips, composed in generate(model, data, ids, radius, device):
        for i in range(len(lips)):
            tiles = [b["canonical_lips"][i], lips[i], b["mouth"][i], composed[i]]
            h = max(t.shape[1] for t in tiles)
            tiles = [torch.nn.functional.pad(t, (0, 4, 0, h - t.shape[1])) for t in tiles]
            rows.append(torch.cat(tiles, dim=2))
    img = torch.cat(rows, dim=1).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (img * 255).round().astype(np.uint8)


def loss_curve(path: Path, log_csv: Path, heldout_csv: Path, static: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [int(r["step"]) for r in rows]
    losses = ("total", "lips", "perceptual", "depth", "mouth", "mouth_perceptual", "sync",
              "adversarial", "critic")  # fmt: skip
    for key in losses:
        values = [float(r[key]) if r.get(key) else np.nan for r in rows]
        if not all(np.isnan(values)):
            a.plot(steps, values, label=key)
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_title("training losses")
    a.legend()
    if heldout_csv.exists():
        with open(heldout_csv) as f:
            held = list(csv.DictReader(f))
        steps = [int(r["step"]) for r in held]
        b.plot(steps, [float(r["psnr"]) for r in held], "o-", label="canonical lips")
        if held and held[0].get("mouth_psnr"):
            b.plot(steps, [float(r["mouth_psnr"]) for r in held], "s-", label="mouth box")
    b.axhline(static, color="grey", linestyle="--", label="static mouth (lips)")
    b.set_xlabel("step")
    b.set_ylabel("dB")
    b.set_title("held-out PSNR")
    b.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def sync_setup(expert_path, opts):
    """The frozen sync expert (for L_s and the held-out sync check) and the options aligned at
    its measured offset, or (None, options without L_s) with the reason: the expert is used
    only when the `sync_expert` stage found it usable on ground truth."""
    from speech2lip.models.expert import load_checked

    off = dataclasses.replace(opts, sync_weight=0.0)
    if not expert_path:
        if opts.sync_weight > 0:
            log.warning("train: no sync expert given (--expert), so L_s is off")
        return None, off, "off: no sync expert given"
    if not Path(expert_path).is_file():
        raise Speech2LipError(
            f"sync expert {expert_path} not found: run the sync_expert stage first (snakemake "
            "results/<subject>/sync_expert/expert.pt), or leave --expert out to train without L_s"
        )
    expert, meta, why = load_checked(expert_path)
    if expert is None:
        log.warning("train: L_s is off: %s", why)
        return None, off, f"off: {why}"
    if opts.sync_weight <= 0:
        return expert, opts, "off (sync_weight 0)"
    opts = dataclasses.replace(opts, sync_offset=int(meta.get("offset", 0)))
    return (
        expert,
        opts,
        f"on (weight {opts.sync_weight}, expert offset {opts.sync_offset:+d} frames)",
    )


class StepReport:
    """What training does at each checkpoint step: held-out scores (kept by step, the last
    step's are the final ones), a row of heldout.csv and a preview picture."""

    def __init__(self, data, test, out_dir: Path, opts, static: float, device: str) -> None:
        self.data, self.test, self.opts, self.static, self.device = data, test, opts, static, device
        self.shown = test[np.linspace(0, len(test) - 1, min(4, len(test))).round().astype(int)]
        self.out_dir, self.csv = out_dir, out_dir / "heldout.csv"
        self.scored: dict[int, dict] = {}
        self.last_step: int | None = None  # the last step the loop ran (None: none ran)

    def __call__(self, step: int, history: dict, model) -> None:
        self.last_step = step
        if step % self.opts.checkpoint_every == 0 or step == self.opts.steps:
            self.score(step, model)

    def score(self, step: int, model) -> None:
        from speech2lip.pictures import save_png
        from speech2lip.train.heldout import heldout_scores

        radius = self.opts.model.audio_radius
        scores = self.scored[step] = heldout_scores(model, self.data, self.test, radius,
                                                    self.device)  # fmt: skip
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["step", "psnr", "mouth_psnr"])
            writer.writerow([step, f"{scores['lips_psnr_db']:.3f}",
                             f"{scores['mouth_psnr_db']:.3f}"])  # fmt: skip
        log.info("train: step %d held-out lips PSNR %.2f dB (static mouth %.2f), mouth box "
                 "%.2f dB, lip crop covered %.1f %%", step, scores["lips_psnr_db"], self.static,
                 scores["mouth_psnr_db"], 100 * scores["lip_coverage"])  # fmt: skip
        img = preview(model, self.data, self.shown, radius, self.device)
        save_png(self.out_dir / "previews" / f"step_{step:06d}.png", img)


def warn_if_behind(final: float, static: float, mean_mouth: float, guided: bool = False,
                   coverage: float = 1.0) -> None:  # fmt: skip
    """Say so when the model does not beat the static or the mean mouth on held-out frames
    (`guided`: lip-shape guidance, whose mouth moves as widely as the real one, so PSNR, which
    rewards a blurred average mouth, may stay below the mean mouth's without anything wrong),
    or when its lips leave more of their crop to the background than `MIN_COVERAGE` allows."""
    if coverage < MIN_COVERAGE:
        log.warning("train: the composition covers %.1f %% of the lip crop on held-out frames "
                    "(expected %.0f %% or more): the background frame's own mouth shows through "
                    "the rest; the learned canonical depth may fold (see train.depth_lr)",
                    100 * coverage, 100 * MIN_COVERAGE)  # fmt: skip
    if not final > static:
        log.warning("train: the model (%.2f dB) does not beat the static mouth (%.2f dB) on "
                    "held-out frames; train longer (train.steps)", final, static)  # fmt: skip
    if not final > mean_mouth and guided:
        log.info("train: held-out lips PSNR %.2f dB, the train frames' mean mouth %.2f dB: a "
                 "mouth that opens as widely as the real one pays in PSNR where it is off in "
                 "time; judge it by evaluate's opening r and amplitude",
                 final, mean_mouth)  # fmt: skip
    elif not final > mean_mouth:
        log.warning("train: the model (%.2f dB) does not beat the train frames' mean mouth "
                    "(%.2f dB) on held-out frames: it has not yet learned from the audio",
                    final, mean_mouth)  # fmt: skip


def clip_audio(audio, data, opts) -> np.ndarray | None:
    """The clip's audio for `train.voice_shifts` and `train.voice_bands` (None when there
    is nothing to change, or no audio was given: then the regression hears the subject's voice
    only, and the log says so)."""
    if opts.model.shape_dim == 0 or not (opts.voice_shifts or opts.voice_bands):
        return None
    if audio is None:
        log.warning("train: no --audio given: the lip-shape regression hears the subject's "
                    "own voice only (train.voice_shifts and voice_bands need "
                    "resample/audio.wav)")  # fmt: skip
        return None
    from speech2lip.inputs import read_clip_audio

    return read_clip_audio(audio, len(data))


def run(index, out_dir, cfg: TrainConfig, threads: int = 1, resume: str = "auto",
        device: str = "auto", expert: str | None = None, audio=None) -> dict:  # fmt: skip
    """Train; write model.pt, train.json and loss_curve.png (and the undeclared extras).
    `expert`: the `sync_expert` stage's expert.pt, for L_s; `audio`: the resample stage's
    audio.wav, for `train.voice_shifts`."""
    import torch

    from speech2lip.data.shards import WarpData
    from speech2lip.models.losses import perceptual_loss
    from speech2lip.train.heldout import heldout_scores, mean_mouth_psnr, static_psnr
    from speech2lip.train.loop import pick_precision, train
    from speech2lip.train.presets import resolve

    t0 = time.monotonic()
    out_dir = Path(out_dir)
    opts = resolve(cfg)
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    sync_expert, opts, sync_state = sync_setup(expert, opts)
    data = WarpData(index)
    perceptual = perceptual_loss("alex").to(dev) if opts.perceptual_weight > 0 else None
    test = data.split_ids("test")
    test = test[:: max(1, len(test) // 32)]
    static = static_psnr(data, test)
    mean_mouth = mean_mouth_psnr(data, data.split_ids("train"), test)
    log.info("train: preset %s, %d steps of %d frames on %s; static-mouth baseline %.2f dB",
             cfg.preset, opts.steps, opts.batch_frames, dev, static)  # fmt: skip
    radius = opts.model.audio_radius
    report = StepReport(data, test, out_dir, opts, static, dev)
    workers = 1 if threads >= 2 else 0  # one process reads ahead while torch trains
    model, last = train(data, out_dir, opts, dev, resume, perceptual, report, workers,
                        expert=sync_expert if opts.sync_weight > 0 else None,
                        step_logs=(report.csv,), wav=clip_audio(audio, data, opts))  # fmt: skip
    steps = report.last_step or opts.steps  # earlier when train.minutes ran out
    if report.last_step is not None and steps not in report.scored:
        report.score(steps, model)
    scores = report.scored.get(steps) or heldout_scores(model, data, test, radius, dev)
    final = scores["lips_psnr_db"]
    save_model(out_dir / "model.pt", model, opts, data)
    loss_curve(out_dir / "loss_curve.png", out_dir / "train_log.csv", report.csv, static)
    summary = {
        "preset": cfg.preset, "steps": steps, "batch_frames": opts.batch_frames,
        "minutes": opts.minutes,
        "device": dev, "seconds": time.monotonic() - t0, "final_losses": last,
        "heldout_lips_psnr_db": final, "heldout_mouth_psnr_db": scores["mouth_psnr_db"],
        "heldout_lip_coverage": scores["lip_coverage"],
        "lip_shape_guidance": getattr(model, "guidance", None),
        "static_mouth_psnr_db": static,
        "beats_static_mouth": final > static, "mean_mouth_psnr_db": mean_mouth,
        "beats_mean_mouth": final > mean_mouth,
        "perceptual": getattr(perceptual, "name", "off (perceptual_weight 0)"),
        "sync_loss": sync_state,
        "precision": pick_precision(opts.precision, torch.device(dev).type),
        "options": dataclasses.asdict(opts), "digest": opts.digest(),
    }  # fmt: skip
    warn_if_behind(final, static, mean_mouth, model.shape is not None, scores["lip_coverage"])
    write_json(out_dir / "train.json", summary)
    return summary
