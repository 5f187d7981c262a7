"""Stage `fit3dmm`: a subject face model (no download), focal length, per-frame pose/expression.

Writes `results/{subject}/fit3dmm/fit.npz`:

- `K` `(3, 3)`: intrinsics (focal fitted, principal point at the image centre);
- `rotation` `(N, 3, 3)`, `translation` `(N, 3)` metres, `pose` `(N, 4, 4)`: head (object) ->
  camera, smoothed; `rotvec_raw`, `translation_raw`: before smoothing;
- `coeffs` `(N, K)`: expression coefficients (units of their std); `mean` `(P, 3)` and `basis`
  `(K, P, 3)` metres: the model (shape = mean + coeffs @ basis); `stddev` `(K,)`;
- `error_px` `(N,)`: mean landmark reprojection error per frame (after smoothing);
- `triangles` `(T, 3)`: the mesh (MediaPipe topology with eyes and mouth closed);

and `fit.json`: focal, reprojection error statistics, pose jitter before/after smoothing.
Object and camera axes: x right, y down, z away from the camera (see `speech2lip.geometry`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.signal import savgol_filter

from speech2lip.atomic import atomic_path, write_json
from speech2lip.config import Fit3dmmConfig
from speech2lip.errors import Speech2LipError
from speech2lip.fit3dmm.facemodel import FaceModel, backproject_shapes, build_subject_model, fit
from speech2lip.geometry import face_triangles, intrinsics, rodrigues
from speech2lip.geometry.topology import MEDIAPIPE
from speech2lip.inputs import read_meta, read_npz
from speech2lip.media import crop_scale

log = logging.getLogger(__name__)


def smooth_poses(
    rotvec: np.ndarray, translation: np.ndarray, window: int, order: int
) -> tuple[np.ndarray, np.ndarray]:
    """Savitzky-Golay smoothing of axis-angle rotations and translations over time.

    Rotations are smoothed as axis-angle relative to their mean (small, continuous), which is
    accurate for the head rotations of a talking person. `window` 1 (or fewer frames than the
    window) returns the input.
    """
    n = len(rotvec)
    window = min(window, n if n % 2 else n - 1)
    if window <= order or window < 3:
        return rotvec.copy(), translation.copy()
    smooth = lambda x: savgol_filter(x, window, order, axis=0, mode="interp")  # noqa: E731
    return smooth(rotvec), smooth(translation)


def jitter(rotvec: np.ndarray, translation: np.ndarray) -> dict[str, float]:
    """Mean frame-to-frame pose acceleration: degrees/frame^2 and millimetres/frame^2."""
    if len(rotvec) < 3:
        return {"rotation_deg": 0.0, "translation_mm": 0.0}
    acc_r = np.linalg.norm(np.diff(rotvec, 2, axis=0), axis=1)
    acc_t = np.linalg.norm(np.diff(translation, 2, axis=0), axis=1)
    return {
        "rotation_deg": float(np.degrees(acc_r).mean()),
        "translation_mm": float(1000 * acc_t.mean()),
    }


def poses(rotvec: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """`(N, 4, 4)` object -> camera transforms."""
    out = np.tile(np.eye(4), (len(rotvec), 1, 1))
    out[:, :3, :3] = rodrigues(rotvec)
    out[:, :3, 3] = translation
    return out


def focal_guess(meta: dict) -> float:
    """A focal length (output pixels) for when the data cannot say: 2x the source frame's larger
    side (a ~28 degree field of view, typical of filmed talking heads), scaled by the crop."""
    src_w, src_h = meta["crop"]["source_size"]
    return 2.0 * max(src_w, src_h) * crop_scale(meta["crop"])[0]


def plot_poses(path: Path, rv_raw, rv, tr_raw, tr, summary: dict) -> None:
    """QA: head rotation and translation over time, raw and smoothed, with jitter figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for k, name in enumerate("xyz"):
        axes[0].plot(np.degrees(rv_raw[:, k]), lw=0.6, alpha=0.5, label=f"raw {name}")
        axes[0].plot(np.degrees(rv[:, k]), lw=1.2, label=f"smoothed {name}")
        axes[1].plot(1000 * (tr_raw[:, k] - tr_raw[:, k].mean()), lw=0.6, alpha=0.5)
        axes[1].plot(1000 * (tr[:, k] - tr_raw[:, k].mean()), lw=1.2, label=f"t{name}")
    axes[0].set_ylabel("rotation (axis-angle, deg)")
    axes[1].set_ylabel("translation - mean (mm)")
    axes[1].set_xlabel("frame")
    axes[0].legend(ncol=6, fontsize=7)
    axes[1].legend(ncol=3, fontsize=7)
    jb, ja = summary["jitter_before"], summary["jitter_after"]
    fig.suptitle(f"head pose; jitter {jb['rotation_deg']:.3f} -> {ja['rotation_deg']:.3f} "
                 f"deg/frame^2, {jb['translation_mm']:.2f} -> {ja['translation_mm']:.2f} "
                 "mm/frame^2; "
                 f"reprojection {summary['error_px']['mean']:.2f} px")  # fmt: skip
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def model_for(
    cfg: Fit3dmmConfig, points: np.ndarray, good: np.ndarray
) -> tuple[FaceModel, FaceModel, np.ndarray]:
    """(landmark model, mesh model, mesh triangles) for the configured face model."""
    if cfg.model == "bfm":
        from speech2lip.fit3dmm.bfm import load_bfm_model

        return load_bfm_model(cfg.bfm_path, cfg.bfm_landmarks, points.shape[1], cfg.eye_distance_m)
    if points.shape[1] != MEDIAPIPE.n_points:
        raise Speech2LipError(
            f"fit3dmm model 'subject' needs MediaPipe's 478 3D landmarks, got {points.shape[1]} "
            "points; use landmarks.backend: mediapipe (or fit3dmm.model: bfm with its landmark map)"
        )
    model, _ = build_subject_model(points[good], cfg.n_expression, cfg.eye_distance_m)
    return model, model, face_triangles()


def fit_focal(
    points, weights, model, width: int, height: int, cfg: Fit3dmmConfig, guess: float, kw: dict
):
    """The first fit and where its focal length came from: the config, the fit itself, or the
    guess when the landmarks carry too little perspective to fix it."""
    if cfg.focal is not None:
        raw, focal_source = (
            fit(points, weights, model, width, height, focal=cfg.focal, **kw),
            "config",
        )
    else:
        raw = fit(points, weights, model, width, height, focal=None, focal_init=guess, **kw)
        focal_source = "fitted"
        if not 0.3 <= raw.focal / max(width, height) <= 10:
            log.warning(
                "fit3dmm: the landmarks do not determine the focal length (fit went to %.0f px: "
                "almost no perspective in them); using %.0f px. Set fit3dmm.focal if you know it",
                raw.focal, guess,
            )  # fmt: skip
            focal_source = "default guess (landmarks carry too little perspective)"
            if cfg.model == "subject" and cfg.refine_rounds > 0:
                # The refinement below fits again anyway: move the poses to the guessed focal
                # (per frame, f / t_z and the image-plane offsets are what the landmarks fix).
                scale = np.array([1.0, 1.0, guess / raw.focal])
                raw = replace(raw, focal=guess, translation=raw.translation * scale)
            else:
                raw = fit(points, weights, model, width, height, focal=guess, **kw)
    return raw, focal_source


def refine(
    points,
    weights,
    good,
    size: tuple[int, int],
    model,
    mesh,
    raw,
    cfg: Fit3dmmConfig,
    focal_source: str,
    kw: dict,
):
    """The subject model rebuilt through the fitted camera and fitted again, `refine_rounds`
    times (a BFM model is kept as it is): (model, mesh, fit)."""
    width, height = size
    if cfg.model == "subject":  # rebuild the model through the fitted camera, and fit again
        for _ in range(cfg.refine_rounds):
            lifted = backproject_shapes(points, model, raw, width, height)
            model, _ = build_subject_model(lifted[good], cfg.n_expression, cfg.eye_distance_m)
            mesh = model
            init = (raw.rotvec, raw.translation)
            raw = fit(points, weights, model, width, height, focal=raw.focal if focal_source !=
                      "fitted" else None, focal_init=raw.focal, init=init, **kw)  # fmt: skip
            log.info("fit3dmm: refined model: %.2f px mean, focal %.0f px",
                     raw.error_px[good].mean(), raw.focal)  # fmt: skip
    return model, mesh, raw


def check_error(
    error_px: np.ndarray, good: np.ndarray, long_side: int, limit: float, source
) -> None:
    """Refuse a fit whose mean reprojection error (per 512 px of the frame) exceeds `limit`,
    naming the worst frames: the landmarks are not one face's over time."""
    err = error_px[good] * 512 / long_side
    if len(err) == 0 or err.mean() <= limit:
        return
    ids = np.flatnonzero(good)
    worst = ids[np.argsort(err)[::-1][:8]]
    raise Speech2LipError(
        f"{source}: the face model fits these landmarks with a mean error of {err.mean():.1f} px "
        f"(p95 {np.percentile(err, 95):.1f} px per 512 px; real clips: 0.4-1.4, limit "
        f"fit3dmm.max_error_px = {limit}); worst frames {sorted(worst.tolist())}. The track "
        "may jump between two people or off the face: crop to one face (resample.crop) and "
        "re-run from resample"
    )


def run(landmarks: str | Path, meta: str | Path, out_dir: str | Path, cfg: Fit3dmmConfig) -> dict:
    """Fit the face model to the landmarks in `landmarks`; write `out_dir/fit.npz`."""
    clip = read_meta(meta)
    width, height = clip["width"], clip["height"]
    data = read_npz(landmarks, ("points", "found", "interpolated"))
    points, found = data["points"].astype(np.float64), data["found"]
    good = found & ~data["interpolated"]
    model, mesh, triangles = model_for(cfg, points, good)
    log.info(
        "fit3dmm: model with %d expression components from %d frames", len(model.stddev), good.sum()
    )
    weights = np.where(good, 1.0, 0.05)  # interpolated frames follow their neighbours, lightly
    guess = focal_guess(clip)
    kw = {"iterations": cfg.iterations, "robust_px": cfg.robust_px,
          "expression_weight": cfg.expression_weight}  # fmt: skip
    raw, focal_source = fit_focal(points, weights, model, width, height, cfg, guess, kw)
    model, mesh, raw = refine(
        points, weights, good, (width, height), model, mesh, raw, cfg, focal_source, kw
    )
    rv, tr = smooth_poses(raw.rotvec, raw.translation, cfg.smooth_window, cfg.smooth_order)
    final = fit(points, weights, model, width, height, focal=raw.focal, init=(rv, tr),
                fixed_pose=True, init_coeffs=raw.coeffs, **kw)  # fmt: skip
    before, after = jitter(raw.rotvec, raw.translation), jitter(rv, tr)
    err = final.error_px[good]
    check_error(final.error_px, good, max(width, height), cfg.max_error_px, landmarks)
    summary = {
        "model": cfg.model,
        "focal_px": raw.focal,
        "focal_source": focal_source,
        "n_frames": len(points),
        "n_expression": len(model.stddev),
        "error_px": {"mean": float(err.mean()), "median": float(np.median(err)),
                     "p95": float(np.percentile(err, 95)), "max": float(err.max()),
                     "mean_before_smoothing": float(raw.error_px[good].mean())},
        "jitter_before": before,
        "jitter_after": after,
        "units": "metres; object/camera axes x right, y down, z forward; pose = object->camera",
    }  # fmt: skip
    out_dir = Path(out_dir)
    with atomic_path(out_dir / "fit.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f, K=intrinsics(raw.focal, width, height), rotation=rodrigues(rv), translation=tr,
            pose=poses(rv, tr), rotvec=rv, rotvec_raw=raw.rotvec, translation_raw=raw.translation,
            coeffs=final.coeffs, mean=model.mean, basis=model.basis, stddev=model.stddev,
            error_px=final.error_px, good=good, mesh_mean=mesh.mean, mesh_basis=mesh.basis,
            triangles=triangles,
        )  # fmt: skip
    write_json(out_dir / "fit.json", summary)
    plot_poses(out_dir / "qa_pose.png", raw.rotvec, rv, raw.translation, tr, summary)
    log.info("fit3dmm: focal %.1f px, reprojection %.2f px mean (%.2f p95), "
             "jitter %.3f -> %.3f deg",
             raw.focal, err.mean(), summary["error_px"]["p95"], before["rotation_deg"],
             after["rotation_deg"])  # fmt: skip
    return summary
