"""Per-frame measurements of one video against the ground truth, in one streaming pass.

A "method" is a video of the test split (ours, a baseline, or the ground truth itself) or of a
driving audio (no ground truth). Its frames are decoded in the resampled geometry (a video
pasted back into the source is cropped and scaled exactly as `resample` did), and for each frame
the observed mouth box (the `warp` stage's box of the background frame) is measured:

- against the ground truth's mouth box: PSNR and SSIM (`metrics`);
- alone: CPBD sharpness (greyscale mouth box; needs 64x64 px), mouth landmarks (MediaPipe's 40
  lip points, or FAN's 48-67) and the inner-lip opening;
- and kept, small, for the sync scores of the whole sequence: the mouth box at the sync
  expert's 48x96, and the 224x224 face crop syncnet_python's SyncNet takes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from speech2lip.evaluate import metrics
from speech2lip.faces.landmarkers import largest, open_landmarker
from speech2lip.geometry.topology import topology
from speech2lip.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class Track:
    """What one pass measures, per frame (arrays of length n)."""

    name: str
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    cpbd: list = field(default_factory=list)
    lips: list = field(default_factory=list)  # (K, 2) or None
    opening: list = field(default_factory=list)  # px, nan without a face
    lip_psnr: list = field(default_factory=list)  # on the ground truth's tight lip box
    lip_ssim: list = field(default_factory=list)
    sync_crops: list = field(default_factory=list)  # (3, 48, 96) float16
    face_crops: list = field(default_factory=list)  # (224, 224, 3) uint8
    tiles: dict = field(default_factory=dict)  # frame -> its mouth box, for the picked frames


def face_crop_box(points: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """syncnet_python's face crop (centre x, centre y, half side) from a face's landmarks
    `(P, 2)`, standing in for its S3FD box: half side bs = max(w, h) / 2 of the box, the crop
    spans (1 + 0.4) bs each side horizontally and from -bs to +(1 + 0.8) bs vertically."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    bs = float(max(hi - lo)) / 2
    mx, my = (lo + hi) / 2
    cs = 0.4
    return float(mx), float(my + bs * cs), bs * (1 + cs)


def face_crop(frame: np.ndarray, box: tuple[float, float, float]) -> np.ndarray:
    """The 224x224 crop of `box` (from `face_crop_box`), the frame padded with grey (110) as
    syncnet_python pads it."""
    cx, cy, half = box
    m = np.array([[224 / (2 * half), 0, 112 - cx * 224 / (2 * half)],
                  [0, 224 / (2 * half), 112 - cy * 224 / (2 * half)]])  # fmt: skip
    return cv2.warpAffine(frame, m, (224, 224), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(110, 110, 110))  # fmt: skip


def measure(
    name: str,
    frames: Iterable[np.ndarray],
    origins: np.ndarray,
    box_size: tuple[int, int],
    ground_truth: Iterator[np.ndarray] | None,
    face_boxes: list | None,
    landmarks: str = "mediapipe",
    cpbd_edges: str = "python-cpbd",
    keep: Iterable[int] = (),
    lip_boxes: np.ndarray | None = None,
) -> Track:
    """One pass over a method's frames `(H, W, 3)` with the mouth boxes at `origins` `(n, 2)` of
    `box_size` (w, h), against `ground_truth` frames (None: no reference), keeping SyncNet face
    crops at `face_boxes` (None: skip) and the mouth boxes of frames `keep` (`Track.tiles`).
    `lip_boxes` `(n, 4)` (x0, y0, x1, y1; `lip_boxes_of`): PSNR and SSIM there too."""
    import torch

    from speech2lip.models.expert import resize_crops

    ew, eh = box_size
    keep = set(int(k) for k in keep)
    track = Track(name)
    marker = open_landmarker(landmarks, min_confidence=0.5, max_faces=1)
    try:
        progress = Progress(f"evaluate: measuring {name}", len(origins), "frames", log)
        for i, frame in enumerate(frames):
            progress.update(i)
            if i >= len(origins):
                break
            x, y = (int(v) for v in origins[i])
            box = frame[y : y + eh, x : x + ew]
            if i in keep:
                track.tiles[i] = box.copy()
            if ground_truth is not None:
                whole = next(ground_truth)
                gt = whole[y : y + eh, x : x + ew]
                track.psnr.append(metrics.psnr(box, gt))
                track.ssim.append(metrics.ssim(box, gt))
                if lip_boxes is not None:
                    x0, y0, x1, y1 = (int(v) for v in lip_boxes[i])
                    ours, theirs = frame[y0:y1, x0:x1], whole[y0:y1, x0:x1]
                    track.lip_psnr.append(metrics.psnr(ours, theirs))
                    track.lip_ssim.append(metrics.ssim(ours, theirs))
            grey = cv2.cvtColor(box, cv2.COLOR_RGB2GRAY)
            track.cpbd.append(metrics.cpbd(grey, cpbd_edges) if min(grey.shape) >= 64
                              else float("nan"))  # fmt: skip
            faces = marker(frame)
            if not faces:
                track.lips.append(None)
                track.opening.append(float("nan"))
            else:
                points = largest(faces)[:, :2].astype(np.float32)
                track.lips.append(points[list(marker.topology.lips)])
                a, b = marker.topology.inner_lips
                track.opening.append(float(np.linalg.norm(points[a] - points[b])))
            t = torch.from_numpy(np.ascontiguousarray(box)).permute(2, 0, 1)[None] / 255
            track.sync_crops.append(resize_crops(t)[0])
            if face_boxes is not None:
                track.face_crops.append(face_crop(frame, face_boxes[i]))
    finally:
        marker.close()
    if len(track.cpbd) < len(origins):
        log.warning("evaluate: %s has %d frames, expected %d", name, len(track.cpbd),
                    len(origins))  # fmt: skip
    return track


def lip_boxes_of(points: np.ndarray, width: int, height: int, pad: float = 0.25) -> np.ndarray:
    """The tight lip box of each frame `(n, 4)` (x0, y0, x1, y1, integer pixels inside the
    frame): the bounding box of landmarks' lip points `(n, P, 2)`, padded on every side by
    `pad` of its width. The extended mouth box's static cheeks and chin add 4-5 dB of PSNR
    that says nothing about the lips; this box holds little else."""
    lips = np.asarray(points, np.float64)[:, list(topology(points).lips), :2]
    lo, hi = lips.min(axis=1), lips.max(axis=1)
    margin = pad * (hi[:, 0] - lo[:, 0])[:, None]
    lo, hi = np.floor(lo - margin), np.ceil(hi + margin)
    size = np.array([width, height])
    lo = np.clip(lo, 0, size - 16)
    hi = np.clip(np.maximum(hi, lo + 16), 0, size)  # SSIM's 11x11 window fits
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


def lmd(track: Track, reference: Track) -> float:
    """Mouth landmark distance of `track` against `reference`, over the frames where both
    found a face (nan when none)."""
    pairs = [(a, b) for a, b in zip(track.lips, reference.lips, strict=False)
             if a is not None and b is not None]  # fmt: skip
    if not pairs:
        return float("nan")
    pred, gt = (np.stack(x) for x in zip(*pairs, strict=True))
    return metrics.mouth_landmark_distance(pred, gt)
