"""SyncNet (Chung & Zisserman, "Out of time", ACCV 2016 workshops) as syncnet_python ships it,
for the LSE-D / LSE-C lip-sync metrics.

`SyncNetV2` is syncnet_python's `SyncNetModel.S` with the same layers in the same order, so
its state-dict keys (`netcnnaud.0.weight`, ..., `netfclip.3.bias`) are those of the released
`syncnet_v2.model` (a plain state dict: syncnet_python's `loadParameters` does `torch.load`
and copies tensors by name). The input preparation follows `SyncNetInstance.evaluate`:

- video: 224x224 face crops, 25 fps, BGR (it reads JPEG frames with `cv2.imread`), raw
  0..255 values (cast to float, not normalised), 5-frame windows at stride 1
  -> `(B, 3, 5, 224, 224)`;
- audio: 16 kHz mono, int16-scale samples (`scipy.io.wavfile` of a pcm_s16le file) ->
  `python_speech_features.mfcc(audio, 16000)` with its defaults (13 coefficients, 25 ms
  windows every 10 ms, log energy as c0) -> 20-frame windows (0.2 s) every 4 MFCC frames
  (one video frame) -> `(B, 1, 13, 20)`;
- `min(frames, samples // 640) - 5` windows of each (`lastframe` there): T frames of audio,
  T * 640 samples, give 4T - 1 MFCC frames, so the last 5-frame video window has no full
  MFCC window.

`lse(distance_curve(*syncnet_features(model, crops, wav)))` (from `metrics`) then gives
LSE-D, LSE-C and the offset. What cannot be checked without the real weights (not in this
repository): that our features equal syncnet_python's for the same clip, and that absolute
LSE numbers match published tables (these also depend on syncnet_python's S3FD face crops,
which `face_crops` must reproduce, and on its JPEG round trip of the frames, which we skip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import python_speech_features
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from speech2lip.errors import Speech2LipError
from speech2lip.media import SAMPLE_RATE, SAMPLES_PER_FRAME
from speech2lip.models.syncnet import load_weights, read_checkpoint

SYNCNET_REPO = "https://github.com/joonson/syncnet_python"
SYNCNET_V2_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
MFCC_PER_FRAME = 4  # 10 ms MFCC frames per 40 ms video frame
MFCC_WINDOW = 20  # MFCC frames per 5-frame (0.2 s) window


def _conv_block(conv: nn.Module, bn: nn.Module, pool: nn.Module | None = None) -> list[nn.Module]:
    return [conv, bn, nn.ReLU(inplace=True)] + ([pool] if pool is not None else [])


def _fc(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNetV2(nn.Module):
    """syncnet_python's SyncNet (`SyncNetModel.S`, same module names and indices).

    `forward_aud(mfcc (B, 1, 13, 20))` and `forward_lip(frames (B, 3, 5, 224, 224))` give the
    `(B, dim)` audio and lip features (dim 1024, not normalised) whose Euclidean distances the
    LSE metrics use. Input conventions: see the module docstring.
    """

    def __init__(self, dim: int = 1024) -> None:
        super().__init__()
        c2, b2, p2 = nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d
        self.netcnnaud = nn.Sequential(  # (1, 13, 20) -> (512, 1, 1)
            *_conv_block(c2(1, 64, 3, 1, 1), b2(64), p2(1, 1)),
            *_conv_block(c2(64, 192, 3, 1, 1), b2(192), p2(3, (1, 2))),
            *_conv_block(c2(192, 384, 3, padding=1), b2(384)),
            *_conv_block(c2(384, 256, 3, padding=1), b2(256)),
            *_conv_block(c2(256, 256, 3, padding=1), b2(256), p2(3, 2)),
            c2(256, 512, (5, 4)), b2(512), nn.ReLU(),
        )  # fmt: skip
        self.netfcaud = _fc(dim)
        self.netfclip = _fc(dim)
        c3, b3, p3 = nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d
        self.netcnnlip = nn.Sequential(  # (3, 5, 224, 224) -> (512, 1, 1, 1)
            *_conv_block(c3(3, 96, (5, 7, 7), (1, 2, 2)), b3(96), p3((1, 3, 3), (1, 2, 2))),
            *_conv_block(c3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), b3(256),
                         p3((1, 3, 3), (1, 2, 2), (0, 1, 1))),
            *_conv_block(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_conv_block(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256)),
            *_conv_block(c3(256, 256, (1, 3, 3), padding=(0, 1, 1)), b3(256),
                         p3((1, 3, 3), (1, 2, 2))),
            *_conv_block(c3(256, 512, (1, 6, 6)), b3(512)),
        )  # fmt: skip

    def forward_aud(self, mfcc: Tensor) -> Tensor:
        """MFCC windows `(B, 1, 13, 20)` -> audio features `(B, dim)`."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: Tensor) -> Tensor:
        """5-frame BGR 0..255 windows `(B, 3, 5, 224, 224)` -> lip features `(B, dim)`."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def load_syncnet_v2(path: str | Path) -> SyncNetV2:
    """syncnet_python's `syncnet_v2.model` (a plain state dict; an optional `module.` key
    prefix is stripped) -> `SyncNetV2` in eval mode, loaded strictly (BatchNorm's
    `num_batches_tracked` may be absent, as in files saved by PyTorch < 0.4.1).

    Raises `Speech2LipError` naming the file when it is missing, unreadable, or not this
    network's state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise Speech2LipError(
            f"SyncNet checkpoint {path} not found: put syncnet_python's syncnet_v2.model there "
            f"(its download_model.sh fetches it from {SYNCNET_V2_URL}; see {SYNCNET_REPO}) "
            "and set evaluate.syncnet in config.yaml to its path"
        )
    state = read_checkpoint(path)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise Speech2LipError(f"{path}: expected a state dict of tensors, got {type(state)}")
    return load_weights(SyncNetV2(), state, path, "syncnet_python SyncNet")


def lip_input(face_crops: ArrayLike) -> Tensor:
    """Face crops `(T, 224, 224, 3)` uint8 RGB, 25 fps -> all 5-frame windows
    `(T - 4, 3, 5, 224, 224)` float32, BGR, 0..255 (window i holds frames i..i+4).

    A strided view of one `(3, T, 224, 224)` copy (make each batch `.contiguous()`).
    """
    crops = np.asarray(face_crops)
    if crops.ndim != 4 or crops.shape[1:] != (224, 224, 3) or crops.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops (T, 224, 224, 3), got {crops.shape} {crops.dtype}")
    if len(crops) < 5:
        raise ValueError(f"need at least 5 frames, got {len(crops)}")
    bgr = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1].transpose(3, 0, 1, 2)))
    return bgr.float().unfold(1, 5, 1).permute(1, 0, 4, 2, 3)  # (T-4, 3, 5, H, W)


def audio_input(wav16k: ArrayLike) -> Tensor:
    """Mono 16 kHz audio (float in -1..1, scaled to int16 range as syncnet_python reads it, or
    int16 as is) -> MFCC windows `(n, 1, 13, 20)` float32: window i covers MFCC frames
    4i..4i+19 (video frames i..i+4); n = (F - 20) // 4 + 1 for F MFCC frames (T - 5 for
    T * 640 samples)."""
    wav = np.asarray(wav16k)
    if wav.ndim != 1:
        raise ValueError(f"expected mono audio (samples,), got shape {wav.shape}")
    wav = wav.astype(np.float64) if wav.dtype == np.int16 else wav.astype(np.float64) * 32768
    mfcc = torch.from_numpy(python_speech_features.mfcc(wav, SAMPLE_RATE).T.astype(np.float32))
    if mfcc.shape[1] < MFCC_WINDOW:
        raise ValueError(f"audio of {len(wav)} samples is shorter than one 0.2 s window")
    windows = mfcc.unfold(1, MFCC_WINDOW, MFCC_PER_FRAME)  # (13, n, 20)
    return windows.permute(1, 0, 2).unsqueeze(1).contiguous()


def syncnet_features(
    model: SyncNetV2, face_crops: NDArray, wav16k: NDArray, batch: int = 20
) -> tuple[NDArray, NDArray]:
    """Lip and audio features `(n, dim)` float32 of the first n = min(T, samples // 640) - 5
    windows, in batches of `batch` (syncnet_python's default 20) on the model's device, for
    `metrics.distance_curve`. Crops and audio as for `lip_input` and `audio_input`."""
    frames, samples = len(face_crops), len(wav16k)
    n = min(frames, samples // SAMPLES_PER_FRAME) - 5
    if n < 1:
        raise ValueError(f"need 6 frames of video and audio, got {frames} and {samples} samples")
    lips, mfcc = lip_input(face_crops), audio_input(wav16k)
    device = next(model.parameters()).device
    model.eval()
    video_feats, audio_feats = [], []
    with torch.inference_mode():
        for i in range(0, n, batch):
            j = min(n, i + batch)
            video_feats.append(model.forward_lip(lips[i:j].contiguous().to(device)).cpu())
            audio_feats.append(model.forward_aud(mfcc[i:j].to(device)).cpu())
    return torch.cat(video_feats).numpy(), torch.cat(audio_feats).numpy()
