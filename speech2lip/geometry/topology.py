"""Landmark layouts: one record per point topology, looked up once from the point count.

Two layouts exist: MediaPipe Face Mesh (468 mesh points + 10 iris points, the `landmarks`
stage's default) and the 68-point iBUG layout of `face_alignment`'s FAN. Every index list the
project uses (lips for boxes and LMD, the inner-lip centres for the mouth opening, the outer eye
corners for scale, the mouth corners) lives here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speech2lip.errors import Speech2LipError


@dataclass(frozen=True)
class Topology:
    """One landmark layout. Index pairs are (left/upper, right/lower) in image terms."""

    name: str  # the backend that produces it: `landmarks.backend`, `evaluate.landmarks`
    n_points: int
    lips: tuple[int, ...]  # every lip point, sorted
    inner_lips: tuple[int, int]  # centre of the inner upper lip, of the inner lower lip
    eye_corners: tuple[int, int]  # outer eye corners
    mouth_corners: tuple[int, int]
    stable: tuple[int, ...]  # points speech does not move (eye corners, nose): for alignment


MEDIAPIPE = Topology(
    name="mediapipe",
    n_points=478,
    lips=(
        0,
        13,
        14,
        17,
        37,
        39,
        40,
        61,
        78,
        80,
        81,
        82,
        84,
        87,
        88,
        91,
        95,
        146,
        178,
        181,
        185,
        191,
        267,
        269,
        270,
        291,
        308,
        310,
        311,
        312,
        314,
        317,
        318,
        321,
        324,
        375,
        402,
        405,
        409,
        415,
    ),  # MediaPipe's FACEMESH_LIPS, sorted  # fmt: skip
    inner_lips=(13, 14),
    eye_corners=(33, 263),
    mouth_corners=(61, 291),
    stable=(1, 4, 5, 6, 9, 10, 33, 133, 151, 168, 195, 197, 263, 362),  # nose, brow, eye corners
)
FAN68 = Topology(
    name="face_alignment",
    n_points=68,
    lips=tuple(range(48, 68)),  # outer 48-59, inner 60-67
    inner_lips=(62, 66),
    eye_corners=(36, 45),
    mouth_corners=(48, 54),
    stable=(27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45),  # nose bridge and base, eye corners
)
LAYOUTS = {layout.n_points: layout for layout in (MEDIAPIPE, FAN68)}


def topology(points: np.ndarray | int) -> Topology:
    """The layout of landmarks `(..., P, >=2)` (or of a point count P)."""
    n = points if isinstance(points, int) else int(np.shape(points)[-2])
    try:
        return LAYOUTS[n]
    except KeyError:
        known = ", ".join(f"{t.n_points} ({t.name})" for t in LAYOUTS.values())
        raise Speech2LipError(
            f"landmarks with {n} points: not a known layout ({known}); re-run the landmarks stage"
        ) from None


def inner_lip_opening(points: np.ndarray) -> np.ndarray:
    """The mouth opening `(...)` in pixels: the distance between the inner-lip centres of
    landmarks `(..., P, >=2)` (x, y only)."""
    a, b = topology(points).inner_lips
    return np.linalg.norm(points[..., a, :2] - points[..., b, :2], axis=-1)
