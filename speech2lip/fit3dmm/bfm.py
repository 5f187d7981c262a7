"""Optional face model: the Basel Face Model 2009 (`01_MorphableModel.mat`), if you have it.

The BFM cannot be redistributed: request it from the University of Basel and point
`fit3dmm.bfm_path` at `01_MorphableModel.mat`. Its fields (MATLAB v5 file, read with scipy):
`shapeMU` `(3V, 1)` mean shape (x, y, z interleaved), `shapePC` `(3V, C)` principal
components, `shapeEV` `(C, 1)` their standard deviations, `tl` `(T, 3)` 1-based triangles.
BFM axes are x right, y up, z towards the viewer; they are turned to ours (y down, z away).

The BFM has no landmark list of its own: `fit3dmm.bfm_landmarks` names a text file with one
BFM vertex index (0-based) per landmark point of the landmark backend, in order (e.g. 68 lines
for FAN). With the BFM, the basis is the identity basis, fitted per frame with the same prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speech2lip.errors import Speech2LipError
from speech2lip.fit3dmm.facemodel import FaceModel
from speech2lip.geometry.topology import LAYOUTS

FLIP = np.array([1.0, -1.0, -1.0])  # BFM (y up, z to viewer) -> ours (y down, z away)


@dataclass(frozen=True)
class Bfm:
    mean: np.ndarray  # (V, 3), BFM units, our axes
    basis: np.ndarray  # (C, V, 3) scaled by the standard deviations
    triangles: np.ndarray  # (T, 3) 0-based


def load_bfm(path: str | Path, components: int = 80) -> Bfm:
    """Read `01_MorphableModel.mat`; clear errors for a missing, unreadable or wrong file."""
    path = Path(path)
    if not str(path) or not path.is_file():
        raise Speech2LipError(
            f"fit3dmm.model is 'bfm' but the Basel Face Model file is missing: {path or '(empty)'}"
            "; request 01_MorphableModel.mat from the University of Basel and set "
            "fit3dmm.bfm_path, or use fit3dmm.model: subject (no download)"
        )
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), variable_names=["shapeMU", "shapePC", "shapeEV", "tl"])
    except Exception as exc:  # scipy raises several types for a bad file
        raise Speech2LipError(
            f"{path}: not a readable MATLAB file ({exc}); re-download it"
        ) from None
    missing = [k for k in ("shapeMU", "shapePC", "shapeEV", "tl") if k not in mat]
    if missing:
        raise Speech2LipError(f"{path}: not a Basel Face Model file (no {', '.join(missing)})")
    mu = np.asarray(mat["shapeMU"], np.float64).reshape(-1)
    pc = np.asarray(mat["shapePC"], np.float64)
    ev = np.asarray(mat["shapeEV"], np.float64).reshape(-1)
    tl = np.asarray(mat["tl"], np.int64)
    if (
        mu.size % 3
        or pc.shape[0] != mu.size
        or pc.shape[1] != ev.size
        or tl.ndim != 2
        or tl.shape[1] != 3
    ):
        raise Speech2LipError(
            f"{path}: inconsistent Basel Face Model arrays (shapeMU {mu.shape}, shapePC "
            f"{pc.shape}, shapeEV {ev.shape}, tl {tl.shape})"
        )
    v = mu.size // 3
    if tl.min() < 1 or tl.max() > v:
        raise Speech2LipError(f"{path}: triangle indices outside 1..{v}")
    k = min(components, ev.size)
    basis = (pc[:, :k] * ev[:k]).T.reshape(k, v, 3) * FLIP
    return Bfm(mean=mu.reshape(v, 3) * FLIP, basis=basis, triangles=tl - 1)


def load_bfm_model(
    path: str | Path, landmarks_file: str | Path, n_points: int, eye_distance: float
) -> tuple[FaceModel, FaceModel, np.ndarray]:
    """(landmark model, full mesh model, triangles), both in metres, from the BFM file."""
    bfm = load_bfm(path)
    lf = Path(landmarks_file)
    if not str(landmarks_file) or not lf.is_file():
        raise Speech2LipError(
            f"fit3dmm.model 'bfm' needs fit3dmm.bfm_landmarks: a text file with one BFM vertex "
            f"index per landmark ({n_points} lines); not found: {landmarks_file or '(empty)'}"
        )
    try:
        idx = np.loadtxt(lf, dtype=np.int64).reshape(-1)
    except ValueError:
        raise Speech2LipError(f"{lf}: expected one integer vertex index per line") from None
    if len(idx) != n_points or idx.min() < 0 or idx.max() >= len(bfm.mean):
        raise Speech2LipError(
            f"{lf}: needs {n_points} indices in 0..{len(bfm.mean) - 1} (one per landmark), "
            f"got {len(idx)}"
        )
    corners = LAYOUTS[n_points].eye_corners if n_points in LAYOUTS else None
    centre = bfm.mean[idx].mean(0)
    if corners:
        a, b = idx[corners[0]], idx[corners[1]]
        unit = eye_distance / np.linalg.norm(bfm.mean[a] - bfm.mean[b])
    else:
        unit = 1e-6  # BFM 2009 coordinates are micrometres
    mesh = FaceModel(mean=(bfm.mean - centre) * unit, basis=bfm.basis * unit,
                     stddev=np.linalg.norm(bfm.basis, axis=(1, 2)) * unit)  # fmt: skip
    points = FaceModel(mean=mesh.mean[idx], basis=mesh.basis[:, idx], stddev=mesh.stddev)
    return points, mesh, bfm.triangles
