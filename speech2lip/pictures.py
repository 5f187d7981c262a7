"""Pictures the stages write: PNG files (atomically, RGB in)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from speech2lip.atomic import atomic_path
from speech2lip.errors import Speech2LipError


def save_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise Speech2LipError(f"could not write {path}")
