"""Face boxes with MediaPipe face detection (its model ships inside the wheel: works offline)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

log = logging.getLogger(__name__)


def largest_face_boxes(frames: Iterable[np.ndarray], min_confidence: float = 0.5) -> np.ndarray:
    """Box of the largest face in each RGB frame.

    Returns `(N, 4) float64` boxes `[x, y, w, h]` in pixels (x right, y down); rows of NaN where no
    face was found. Tries MediaPipe's full-range model first (small faces in wide frames), then
    the short-range one (large, close faces).
    """
    import mediapipe as mp

    detection = mp.solutions.face_detection
    frames = list(frames)
    boxes = np.full((len(frames), 4), np.nan)
    several = 0
    for model in (1, 0):
        missing = [i for i in range(len(frames)) if np.isnan(boxes[i, 0])]
        if not missing:
            break
        with detection.FaceDetection(
            model_selection=model, min_detection_confidence=min_confidence
        ) as det:
            for i in missing:
                frame = np.ascontiguousarray(frames[i])
                h, w = frame.shape[:2]
                found = det.process(frame).detections or []
                best = None
                for d in found:
                    rb = d.location_data.relative_bounding_box
                    box = np.array([rb.xmin * w, rb.ymin * h, rb.width * w, rb.height * h])
                    if best is None or box[2] * box[3] > best[2] * best[3]:
                        best = box
                several += len(found) > 1
                if best is not None:
                    boxes[i] = best
    if several:
        log.warning("%d of %d sampled frames show several faces; the largest is used in each",
                    several, len(frames))  # fmt: skip
    return boxes
