"""The optional FAN landmark backend (`face-alignment`, 68 points), without downloads.

face-alignment fetches its weights from the internet on first use. speech2lip never does: the
files must already be where face-alignment looks for them, the torch hub cache
(`$TORCH_HOME/hub/checkpoints/`, by default `~/.cache/torch/hub/checkpoints/`):

- `2DFAN4-11f355bf06.pth.tar` (2D landmarks) or `3DFAN4-7835d9f11d.pth.tar` and
  `depth-2a464da4ea.pth.tar` (3D landmarks);
- `s3fd-619a316812.pth` (the S3FD face detector).

Each is a plain PyTorch state dict (what `torch.save(model.state_dict(), path)` writes).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

from speech2lip.errors import Speech2LipError

log = logging.getLogger(__name__)

BASE_URL = "https://www.adrianbulat.com/downloads/python-fan/"
FILES = {
    "2D": ["2DFAN4-11f355bf06.pth.tar", "s3fd-619a316812.pth"],
    "3D": ["3DFAN4-7835d9f11d.pth.tar", "depth-2a464da4ea.pth.tar", "s3fd-619a316812.pth"],
}


def checkpoint_dir() -> Path:
    """Where face-alignment (and torch hub) look for weight files."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def check_weights(kind: str) -> Path:
    """The checkpoint folder, after checking that every file `kind` ("2D"/"3D") needs is there."""
    folder = checkpoint_dir()
    for name in FILES[kind]:
        if not (folder / name).is_file():
            raise Speech2LipError(
                f"landmarks backend face_alignment needs {name} in {folder} (no download is "
                f"attempted): fetch {BASE_URL}{name} on a machine with internet and copy it "
                "there, set TORCH_HOME to the folder above hub/, or use landmarks.backend: "
                "mediapipe"
            )
    return folder


def load(kind: str = "2D", device: str = "cpu"):
    """A `face_alignment.FaceAlignment` built from the cached weights only."""
    check_weights(kind)
    try:
        import face_alignment
    except ImportError:
        raise Speech2LipError(
            "landmarks backend face_alignment needs the package: pip install face-alignment==1.5.0"
        ) from None
    kinds = {"2D": face_alignment.LandmarksType.TWO_D, "3D": face_alignment.LandmarksType.THREE_D}
    try:
        return face_alignment.FaceAlignment(
            kinds[kind], device=device, flip_input=False, face_detector="sfd", compile=False
        )
    except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise Speech2LipError(
            f"could not load the FAN weights in {checkpoint_dir()} ({exc.__class__.__name__}: "
            f"{str(exc)[:200]}); the files may be corrupt: download them again"
        ) from None
