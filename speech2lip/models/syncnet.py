"""Lip-sync expert: Wav2Lip's SyncNet_color architecture and checkpoint format.

Inputs (as Wav2Lip's `color_syncnet_train.py` feeds them): 5 consecutive frames of the lower
half of a 96x96 face crop, BGR, 0..1, stacked on the channel axis -> `(B, 15, 48, 96)`; and the
80x16 mel window starting at the first of those frames -> `(B, 1, 80, 16)`. Outputs are the
L2-normalised 512-d audio and face embeddings; their cosine similarity is the sync score.

A user's `lipsync_expert.pth` (`{"state_dict": ...}`, keys optionally prefixed `module.`)
loads with `load_sync_expert`. Without one, the `sync_expert` stage trains this architecture on
the subject's own train split (see `speech2lip.train`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speech2lip.errors import Speech2LipError

WAV2LIP_URL = "https://github.com/Rudrabha/Wav2Lip#getting-the-weights"


class ConvBlock(nn.Module):
    """Conv + BatchNorm (+ identity when `residual`) + ReLU; Wav2Lip's `Conv2d`, same keys."""

    def __init__(self, cin: int, cout: int, kernel, stride, padding, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout)
        )
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_block(x)
        return F.relu(out + x if self.residual else out)


def _stack(spec: list[tuple]) -> nn.Sequential:
    """Layers from (cin, cout, kernel, stride, padding[, residual]) rows."""
    return nn.Sequential(*(ConvBlock(*row) for row in spec))


R = True  # residual
FACE_LAYERS = [  # (15, 48, 96) -> (512, 1, 1)
    (15, 32, 7, 1, 3), (32, 64, 5, (1, 2), 1), (64, 64, 3, 1, 1, R), (64, 64, 3, 1, 1, R),
    (64, 128, 3, 2, 1), (128, 128, 3, 1, 1, R), (128, 128, 3, 1, 1, R), (128, 128, 3, 1, 1, R),
    (128, 256, 3, 2, 1), (256, 256, 3, 1, 1, R), (256, 256, 3, 1, 1, R),
    (256, 512, 3, 2, 1), (512, 512, 3, 1, 1, R), (512, 512, 3, 1, 1, R),
    (512, 512, 3, 2, 1), (512, 512, 3, 1, 0), (512, 512, 1, 1, 0),
]  # fmt: skip
AUDIO_LAYERS = [  # (1, 80, 16) -> (512, 1, 1)
    (1, 32, 3, 1, 1), (32, 32, 3, 1, 1, R), (32, 32, 3, 1, 1, R),
    (32, 64, 3, (3, 1), 1), (64, 64, 3, 1, 1, R), (64, 64, 3, 1, 1, R),
    (64, 128, 3, 3, 1), (128, 128, 3, 1, 1, R), (128, 128, 3, 1, 1, R),
    (128, 256, 3, (3, 2), 1), (256, 256, 3, 1, 1, R),
    (256, 512, 3, 1, 0), (512, 512, 1, 1, 0),
]  # fmt: skip


class SyncNetColor(nn.Module):
    """Wav2Lip's lip-sync expert. `forward(mel (B,1,80,16), faces (B,15,48,96))` returns
    (audio embedding, face embedding), each `(B, 512)` with unit L2 norm."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder = _stack(FACE_LAYERS)
        self.audio_encoder = _stack(AUDIO_LAYERS)

    def audio_embedding(self, mel: Tensor) -> Tensor:
        """`(B, 1, 80, 16)` mel windows -> `(B, 512)` unit-norm embeddings."""
        return F.normalize(self.audio_encoder(mel).flatten(1), p=2, dim=1)

    def face_embedding(self, faces: Tensor) -> Tensor:
        """`(B, 15, 48, 96)` (see `expert_faces`) -> `(B, 512)` unit-norm embeddings."""
        return F.normalize(self.face_encoder(faces).flatten(1), p=2, dim=1)

    def forward(self, mel: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
        return self.audio_embedding(mel), self.face_embedding(faces)


def expert_faces(frames: Tensor, lower_half: bool = True) -> Tensor:
    """5 RGB crops `(B, 5, 3, H, W)` in 0..1 -> the expert's input `(B, 15, 48, 96)`, BGR,
    frames stacked on channels (frame-major), resized with antialiasing (differentiable).

    `lower_half`: the crops are whole faces (Wav2Lip's convention): resized to 96x96 and cut
    to their lower half. Otherwise they are already the lower face (our observed mouth boxes,
    see `speech2lip.sync_expert`) and are resized to 48x96 directly."""
    b, t = frames.shape[:2]
    if t != 5:
        raise ValueError(f"the sync expert takes 5 frames, got {t}")
    size = (96, 96) if lower_half else (48, 96)
    x = F.interpolate(frames.flatten(0, 1), size=size, mode="bilinear", align_corners=False,
                      antialias=True)  # fmt: skip
    x = x.flip(1)  # RGB -> BGR
    if lower_half:
        x = x[:, :, 48:]
    return x.reshape(b, t * 3, 48, 96)


def sync_cosine(
    model: SyncNetColor, mel: Tensor, frames: Tensor, lower_half: bool = True
) -> Tensor:
    """Cosine similarity `(B,)` between mel windows `(B, 1, 80, 16)` and 5-frame crops
    `(B, 5, 3, H, W)` (RGB, 0..1; see `expert_faces` for `lower_half`)."""
    audio, face = model(mel, expert_faces(frames, lower_half))
    return (audio * face).sum(dim=1)


def read_checkpoint(path: Path):
    """`torch.load` of a user's weights file (tensors only), with an error naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise Speech2LipError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None


def load_weights(model: nn.Module, state: dict, path: Path, what: str) -> nn.Module:
    """`state` (keys optionally prefixed `module.`, as DataParallel saves them) into `model`,
    exactly: a missing, unexpected or wrongly sized tensor says the file is not a `what`
    checkpoint. Returns the model in eval mode."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong size
        raise Speech2LipError(f"{path}: not a {what} checkpoint ({exc})") from None
    if missing or unexpected:
        raise Speech2LipError(
            f"{path}: not a {what} checkpoint ({len(missing)} missing keys, e.g. {missing[:2]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    return model.eval()


def load_sync_expert(path: str | Path, with_meta: bool = False):
    """Load a Wav2Lip-format expert checkpoint; clear errors for a missing or foreign file.
    `with_meta`: return (model, the checkpoint's `speech2lip` metadata or {})."""
    path = Path(path)
    if not path.is_file():
        raise Speech2LipError(
            f"sync expert checkpoint {path} not found: put Wav2Lip's lipsync_expert.pth there "
            f"(see {WAV2LIP_URL}), or set sync_expert.pretrained to '' in config.yaml to train "
            "one on the subject"
        )
    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise Speech2LipError(f"{path}: expected a dict with 'state_dict', got {type(ckpt)}")
    model = load_weights(SyncNetColor(), state, path, "Wav2Lip SyncNet_color")
    return (model, dict(ckpt.get("speech2lip", {}))) if with_meta else model
