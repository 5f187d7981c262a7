"""Training and rendering batches read from the warp shards: the fields, the audio offset, the
lip model's time input, and numpy -> tensor conversion (images 0..1, masks bool)."""

from __future__ import annotations

import numpy as np
import torch

from speech2lip.data.audio import AUDIO_OFFSET, SAMPLES_PER_FRAME, context_indices
from speech2lip.data.shards import WarpData

FIELDS = ["canonical_lips", "canonical_mask", "mouth", "mouth_origin", "relative_pose",
          "c2o_grid", "c2o_mask"]  # fmt: skip
# What composing a frame's mouth box needs: the box, where it lies, the pose, the C2O grid
WHOLE_FIELDS = ("mouth", "mouth_origin", "relative_pose", "c2o_grid", "c2o_mask")


# What the model hears per frame (`train.model.features`): the per-frame windows it joins, in
# this order, along their rows: mel (80 rows) and/or phone classes, decoded
# (`speech2lip.data.phones`) or as posteriors (`speech2lip.data.posteriors`).
AUDIO_FIELDS = {"mel": ("mel",), "phones": ("phones",), "mel+phones": ("mel", "phones"),
                "ppg": ("ppg",), "mel+ppg": ("mel", "ppg")}  # fmt: skip


def audio_fields(features: str | None) -> tuple[str, ...]:
    """The fields joined for `features` (None: mel, the paper's input)."""
    return AUDIO_FIELDS[features or "mel"]


def audio_rows(features: str | None) -> tuple[int, ...]:
    """The rows each joined field adds to a frame's audio window, e.g. (80, 14)."""
    from speech2lip.data.audio import N_MELS
    from speech2lip.data.phones import N_CLASSES

    return tuple(N_MELS if f == "mel" else N_CLASSES for f in audio_fields(features))


def phone_row(features: str | None, name: str) -> int | None:
    """The row of phone class `name` (`speech2lip.data.phones.CLASSES`) in a frame's joined
    audio window for `features`: in its phone field (`phones` or `ppg`); None without one."""
    from speech2lip.data.phones import CLASSES

    fields, rows = audio_fields(features), audio_rows(features)
    for i, field in enumerate(fields):
        if field in ("phones", "ppg"):
            return sum(rows[:i]) + list(CLASSES).index(name)
    return None


def join_audio(windows: dict[str, np.ndarray], features: str | None) -> np.ndarray:
    """The model's audio windows `(n, rows, 16)` from per-field windows (`mel` `(n, 80, 16)`,
    `phones` and `ppg` `(n, 14, 16)`)."""
    parts = [np.asarray(windows[f], np.float32) for f in audio_fields(features)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def audio_windows(
    wav: np.ndarray, features: str, source: str = "audio", prior: np.ndarray | None = None
) -> np.ndarray:
    """The audio windows `(n, rows, 16)` the model hears (`features`) for 16 kHz mono `wav` of
    n whole frames (phones decoded, or their posteriors scored, only when the model uses them;
    `source` names the audio in a decoding error; `prior`: the posteriors' prior cepstral
    mean, `posteriors.cepstral_mean`)."""
    from speech2lip.data.audio import frame_mel_windows
    from speech2lip.data.phones import frame_phone_windows
    from speech2lip.data.posteriors import frame_ppg_windows

    n = len(wav) // SAMPLES_PER_FRAME
    make = {"mel": lambda: frame_mel_windows(wav, n),
            "phones": lambda: frame_phone_windows(wav, n, source),
            "ppg": lambda: frame_ppg_windows(wav, n, prior=prior)}  # fmt: skip
    return join_audio({f: make[f]() for f in audio_fields(features)}, features)


def read_audio(data: WarpData, ids: np.ndarray, features: str | None) -> np.ndarray:
    """Frames `ids`' audio windows as the model hears them `(len(ids), rows, 16)`."""
    ids = np.asarray(ids)
    return join_audio({f: data.read_field(f, ids) for f in audio_fields(features)}, features)


def timestamps(ids: np.ndarray, n_frames: int) -> np.ndarray:
    """The lip model's time input of frames `ids`: the source frame index over the clip's
    length, the same in training and at render time (where it is the background frame's)."""
    return (np.asarray(ids) / n_frames).astype(np.float32)


def read_batch(
    data: WarpData,
    ids: np.ndarray,
    radius: int,
    features: str | None = "mel",
    whole: int | None = None,
    fields: tuple[str, ...] | list[str] = FIELDS,
) -> dict[str, np.ndarray]:
    """One batch of frames from the shards, as numpy (what DataLoader workers produce):
    `fields` (of `FIELDS`), the composition's (`WHOLE_FIELDS`) for the first `whole` frames
    only when given (training composes `train.mouth_frames` of a batch: the others' mouth
    boxes and C2O grids, most of a batch's bytes, would be decompressed, sent and converted
    for nothing). `mel_context` `(B, 2r+1, rows, 16)`: the audio windows around each frame as
    the model hears them (`features`)."""
    out = {name: data.read_field(name, ids if name not in WHOLE_FIELDS else ids[:whole])
           for name in fields}  # fmt: skip
    ctx = context_indices(ids + AUDIO_OFFSET, radius, len(data))
    windows = read_audio(data, ctx.reshape(-1), features)
    out["mel_context"] = windows.reshape(*ctx.shape, *windows.shape[1:])
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


def to_tensors(
    data: WarpData, ids: np.ndarray, radius: int, device, features: str | None = "mel"
) -> dict[str, torch.Tensor]:
    """One batch of frames from the shards as tensors on `device`."""
    return to_device(read_batch(data, ids, radius, features), device)
