"""Pictures the stages write: PNG files (atomically, RGB in) and contact sheets."""

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


def contact_sheet(tiles: list[np.ndarray], cols: int, side: int) -> np.ndarray:
    """Equal-sized RGB `tiles` resized to `side` pixels wide (aspect kept) in rows of `cols`,
    the last row padded with black."""
    height, width = tiles[0].shape[:2]
    tiles = [cv2.resize(t, (side, side * height // width), interpolation=cv2.INTER_AREA)
             for t in tiles]  # fmt: skip
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    return np.vstack([np.hstack(tiles[r : r + cols]) for r in range(0, len(tiles), cols)])
