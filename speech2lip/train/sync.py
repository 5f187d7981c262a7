"""L_s, the contrastive sync loss of training: its windows (a pure function of seed and step),
their frames and the expert's scores of the composed mouth boxes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from speech2lip.config import TrainConfig
from speech2lip.data.batches import read_batch
from speech2lip.data.shards import WarpData
from speech2lip.models.assembled import Speech2Lip
from speech2lip.models.expert import WINDOW, negatives
from speech2lip.models.losses import contrastive_sync_loss
from speech2lip.models.syncnet import expert_faces

SYNC_SCALE = 2  # L_s composes its windows at half the mouth box's resolution
TRAIN_FILL_ROUNDS = 1  # `fill_holes` rounds in training: cracks only (rendering fills specks too)


def sync_windows(
    starts: np.ndarray, seed: int, step: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """The L_s windows of step `step` (a pure function of (seed, step)): `count` window
    starts from `starts` and, for each, the start of an off-sync audio window >= 5 frames
    away."""
    rng = np.random.default_rng([seed, step, 1])
    chosen = rng.choice(starts, count)
    return chosen, negatives(rng, chosen, starts, WINDOW)


def read_sync_batch(
    data: WarpData,
    starts: np.ndarray,
    wrong: np.ndarray,
    radius: int,
    offset: int,
    features: str = "mel",
) -> dict[str, np.ndarray]:
    """The frames of 5-frame windows (`sync_*` fields, window-major; the model's audio windows
    per `features`) with the expert's mel windows: in sync (frame start + `offset`) and off
    sync (frame `wrong`)."""
    ids = (starts[:, None] + np.arange(WINDOW)).reshape(-1)
    fields = ("mouth", "c2o_grid", "c2o_mask")  # what `sync_loss` composes with
    out = {f"sync_{k}": v for k, v in read_batch(data, ids, radius, features,
                                                 fields=fields).items()}  # fmt: skip
    n = len(data)
    out["sync_mel"] = data.read_field("mel", np.clip(starts + offset, 0, n - 1))
    out["sync_wrong_mel"] = data.read_field("mel", wrong)
    return out


def sync_loss(model: Speech2Lip, batch: dict, opts: TrainConfig, expert) -> torch.Tensor:
    """L_s: the composed mouth boxes of whole 5-frame windows, scored by the frozen expert
    against the in-sync audio (pulled together) and against off-sync audio (pushed apart). Both
    terms reach the generated frames, so the negatives carry gradients too.

    The expert sees 48x96 pixels, so the windows are composed at 1 / `SYNC_SCALE` of the mouth
    box (the lip grid, the stored C2O grid and the box pooled alike): a quarter of the cost,
    nothing the expert could see is lost. It scores the pasted lips before the Blend-Net, so L_s
    shapes the lips and leaves the Blend-Net to L_w (through the Blend-Net it lowered the mouth
    box's held-out PSNR by 2.5 dB on the demo)."""
    s = SYNC_SCALE
    cond, _ = model.condition(batch["sync_mel_context"])  # the shapes the audio predicts
    lips = model.canonical_lips(cond, batch["sync_time"], scale=s)
    mouth = F.avg_pool2d(batch["sync_mouth"], s)
    grid = F.avg_pool2d(batch["sync_c2o_grid"].permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
    valid = F.avg_pool2d(batch["sync_c2o_mask"][:, None].float(), s)[:, 0] > 0.999
    composed = model.paste(lips, mouth, grid, valid, fill_rounds=TRAIN_FILL_ROUNDS)
    frames = composed.reshape(-1, WINDOW, *composed.shape[1:])
    face = expert.face_embedding(expert_faces(frames, lower_half=False))
    mel = torch.cat([batch["sync_mel"], batch["sync_wrong_mel"]])[:, None]
    audio = expert.audio_embedding(mel.to(face.dtype))
    cos = (audio * torch.cat([face, face])).sum(dim=1)
    positive = torch.arange(len(cos), device=cos.device) < len(face)
    return contrastive_sync_loss(cos, positive)
