"""Training and rendering batches read from the warp shards: the fields, the audio offset, the
lip model's time input, and numpy -> tensor conversion (images 0..1, masks bool)."""

from __future__ import annotations

import numpy as np
import torch

from speech2lip.data.audio import context_indices
from speech2lip.data.shards import WarpData

FIELDS = ["canonical_lips", "canonical_mask", "mouth", "mouth_origin", "relative_pose",
          "c2o_grid", "c2o_mask"]  # fmt: skip


# Frame i's audio code is built from the mel windows of frames i + AUDIO_OFFSET - r ..
# i + AUDIO_OFFSET + r: with -2 the centre window (0.2 s = 5 frames) is centred on frame i.
AUDIO_OFFSET = -2


def timestamps(ids: np.ndarray, n_frames: int) -> np.ndarray:
    """The lip model's time input of frames `ids`: the source frame index over the clip's
    length, the same in training and at render time (where it is the background frame's)."""
    return (np.asarray(ids) / n_frames).astype(np.float32)


def read_batch(data: WarpData, ids: np.ndarray, radius: int) -> dict[str, np.ndarray]:
    """One batch of frames from the shards, as numpy (what DataLoader workers produce)."""
    out = {name: data.read_field(name, ids) for name in FIELDS}
    ctx = context_indices(ids + AUDIO_OFFSET, radius, len(data))
    out["mel_context"] = data.read_field("mel", ctx.reshape(-1)).reshape(*ctx.shape, 80, 16)
    out["time"] = timestamps(ids, len(data))
    return out


def to_device(arrays: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    """A numpy batch as tensors on `device` (images in 0..1, masks bool, poses float32)."""
    out = {k: torch.as_tensor(np.ascontiguousarray(v)).to(device) for k, v in arrays.items()}
    for key in list(out):
        name = key.removeprefix("sync_")
        if name in ("canonical_lips", "mouth"):
            out[key] = out[key].permute(0, 3, 1, 2).float() / 255
        elif name in ("canonical_mask", "c2o_mask"):
            out[key] = out[key].bool()
        elif name in ("relative_pose", "c2o_grid"):
            out[key] = out[key].float()
    return out


def to_tensors(data: WarpData, ids: np.ndarray, radius: int, device) -> dict[str, torch.Tensor]:
    """One batch of frames from the shards as tensors on `device`."""
    return to_device(read_batch(data, ids, radius), device)
