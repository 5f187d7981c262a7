"""The lip-sync expert's conventions and read-outs, shared by the sync_expert stage, training
(L_s, held-out sync) and the evaluation: 5-frame windows, lower-face crops, the offset curve
and its summary, off-sync negatives, and loading a checked expert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from speech2lip.models.syncnet import SyncNetColor, expert_faces, load_sync_expert

WINDOW = 5  # video frames per expert input (0.2 s at 25 fps), as the mel window


CROP_HW = (48, 96)  # the expert's lower-face input size


def window_starts(ids: np.ndarray) -> np.ndarray:
    """First frames i of the windows i .. i+4 that lie wholly inside `ids` (sorted ids)."""
    ids = np.asarray(ids)
    inside = set(ids.tolist())
    return np.array([i for i in ids if all(i + k in inside for k in range(WINDOW))], np.int64)


def resize_crops(mouth: Tensor) -> Tensor:
    """Mouth boxes `(N, 3, H, W)` RGB 0..1 -> `(N, 3, 48, 96)` float16, resized as
    `expert_faces` resizes (antialiased bilinear), so a whole clip fits in memory."""
    x = F.interpolate(mouth.float(), size=CROP_HW, mode="bilinear", align_corners=False,
                      antialias=True)  # fmt: skip
    return x.half()


def small_crops(mouth: np.ndarray) -> Tensor:
    """`resize_crops` of uint8 mouth boxes `(N, H, W, 3)` as the shards store them."""
    return resize_crops(torch.from_numpy(np.ascontiguousarray(mouth)).permute(0, 3, 1, 2) / 255)


def expert_input(crops: Tensor, starts: np.ndarray, first: int = 0) -> Tensor:
    """Windows of pre-resized crops `(N, 3, 48, 96)` (crop k is frame `first` + k) starting at
    frames `starts` -> the expert's `(B, 15, 48, 96)`."""
    idx = torch.as_tensor(starts - first)[:, None] + torch.arange(WINDOW)
    return expert_faces(crops[idx].float(), lower_half=False)


def offset_curve(
    model: SyncNetColor,
    crops: Tensor,
    mel: Tensor,
    starts: np.ndarray,
    search: int,
    first: int = 0,
) -> np.ndarray:
    """Mean cosine between each window at `starts` (crops as `expert_input`) and the mel
    windows (`mel`: every frame of the clip) of frames start + k, for k = -search .. search
    (clamped to the clip) -> `(2 search + 1,)`."""
    n = len(mel)
    total = np.zeros(2 * search + 1)
    with torch.no_grad():
        for lo in range(0, len(starts), 32):
            part = starts[lo : lo + 32]
            face = model.face_embedding(expert_input(crops, part, first))
            for j, k in enumerate(range(-search, search + 1)):
                audio = model.audio_embedding(mel[np.clip(part + k, 0, n - 1)][:, None])
                total[j] += float((audio * face).sum())
    return total / max(len(starts), 1)


def negatives(rng: np.random.Generator, starts: np.ndarray, pool: np.ndarray, gap: int):
    """For each window start, another start from `pool` at least `gap` frames away."""
    out = rng.choice(pool, len(starts))
    for i in np.flatnonzero(np.abs(out - starts) < gap):
        far = pool[np.abs(pool - starts[i]) >= gap]
        out[i] = rng.choice(far) if len(far) else out[i]
    return out


def curve_summary(curve: np.ndarray, search: int) -> dict:
    """An offset curve over shifts -`search` .. `search` read out: the best offset (frames),
    the confidence (the peak over the median) and the curve itself, rounded."""
    return {"offset": int(np.argmax(curve)) - search,
            "confidence": float(curve.max() - np.median(curve)),
            "mean_cos": [round(float(c), 5) for c in curve]}  # fmt: skip


def load_checked(path) -> tuple[SyncNetColor | None, dict, str]:
    """This stage's `expert.pt` for its users (L_s, the evaluation's proxy): (the expert, or
    None when its ground-truth check failed or the file is missing; its metadata; why)."""
    path = Path(path)
    if not path.is_file():
        return None, {}, f"no sync expert at {path}"
    model, meta = load_sync_expert(path, with_meta=True)
    if not meta.get("usable", False):
        return None, meta, f"the sync expert {path} failed its ground-truth check (see " \
            "sync_expert.json)"  # fmt: skip
    return model, meta, "ok"
