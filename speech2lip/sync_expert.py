"""Stage `sync_expert`: the lip-sync expert behind the sync loss L_s (and the evaluation proxy).

Wav2Lip's SyncNet_color (`speech2lip.models.syncnet`) scores whether 5 consecutive frames
match a 0.2 s mel window. Its input here is the observed **mouth box** of each frame (the
`warp` stage's `mouth`: cheeks, lips and chin, which the composition regenerates), resized to
48x96 as the lower half of a face, BGR. Frames i .. i+4 go with the mel window of frame i
(`warp`'s `mel`, Wav2Lip's `crop_audio_window`): that is "in sync", offset 0.

- With `sync_expert.pretrained` (a user's Wav2Lip `lipsync_expert.pth`) it is loaded, checked
  on the subject's ground truth and copied to `expert.pt`.
- Without it, an expert is trained on the subject's train split: positives are aligned
  windows, negatives the same frames with the audio of another time of the same video (at
  least `negative_gap` frames away), binary cross-entropy on the cosine, as Wav2Lip trains it.

Either way it is verified on ground truth before anyone uses it: over the test split, the mean
cosine between each 5-frame window and the audio shifted by -`search_offsets` ..
+`search_offsets` frames gives an offset curve; its peak is the expert's audio/video offset,
its height over the median the confidence. `sync_expert.json` says whether the expert is
usable (peak within `max_offset` frames of 0, confidence at least `min_confidence`, at least
`min_pair_accuracy` of held-out in-sync/off-sync pairs ranked right); `train` turns L_s off,
loudly, when it is not, and otherwise aligns its positives at the measured offset.

Writes `expert.pt` (Wav2Lip's format: `{"state_dict": ...}` plus our metadata; loads with
`speech2lip.models.load_sync_expert`), `sync_expert.json` and `offset_curve.png`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from speech2lip.atomic import atomic_path, write_json
from speech2lip.config import SyncExpertConfig
from speech2lip.errors import Speech2LipError
from speech2lip.models.expert import (
    CROP_HW,
    curve_summary,
    expert_input,
    negatives,
    offset_curve,
    small_crops,
    window_starts,
)
from speech2lip.models.syncnet import SyncNetColor, load_sync_expert
from speech2lip.progress import Progress

log = logging.getLogger(__name__)


def pair_scores(
    model: SyncNetColor, crops: Tensor, mel: Tensor, starts: np.ndarray, neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of the aligned pairs and of the same windows with the audio at `neg`."""
    pos_all, neg_all = [], []
    with torch.no_grad():
        for lo in range(0, len(starts), 32):
            s = slice(lo, lo + 32)
            faces = expert_input(crops, starts[s])
            for idx, out in ((starts[s], pos_all), (neg[s], neg_all)):
                a, v = model(mel[idx][:, None], faces)
                out.append((a * v).sum(1).numpy())
    return np.concatenate(pos_all), np.concatenate(neg_all)


def bce_step(model, optimizer, crops, mel, starts, audio_ids, labels) -> float:
    """One Wav2Lip-style expert step: BCE of the cosine against in-sync labels."""
    a, v = model(mel[audio_ids][:, None], expert_input(crops, starts))
    cos = (a * v).sum(1).clamp(1e-6, 1 - 1e-6)  # both embeddings >= 0 (ReLU): cos in [0, 1]
    loss = F.binary_cross_entropy(cos, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_expert(cfg: SyncExpertConfig, crops: Tensor, mel: Tensor, train_starts: np.ndarray):
    """Train SyncNet_color on windows of the train split; returns (model, loss history)."""
    torch.manual_seed(cfg.seed)
    model = SyncNetColor()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history = []
    model.train()
    progress = Progress("sync_expert", cfg.steps, "steps", log)
    for step in tqdm(range(cfg.steps), desc="sync_expert", unit="step", disable=None):
        rng = np.random.default_rng([cfg.seed, step])
        starts = rng.choice(train_starts, cfg.batch)
        labels = rng.random(cfg.batch) < 0.5
        wrong = negatives(rng, starts, train_starts, cfg.negative_gap)
        audio_ids = np.where(labels, starts, wrong)
        loss = bce_step(model, optimizer, crops, mel, starts, audio_ids,
                        torch.as_tensor(labels, dtype=torch.float32))  # fmt: skip
        history.append(loss)
        progress.update(step + 1)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log.info("sync_expert: step %d/%d BCE %.4f (mean of the last %d)", step + 1,
                     cfg.steps, np.mean(history[-cfg.log_every :]), cfg.log_every)  # fmt: skip
    return model.eval(), history


def verdict(curve: np.ndarray, search: int, pair_accuracy: float, cfg: SyncExpertConfig) -> dict:
    """Offset, confidence and whether the expert may be used, with the reason."""
    read = curve_summary(curve, search)
    best, confidence = read["offset"], read["confidence"]
    reasons = []
    if abs(best) > cfg.max_offset:
        reasons.append(f"its best audio/video offset is {best:+d} frames (allowed: within "
                       f"±{cfg.max_offset})")  # fmt: skip
    if confidence < cfg.min_confidence:
        reasons.append(f"its confidence {confidence:.3f} is below {cfg.min_confidence}")
    if pair_accuracy < cfg.min_pair_accuracy:
        reasons.append(f"it ranks only {100 * pair_accuracy:.0f}% of held-out pairs right "
                       f"(needed: {100 * cfg.min_pair_accuracy:.0f}%)")  # fmt: skip
    return {"offset": best, "confidence": confidence, "usable": not reasons,
            "reason": "; ".join(reasons) or "ok"}  # fmt: skip


def plot_curve(path: Path, curve: np.ndarray, search: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(range(-search, search + 1), curve, "o-")
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_xlabel("audio shift (frames; + = audio later)")
    ax.set_ylabel("mean cosine (held-out)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- run
def load_windows(index_path) -> tuple:
    """The subject's mouth boxes (pre-resized), mel windows and train/test window starts."""
    from speech2lip.data.shards import WarpData

    data = WarpData(index_path, fields=["mouth", "mel"])
    n = len(data)
    crops = torch.empty(n, 3, *CROP_HW, dtype=torch.float16)
    mel = np.empty((n, 80, 16), np.float32)
    for ids, arrays in data.stream(np.arange(n), batch=64):
        crops[ids] = small_crops(arrays["mouth"])
        mel[ids] = arrays["mel"]
    train, test = window_starts(data.split_ids("train")), window_starts(data.split_ids("test"))
    return crops, torch.from_numpy(mel), train, test


def run(index, out_dir, cfg: SyncExpertConfig, threads: int = 1) -> dict:
    """Load or train the expert, verify it on ground truth, write expert.pt and the report."""
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    torch.set_num_threads(max(1, threads))
    crops, mel, train_starts, test_starts = load_windows(index)
    if len(train_starts) < 2 or len(test_starts) < 1:
        raise Speech2LipError(
            f"{index}: too few 5-frame windows to train or check a sync expert "
            f"({len(train_starts)} train, {len(test_starts)} test); use a longer clip"
        )
    history: list[float] = []
    if cfg.pretrained:
        model = load_sync_expert(cfg.pretrained)
        source = f"pretrained: {cfg.pretrained}"
        log.info("sync_expert: loaded %s; checking it on the subject's ground truth",
                 cfg.pretrained)  # fmt: skip
    else:
        log.info("sync_expert: training SyncNet_color on %d train windows (%d steps of %d)",
                 len(train_starts), cfg.steps, cfg.batch)  # fmt: skip
        model, history = train_expert(cfg, crops, mel, train_starts)
        source = "trained on the subject's train split"
    search = cfg.search_offsets
    curve = offset_curve(model, crops, mel, test_starts, search)
    rng = np.random.default_rng([cfg.seed, 10**6])
    pool = np.concatenate([train_starts, test_starts])
    neg = negatives(rng, test_starts, pool, cfg.negative_gap)
    pos_cos, neg_cos = pair_scores(model, crops, mel, test_starts, neg)
    pair_accuracy = float((pos_cos > neg_cos).mean())
    accuracy = float(((pos_cos > 0.5).sum() + (neg_cos <= 0.5).sum()) / (2 * len(pos_cos)))
    check = verdict(curve, search, pair_accuracy, cfg)
    summary = {
        "source": source, "steps": 0 if cfg.pretrained else cfg.steps,
        "input": "observed mouth box resized to 48x96 (lower face), BGR, 5 frames; mel window "
                 "of the first frame (Wav2Lip's crop_audio_window)",
        "train_windows": len(train_starts), "test_windows": len(test_starts),
        "final_bce": float(np.mean(history[-cfg.log_every :])) if history else None,
        "heldout_accuracy": accuracy, "heldout_pair_accuracy": pair_accuracy,
        "heldout_mean_cos_in_sync": float(pos_cos.mean()),
        "heldout_mean_cos_off_sync": float(neg_cos.mean()),
        "offset_curve": {"shifts": list(range(-search, search + 1)),
                         "mean_cos": curve_summary(curve, search)["mean_cos"]},
        **check, "seconds": time.monotonic() - t0,
    }  # fmt: skip
    state = {"state_dict": model.state_dict(), "global_step": summary["steps"],
             "speech2lip": {"input": summary["input"], "offset": check["offset"],
                            "usable": check["usable"], "source": source}}  # fmt: skip
    with atomic_path(out_dir / "expert.pt") as tmp:
        torch.save(state, tmp)
    plot_curve(out_dir / "offset_curve.png", curve, search,
               f"sync expert on held-out ground truth: offset {check['offset']:+d}, "
               f"confidence {check['confidence']:.3f}")  # fmt: skip
    write_json(out_dir / "sync_expert.json", summary)
    level = logging.INFO if check["usable"] else logging.WARNING
    log.log(level, "sync_expert: held-out accuracy %.1f%% (pairs ranked right %.1f%%), offset "
            "%+d, confidence %.3f: %s", 100 * accuracy, 100 * pair_accuracy, check["offset"],
            check["confidence"], "usable" if check["usable"] else "NOT usable: "
            + check["reason"])  # fmt: skip
    return summary
