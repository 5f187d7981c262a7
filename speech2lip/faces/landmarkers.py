"""Face landmark backends behind one interface, for the `landmarks` stage and the evaluation.

`open_landmarker(backend)` gives a `Landmarker`: `marker(frame)` -> every face found in an RGB
frame, each `(P, 3)` float64 points (x, y pixels, origin top-left, y down; z relative depth in
pixels, 0 for a 2D model), and `marker.topology` the layout (`speech2lip.geometry.topology`).
Backends: `mediapipe` (Face Mesh in video mode, 478 points, weights inside the wheel) and
`face_alignment` (FAN, 68 points, weights in the torch hub cache: `speech2lip.faces.fan`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from speech2lip.geometry.topology import FAN68, MEDIAPIPE, Topology

BACKENDS = ("mediapipe", "face_alignment")


class Landmarker:
    """A landmark backend; a context manager (`close` frees the model)."""

    topology: Topology

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Free the backend's resources (nothing by default)."""

    def __enter__(self) -> Landmarker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MediaPipeLandmarker(Landmarker):
    """MediaPipe Face Mesh in video mode (tracking across calls), with the iris points."""

    topology = MEDIAPIPE

    def __init__(self, min_confidence: float = 0.5, max_faces: int = 2) -> None:
        import mediapipe as mp

        self.mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        h, w = frame.shape[:2]
        found = self.mesh.process(frame).multi_face_landmarks or []
        return [np.array([[p.x * w, p.y * h, p.z * w] for p in face.landmark]) for face in found]

    def close(self) -> None:
        self.mesh.close()


class FanLandmarker(Landmarker):
    """face_alignment's FAN (2D or 3D) with its S3FD face detector, from cached weights."""

    topology = FAN68

    def __init__(self, fan_type: str = "2D", device: str = "cpu") -> None:
        from speech2lip.faces.fan import load

        self.model = load(fan_type, device)

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        found = self.model.get_landmarks_from_image(np.ascontiguousarray(frame)) or []
        out = []
        for face in found:
            points = np.zeros((len(face), 3))
            points[:, : face.shape[1]] = face
            out.append(points)
        return out


def open_landmarker(
    backend: str, min_confidence: float = 0.5, max_faces: int = 2, fan_type: str = "2D"
) -> Landmarker:
    """The landmarker named `backend` (one of `BACKENDS`)."""
    if backend == "mediapipe":
        return MediaPipeLandmarker(min_confidence, max_faces)
    if backend == "face_alignment":
        return FanLandmarker(fan_type)
    raise ValueError(f"unknown landmark backend {backend!r}; one of {', '.join(BACKENDS)}")


def largest(faces: list[np.ndarray]) -> np.ndarray:
    """The face whose points span the largest area, from `(P, 2|3)` arrays."""
    return faces[int(np.argmax([np.ptp(f[:, 0]) * np.ptp(f[:, 1]) for f in faces]))]


def centre_and_size(points: np.ndarray) -> tuple[np.ndarray, float]:
    """A face's box centre (x, y) and size (the box's longer side) from its points."""
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    return (lo + hi) / 2, float(max(hi - lo))


def follow(faces: list[np.ndarray], previous: np.ndarray | None) -> np.ndarray | None:
    """The face that continues the track: the largest when there is no track yet, else the
    one nearest the previous face, or None when even that one is more than the previous face's
    size away (another person: a real face does not jump that far between two frames)."""
    if previous is None:
        return largest(faces)
    centre, size = centre_and_size(previous)
    dists = [float(np.linalg.norm(centre_and_size(f)[0] - centre)) for f in faces]
    best = int(np.argmin(dists))
    return faces[best] if dists[best] <= size else None


def landmark_frames(
    frames: Iterable[np.ndarray], n_frames: int, marker: Landmarker
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One face tracked through `n_frames` frames: the largest face where the track starts,
    then in each frame the face nearest the last one found (`follow`). Returns its points
    `(N, P, 3)` float32 (zeros where it was not found), the found mask `(N,)` and the number
    of faces seen per frame `(N,)`."""
    points = np.zeros((n_frames, marker.topology.n_points, 3), np.float32)
    found = np.zeros(n_frames, bool)
    faces = np.zeros(n_frames, np.int8)
    previous = None
    for i, frame in enumerate(frames):
        result = marker(frame)
        faces[i] = len(result)
        chosen = follow(result, previous) if result else None
        if chosen is not None:
            points[i] = chosen
            found[i] = True
            previous = chosen
    return points, found, faces
