"""Regions of the `warp` stage: the canonical lip box, the extended (composition) box and the
per-frame mouth boxes. Boxes are (x0, y0, width, height) in pixels."""

from __future__ import annotations

import math

import numpy as np

from speech2lip.geometry.topology import topology


def lip_points(points: np.ndarray) -> np.ndarray:
    """The lip landmarks `(..., L, 2)` of MediaPipe (478) or FAN (68) points `(..., P, >=2)`."""
    return points[..., list(topology(points).lips), :2]


def round16(value: float) -> int:
    return int(math.ceil(value / 16.0) * 16)


def lip_box(
    canonical_lips: np.ndarray,
    all_lips: np.ndarray,
    size: str | tuple[int, int],
    margin: int,
    width: int,
    height: int,
) -> tuple[tuple[int, int, int, int], float]:
    """Canonical lip box (x0, y0, w, h), centred on the canonical frame's lips, inside the image.

    `size` 'auto': the 99th percentile of the lips' extent over `all_lips` `(N, L, 2)` plus
    `margin` per side, rounded up to a multiple of 16. Also returns the fraction of frames
    whose lips are larger than the box.
    """
    extent = all_lips.max(axis=1) - all_lips.min(axis=1)  # (N, 2)
    if size == "auto":
        big = np.percentile(extent, 99, axis=0)
        w, h = round16(big[0] + 2 * margin), round16(big[1] + 2 * margin)
    else:
        w, h = int(size[0]), int(size[1])
    w, h = min(w, width), min(h, height)
    centre = (canonical_lips.min(axis=0) + canonical_lips.max(axis=0)) / 2
    x0 = int(np.clip(round(centre[0] - w / 2), 0, width - w))
    y0 = int(np.clip(round(centre[1] - h / 2), 0, height - h))
    too_big = float(np.mean((extent[:, 0] > w) | (extent[:, 1] > h)))
    return (x0, y0, w, h), too_big


def extended_box(
    lips: tuple[int, int, int, int], scale: tuple[float, float], width: int, height: int
) -> tuple[int, int, int, int]:
    """The composition region around the lip box: `scale` times its size (multiple of 16),
    centred horizontally, with two thirds of the extra height below the lips (chin)."""
    x0, y0, w, h = lips
    ew, eh = min(round16(w * scale[0]), width), min(round16(h * scale[1]), height)
    ex = int(np.clip(x0 - (ew - w) // 2, 0, width - ew))
    ey = int(np.clip(y0 - (eh - h) // 3, 0, height - eh))
    return ex, ey, ew, eh


def box_origins(centres: np.ndarray, size: tuple[int, int], width: int, height: int) -> np.ndarray:
    """Top-left corners `(N, 2) int32` of boxes of `size` (w, h) centred on `centres` `(N, 2)`,
    shifted to lie inside the image."""
    w, h = size
    x = np.clip(np.round(centres[:, 0] - w / 2), 0, width - w)
    y = np.clip(np.round(centres[:, 1] - h / 2), 0, height - h)
    return np.stack([x, y], axis=1).astype(np.int32)
