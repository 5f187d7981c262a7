"""Stage `landmarks`: dense face landmarks for every resampled frame.

Writes `results/{subject}/landmarks/landmarks.npz`:

- `points` `(N, P, 3) float32`: x, y in pixels (image convention of `speech2lip.geometry`), and
  z: the backend's relative depth in pixels (MediaPipe: same scale as x, smaller = nearer);
  P = 478 for `mediapipe` (468 mesh points + 10 iris points), 68 for `face_alignment`;
- `found` `(N,) bool`: a face was detected in this frame; `interpolated` `(N,) bool`: its points
  were filled from the neighbouring frames (a short gap);
- `box` `(N, 4) float32`: `[x, y, w, h]` of the points; `faces` `(N,) int8`: faces detected.

and `landmarks.json`, a summary (backend, counts, gaps, face size).

Backends: `mediapipe` (default; its models ship inside the wheel, so it works offline; video
tracking, re-detecting after a loss) and `face_alignment` (FAN, 68 points; needs its weights in
the torch hub cache, see `speech2lip.fan`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speech2lip.atomic import atomic_path, write_json
from speech2lip.config import LandmarksConfig
from speech2lip.errors import Speech2LipError
from speech2lip.faces.landmarkers import landmark_frames, open_landmarker
from speech2lip.inputs import read_meta
from speech2lip.media import read_frames

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- pure functions
def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """`[start, stop)` ranges where the boolean `mask` is True."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def fill_gaps(
    points: np.ndarray, found: np.ndarray, max_gap: int, max_missing: float, source: str = "video"
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate frames without a face; refuse too many or too long gaps.

    Gaps inside the clip are filled linearly between their neighbours, gaps at either end take
    the nearest found frame. Returns the filled points and the `interpolated` mask. Raises
    `Speech2LipError` naming the frame ranges when more than `max_missing` of the frames, or a
    run longer than `max_gap` frames, has no face.
    """
    n = len(found)
    gaps = runs(~found)
    if found.sum() == 0:
        raise Speech2LipError(f"no face found in any of the {n} frames of {source}")
    missing = 1 - found.mean()
    long = [(a, b) for a, b in gaps if b - a > max_gap]
    if missing > max_missing or long:
        shown = ", ".join(f"{a}-{b - 1}" for a, b in (long or gaps)[:5])
        why = (f"{missing:.1%} of frames have no face (limit landmarks.max_missing = "
               f"{max_missing:.0%})" if missing > max_missing else
               f"a gap of more than landmarks.max_gap = {max_gap} frames has no face")  # fmt: skip
        raise Speech2LipError(
            f"{source}: {why}; frames without a face: {shown}. Trim the clip to frames where the "
            "face is visible, or raise the limit in config.yaml"
        )
    idx = np.flatnonzero(found)
    filled = points.copy()
    flat = points[idx].reshape(len(idx), -1)
    for j in range(flat.shape[1]):
        filled.reshape(n, -1)[:, j] = np.interp(np.arange(n), idx, flat[:, j])
    return filled, ~found


def boxes(points: np.ndarray) -> np.ndarray:
    """`[x, y, w, h]` extent of each frame's points, `(N, 4)`."""
    lo, hi = points[..., :2].min(axis=1), points[..., :2].max(axis=1)
    return np.concatenate([lo, hi - lo], axis=1).astype(np.float32)


def small_face_check(frames, clip: dict, min_face_size: int, samples: int = 8) -> None:
    """When the landmarks find no face, ask the face detector (which finds smaller faces) on a
    few frames; refuse with the face's size when it is below `min_face_size`."""
    from speech2lip.faces.detect import largest_face_boxes

    n, width, height = clip["n_frames"], clip["width"], clip["height"]
    picks = set(np.linspace(0, n - 1, min(samples, n)).round().astype(int).tolist())
    sample = [f for i, f in enumerate(read_frames(frames, width, height)) if i in picks]
    found = largest_face_boxes(sample)
    found = found[np.isfinite(found).all(axis=1)]
    sizes = found[:, 2:].max(axis=1)
    if len(sizes) and np.median(sizes) < min_face_size:
        raise Speech2LipError(
            f"{frames}: the face is ~{np.median(sizes):.0f} px across, below "
            f"landmarks.min_face_size = {min_face_size}, too small to track; crop tighter "
            "(resample.crop) or use a larger source"
        )


def run(frames: str | Path, meta: str | Path, out_dir: str | Path, cfg: LandmarksConfig) -> dict:
    """Landmark every frame of `frames` (the resample stage's output) into `out_dir`."""
    clip = read_meta(meta)
    n, width, height = clip["n_frames"], clip["width"], clip["height"]
    stream = tqdm(read_frames(frames, width, height), total=n, desc="landmarks",
                  unit="frame", disable=None)  # fmt: skip

    def logged(it):
        for i, frame in enumerate(it):
            if (i + 1) % 500 == 0:
                log.info("landmarks: %d/%d frames", i + 1, n)
            yield frame

    marker = open_landmarker(cfg.backend, cfg.min_confidence, max_faces=2, fan_type=cfg.fan_type)
    with marker:
        points, found, faces = landmark_frames(logged(stream), n, marker)
    if (faces > 1).any():
        log.warning(
            "landmarks: several faces in %d frames; the largest is used", int((faces > 1).sum())
        )
    try:
        filled, interpolated = fill_gaps(points, found, cfg.max_gap, cfg.max_missing, str(frames))
    except Speech2LipError:
        small_face_check(frames, clip, cfg.min_face_size)  # a clearer reason, when it is that
        raise
    box = boxes(filled)
    face_size = float(np.median(np.maximum(box[found, 2], box[found, 3])))
    if face_size < cfg.min_face_size:
        raise Speech2LipError(
            f"{frames}: the face is only ~{face_size:.0f} px across (landmarks.min_face_size "
            f"= {cfg.min_face_size}); crop closer to the face (resample.crop) or use a larger size"
        )
    gaps = runs(interpolated)
    summary = {
        "backend": cfg.backend,
        "n_frames": n,
        "n_points": int(points.shape[1]),
        "found": int(found.sum()),
        "interpolated_frames": [[a, b - 1] for a, b in gaps],
        "several_faces_frames": int((faces > 1).sum()),
        "face_size_px": face_size,
        "units": "x, y pixels (origin top-left corner, y down); z relative depth in pixels",
    }
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "landmarks.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, points=filled.astype(np.float32), found=found,
                            interpolated=interpolated, box=box, faces=faces)  # fmt: skip
    write_json(out_dir / "landmarks.json", summary)
    log.info("landmarks: face in %d/%d frames, %d interpolated, face ~%.0f px",
             found.sum(), n, interpolated.sum(), face_size)  # fmt: skip
    return summary
