"""Stage `pose_depth`: canonical frame, per-frame face depth D_o, canonical head depth D_c.

Writes `results/{subject}/pose_depth/geometry.h5` (HDF5; conventions in its attributes):

- `K` `(3, 3)` intrinsics (pixels); `pose` `(N, 4, 4)` T_o, head (object) -> camera, metres;
- `canonical_index` (attribute) and `canonical_pose` `(4, 4)` T_c; the relative pose of frame o
  is T_{c->o} = T_o T_c^-1;
- `face_depth` `(N, H, W) float16`: D_o, camera z (metres) of the fitted mesh at every pixel
  centre, 0 off the face; chunked per frame, compressed;
- `canonical_depth` `(H, W) float32`: D_c initialisation, the canonical frame's face depth
  extended smoothly over the rest of the head, 0 elsewhere; `head_mask` `(H, W) uint8`.

plus `pose_depth.json` (summary) and QA pictures: `qa_contact_sheet.png` (frames with
landmarks, projected mesh and pose axes) and `qa_canonical_depth.png`.
Image and camera conventions: `speech2lip.geometry`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from speech2lip.atomic import atomic_path, write_json
from speech2lip.config import PoseDepthConfig
from speech2lip.errors import Speech2LipError
from speech2lip.geometry import project, rasterize_depth, rotation_angle_deg
from speech2lip.geometry.topology import inner_lip_opening
from speech2lip.inputs import read_meta, read_npz
from speech2lip.media import read_frames
from speech2lip.pictures import contact_sheet, save_png
from speech2lip.workers import die_with_parent

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- pure functions
def camera_vertices(fit: dict, index: int) -> np.ndarray:
    """Mesh vertices of frame `index` in camera coordinates `(V, 3)`."""
    shape = fit["mesh_mean"] + np.einsum("k,kpc->pc", fit["coeffs"][index], fit["mesh_basis"])
    return shape @ fit["rotation"][index].T + fit["translation"][index]


def face_depth(fit: dict, index: int, width: int, height: int) -> np.ndarray:
    """D_o of one frame: `(H, W) float32` camera depth of the fitted mesh, 0 off the face."""
    cam = camera_vertices(fit, index)
    return rasterize_depth(project(cam, fit["K"]), cam[:, 2], fit["triangles"], width, height)


def laplacian_sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian (higher = sharper)."""
    return float(cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F).var())


def canonical_candidates(
    rotation: np.ndarray, lip_gap: np.ndarray, allowed: np.ndarray
) -> np.ndarray:
    """Frames that may be canonical: among `allowed` ones, within 3 degrees of the most frontal
    and with a lip gap in the lowest 30 % (or the most frontal alone if none is both)."""
    idx = np.flatnonzero(allowed)
    angle = rotation_angle_deg(rotation[idx])
    gap_limit = np.percentile(lip_gap[idx], 30)
    cands = idx[(angle <= angle.min() + 3) & (lip_gap[idx] <= gap_limit)]
    return cands if len(cands) else idx[[int(np.argmin(angle))]]


def choose_canonical(
    rotation: np.ndarray, lip_gap: np.ndarray, sharpness: dict[int, float], allowed: np.ndarray
) -> int:
    """Most frontal, mouth-closed, sharp frame: the sharpest of `canonical_candidates` (of
    those measured in `sharpness`; the first candidate if none is)."""
    cands = canonical_candidates(rotation, lip_gap, allowed)
    measured = [c for c in cands if c in sharpness]
    if measured:
        return int(max(measured, key=lambda c: sharpness[c]))
    return int(cands[0])


def extend_depth(depth: np.ndarray, region: np.ndarray, iterations: int = 400) -> np.ndarray:
    """Fill `region` outside the face (depth 0) by harmonic extension of the face depth.

    Solved on a 4x coarser grid by Jacobi iterations (face pixels fixed, zero-flux at the
    region's border), upsampled, with the original face pixels kept exactly.
    """
    face = depth > 0
    if not face.any():
        return depth.copy()
    h, w = depth.shape
    sh, sw = max(h // 4, 1), max(w // 4, 1)
    small_face = cv2.resize(face.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    small_depth = cv2.resize(depth, (sw, sh), interpolation=cv2.INTER_AREA)
    small_region = cv2.resize((region | face).astype(np.uint8), (sw, sh),
                              interpolation=cv2.INTER_NEAREST).astype(bool)  # fmt: skip
    fixed = small_face > 0.99
    value = np.where(small_face > 0, small_depth / np.maximum(small_face, 1e-6), 0)
    # start from the nearest face pixel's depth, then smooth (converges in few iterations)
    _, labels = cv2.distanceTransformWithLabels((~fixed).astype(np.uint8), cv2.DIST_L2, 5,
                                                labelType=cv2.DIST_LABEL_PIXEL)  # fmt: skip
    seeds = np.zeros(labels.max() + 1, np.float64)
    seeds[labels[fixed]] = value[fixed]
    value = np.where(fixed, value, seeds[labels])
    inside = small_region.astype(np.float32)
    for _ in range(iterations):
        padded = np.pad(value * inside, 1)
        weight = np.pad(inside, 1)
        num = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        den = weight[:-2, 1:-1] + weight[2:, 1:-1] + weight[1:-1, :-2] + weight[1:-1, 2:]
        update = np.where(den > 0, num / np.maximum(den, 1e-6), value)
        value = np.where(fixed | ~small_region, value, update)
    full = cv2.resize(value.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    out = np.where(region, full, 0).astype(np.float32)
    out[face] = depth[face]
    return out


def head_region(face_mask: np.ndarray, person: np.ndarray, grow: float) -> np.ndarray:
    """Person mask intersected with the face grown by `grow` x face size."""
    ys, xs = np.nonzero(face_mask)
    size = max(np.ptp(xs), np.ptp(ys)) + 1
    r = max(int(grow * size), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    grown = cv2.dilate(face_mask.astype(np.uint8), kernel).astype(bool)
    return (grown & person) | face_mask


def person_mask(frame: np.ndarray) -> np.ndarray:
    """MediaPipe selfie segmentation (model inside the wheel): `(H, W) bool` person pixels."""
    import mediapipe as mp

    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        mask = seg.process(np.ascontiguousarray(frame)).segmentation_mask
    return mask > 0.5


# ----------------------------------------------------------------------------- QA pictures
def draw_qa(frame: np.ndarray, points: np.ndarray, fit: dict, index: int) -> np.ndarray:
    """A frame with its landmarks (green), projected mesh (blue) and head pose axes."""
    img = frame.copy()
    cam = camera_vertices(fit, index)
    px = project(cam, fit["K"])
    for tri in fit["triangles"][::2]:
        cv2.polylines(img, [np.round(px[tri] * 4).astype(np.int32)], True, (60, 120, 255), 1,
                      cv2.LINE_AA, shift=2)  # fmt: skip
    for x, y in points[:, :2]:
        cv2.circle(img, (int(round(x * 4)), int(round(y * 4))), 4, (0, 255, 0), -1, cv2.LINE_AA, 2)
    origin = fit["translation"][index]
    axes = origin + 0.05 * fit["rotation"][index].T  # rows: x, y, z axis tips (5 cm)
    o = project(origin[None], fit["K"])[0]
    for tip, colour in zip(project(axes, fit["K"]), [(255, 0, 0), (0, 255, 0), (0, 0, 255)],
                           strict=True):  # fmt: skip
        cv2.line(img, tuple(np.round(o).astype(int)), tuple(np.round(tip).astype(int)), colour, 2)
    return img


def depth_picture(depth: np.ndarray) -> np.ndarray:
    """A colour image of a depth map (near = bright), black where empty."""
    valid = depth > 0
    out = np.zeros((*depth.shape, 3), np.uint8)
    if valid.any():
        lo, hi = np.percentile(depth[valid], [1, 99])
        norm = np.clip((hi - depth) / max(hi - lo, 1e-6), 0, 1)
        colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
        out[valid] = colour[valid][:, ::-1]
    return out


# ----------------------------------------------------------------------------- run
_FIT: dict | None = None  # the fit, in worker processes


def _init_worker(fit: dict, parent_pid: int) -> None:
    global _FIT
    die_with_parent(parent_pid)
    _FIT = fit


def _depth_job(job: tuple[int, int, int]) -> np.ndarray:
    index, width, height = job
    assert _FIT is not None
    return face_depth(_FIT, index, width, height).astype(np.float16)


def canonical_candidates_of(cfg: PoseDepthConfig, points, fitted: dict, train: np.ndarray):
    """(candidate frames for the canonical frame or None when it is fixed, the inner-lip
    gaps, the allowed frames): usable train frames with a near-frontal, closed-ish mouth."""
    n = len(points)
    if isinstance(cfg.canonical, int):
        if not 0 <= cfg.canonical < n:
            raise Speech2LipError(
                f"pose_depth.canonical = {cfg.canonical} is not a frame (0..{n - 1})"
            )
        return None, None, None
    gap = inner_lip_opening(points)
    good = fitted["good"]
    allowed = good & train if (good & train).any() else train
    return set(canonical_candidates(fitted["rotation"], gap, allowed).tolist()), gap, allowed


def stream_depths(dset, pool, frames, lm, fitted, cfg, candidates, qa_idx) -> tuple:
    """Rasterise every D_o (in `pool`) into `dset` while streaming the frames once, keeping
    the candidates' sharpness, the QA tiles and the frames the canonical choice may need."""
    n, height, width = dset.shape
    points = lm["points"]
    sharp: dict[int, float] = {}
    qa_tiles: dict[int, np.ndarray] = {}
    kept: dict[int, np.ndarray] = {}
    stream = read_frames(frames, width, height)
    depths = pool.map(_depth_job, ((i, width, height) for i in range(n)), chunksize=8)
    progress = tqdm(zip(stream, depths, strict=True), total=n, desc="pose_depth", unit="frame",
                    disable=None)  # fmt: skip
    for i, (frame, depth) in enumerate(progress):
        dset[i] = depth
        if candidates is not None and i in candidates:
            x, y, w, h = lm["box"][i].astype(int)
            crop = frame[max(y, 0) : y + h, max(x, 0) : x + w]
            value = laplacian_sharpness(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY))
            if not sharp or value > max(sharp.values()):  # keep the first sharpest only
                kept = {i: frame.copy()}
            sharp[i] = value
        if i in qa_idx:
            qa_tiles[i] = draw_qa(frame, points[i], fitted, i)
        if isinstance(cfg.canonical, int) and i == cfg.canonical:
            kept[i] = frame.copy()
        if (i + 1) % 500 == 0:
            log.info("pose_depth: %d/%d frames", i + 1, n)
    return sharp, qa_tiles, kept


def write_canonical(h5, fitted: dict, canon: int, frame_c: np.ndarray, head_grow: float):
    """D_c (the canonical face depth extended over the head), the head mask, K and poses into
    geometry.h5; returns (face depth, head region, D_c)."""
    n, height, width = h5["face_depth"].shape
    d_face = face_depth(fitted, canon, width, height)
    region = head_region(d_face > 0, person_mask(frame_c), head_grow)
    d_c = extend_depth(d_face, region)
    h5.create_dataset("canonical_depth", data=d_c, compression="gzip")
    h5.create_dataset("head_mask", data=region.astype(np.uint8), compression="gzip")
    h5.create_dataset("K", data=fitted["K"])
    h5.create_dataset("pose", data=fitted["pose"])
    h5.create_dataset("canonical_pose", data=fitted["pose"][canon])
    h5.attrs.update({
        "schema_version": SCHEMA_VERSION, "canonical_index": canon, "n_frames": n,
        "width": width, "height": height, "depth_units": "metres (camera z), 0 = empty",
        "pose": "T_o maps head (object) to camera coordinates: X_cam = R X + t",
        "relative_pose": "T_{c->o} = T_o @ inv(T_c)",
        "image": "pixels, x right, y down, origin top-left corner, centres at i + 0.5",
        "camera": "OpenCV: x right, y down, z forward",
    })  # fmt: skip
    return d_face, region, d_c


def run(
    frames,
    meta,
    landmarks,
    fit,
    out_dir,
    cfg: PoseDepthConfig,
    threads: int = 1,
) -> dict:
    """Compute the canonical frame, every D_o and D_c; write `out_dir/geometry.h5` and QA.

    `threads` processes rasterise the per-frame depth maps in parallel.
    """
    clip = read_meta(meta)
    n, width, height = clip["n_frames"], clip["width"], clip["height"]
    fitted = read_npz(fit, ("K", "pose", "rotation", "translation", "good"))
    lm = read_npz(landmarks, ("points", "box"))
    points = lm["points"]
    if len(points) != n or len(fitted["pose"]) != n:
        raise Speech2LipError(
            f"frame counts disagree: resample {n}, landmarks {len(points)}, fit3dmm "
            f"{len(fitted['pose'])}; re-run from landmarks (snakemake --forcerun landmarks)"
        )
    train = np.zeros(n, bool)
    train[slice(*clip["split"]["train"])] = True
    candidates, gap, allowed = canonical_candidates_of(cfg, points, fitted, train)
    qa_idx = set(np.linspace(0, n - 1, min(cfg.qa_frames, n)).round().astype(int).tolist())
    out_dir = Path(out_dir)
    ctx = multiprocessing.get_context("fork")  # workers inherit the fit; pool made before HDF5
    with (
        ProcessPoolExecutor(
            max(threads, 1), ctx, initializer=_init_worker, initargs=(fitted, os.getpid())
        ) as pool,
        atomic_path(out_dir / "geometry.h5") as tmp,
        h5py.File(tmp, "w") as h5,
    ):
        dset = h5.create_dataset("face_depth", (n, height, width), np.float16,
                                 chunks=(1, height, width), compression="gzip",
                                 compression_opts=4, shuffle=True)  # fmt: skip
        sharp, qa_tiles, kept = stream_depths(dset, pool, frames, lm, fitted, cfg, candidates,
                                              qa_idx)  # fmt: skip
        if isinstance(cfg.canonical, int):
            canon = cfg.canonical
        else:
            canon = choose_canonical(fitted["rotation"], gap, sharp, allowed)
        frame_c = kept[canon]  # kept while streaming
        d_face, region, d_c = write_canonical(h5, fitted, canon, frame_c, cfg.head_grow)
    tiles = [qa_tiles[i] for i in sorted(qa_tiles)]
    save_png(out_dir / "qa_contact_sheet.png", contact_sheet(tiles, 4, 256))
    save_png(out_dir / "qa_canonical_depth.png",
             np.hstack([frame_c, depth_picture(d_face), depth_picture(d_c)]))  # fmt: skip
    summary = {
        "canonical_index": canon,
        "canonical_rotation_deg": float(rotation_angle_deg(fitted["rotation"][canon])),
        "face_pixels_canonical": int((d_face > 0).sum()),
        "head_pixels_canonical": int(region.sum()),
        "depth_range_m": [float(d_c[d_c > 0].min()), float(d_c.max())],
    }
    write_json(out_dir / "pose_depth.json", summary)
    log.info("pose_depth: canonical frame %d (%.1f deg from frontal)", canon,
             summary["canonical_rotation_deg"])  # fmt: skip
    return summary
