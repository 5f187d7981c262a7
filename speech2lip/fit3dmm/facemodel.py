"""A morphable face model and its batched fit to landmarks (pure functions, no I/O).

`build_subject_model` makes a linear model from the subject's own 3D landmarks (MediaPipe):
shapes are rigidly aligned (generalised Procrustes with scale), the mean is scaled to metres by
the outer eye-corner distance, and the residuals give an expression basis by PCA.

`fit` finds, for all frames at once in torch, each frame's head pose (rotation, translation)
and expression coefficients and one shared focal length that minimise a robust (Huber)
landmark reprojection error under a pinhole camera with the principal point at the image
centre. Object coordinates follow the camera convention (x right, y down, z away from the
camera) so a frontal face has rotation identity; units are metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from speech2lip.geometry.topology import MEDIAPIPE


@dataclass(frozen=True)
class FaceModel:
    """`shape = mean + sum_k coeff_k * basis_k`; coefficients in units of `stddev`."""

    mean: np.ndarray  # (P, 3) metres
    basis: np.ndarray  # (K, P, 3) metres per unit coefficient (already scaled by stddev)
    stddev: np.ndarray  # (K,) metres, the original spread of each component (for reports)

    def shape(self, coeffs: np.ndarray) -> np.ndarray:
        """`(N, K)` coefficients -> `(N, P, 3)` shapes."""
        return self.mean + np.einsum("nk,kpc->npc", coeffs, self.basis)


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares `dst ~ s R src + t` (Umeyama). `src`, `dst`: `(P, 3)`."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = float((sig * np.diag(fix)).sum() / (a**2).sum())
    return scale, rot, mu_d - scale * rot @ mu_s


def frontal_rotation(shape: np.ndarray) -> np.ndarray:
    """Rotation that turns a MediaPipe-topology shape to face the camera: x from the right eye's
    outer corner (33) to the left one's (263), y from the top of the forehead (10) towards the
    chin (152), z = x cross y (away from the camera)."""
    x = shape[263] - shape[33]
    x /= np.linalg.norm(x)
    y = shape[152] - shape[10]
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)])  # rows: new axes in old coordinates


def build_subject_model(
    points: np.ndarray, n_components: int, eye_distance: float = 0.09, iterations: int = 4
) -> tuple[FaceModel, np.ndarray]:
    """Mean shape + expression basis from `(N, P, 3)` 3D landmark shapes (good frames only).

    Returns the model and the aligned shapes in model units. The mean is centred and scaled so
    that the outer eye corners are `eye_distance` apart.
    """
    shapes = points.astype(np.float64)
    ref = shapes[0] - shapes[0].mean(0)
    aligned = shapes
    for _ in range(iterations):
        out = []
        for shape in shapes:
            s, r, t = similarity(shape, ref)
            out.append(s * shape @ r.T + t)
        aligned = np.stack(out)
        ref = aligned.mean(0)
        ref = ref - ref.mean(0)
    i, j = MEDIAPIPE.eye_corners
    unit = eye_distance / np.linalg.norm(ref[i] - ref[j])
    if points.shape[1] == MEDIAPIPE.n_points:  # face the camera: R = I means frontal
        frontal = frontal_rotation(ref)
        ref = ref @ frontal.T
        aligned = aligned @ frontal.T
    mean = ref * unit
    aligned = (aligned - aligned.mean(1, keepdims=True)) * unit
    resid = (aligned - mean).reshape(len(aligned), -1)
    k = min(n_components, max(len(aligned) - 1, 0))
    if k == 0:
        basis = np.zeros((0, *mean.shape))
        std = np.zeros(0)
    else:
        _, sig, vt = np.linalg.svd(resid - resid.mean(0), full_matrices=False)
        std = sig[:k] / np.sqrt(max(len(aligned) - 1, 1))
        basis = (vt[:k] * std[:, None]).reshape(k, *mean.shape)
    return FaceModel(mean=mean, basis=basis, stddev=std), aligned


def backproject_shapes(
    points: np.ndarray, model: FaceModel, result: Fit, width: int, height: int
) -> np.ndarray:
    """Object-space 3D shapes `(N, P, 3)` consistent with a perspective camera.

    Each observed landmark is lifted along its camera ray to the depth the current fit gives
    it, then moved into object space with the frame's pose. Rebuilding the model from these
    removes the perspective that MediaPipe's image-plane coordinates have baked in.
    """
    from speech2lip.geometry import rodrigues

    rot = rodrigues(result.rotvec)
    shape = model.shape(result.coeffs)
    cam = np.einsum("nij,npj->npi", rot, shape) + result.translation[:, None]
    z = cam[..., 2]
    x = (points[..., 0] - width / 2) * z / result.focal
    y = (points[..., 1] - height / 2) * z / result.focal
    lifted = np.stack([x, y, z], -1) - result.translation[:, None]
    return np.einsum("nji,npj->npi", rot, lifted)  # R^T (X - t)


def _rotmat(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues for a batch `(N, 3)` -> `(N, 3, 3)`, differentiable (also at zero)."""
    theta2 = (rotvec**2).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-20)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(-1, 3, 3)
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-20))
    return torch.eye(3, dtype=rotvec.dtype, device=rotvec.device) + a * k + b * (k @ k)


def rotvec_from_matrix(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices `(N, 3, 3)` -> axis-angle `(N, 3)`."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rot).as_rotvec()


@dataclass(frozen=True)
class Fit:
    focal: float
    rotvec: np.ndarray  # (N, 3)
    translation: np.ndarray  # (N, 3) metres
    coeffs: np.ndarray  # (N, K)
    error_px: np.ndarray  # (N,) mean reprojection error per frame


def initial_poses(
    points3d: np.ndarray, model: FaceModel, focal: float, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pose guesses from a similarity fit of the mean to each frame's 3D landmarks (pixels)."""
    rotvecs, trans = [], []
    cx, cy = width / 2, height / 2
    for frame in points3d:
        s, r, t = similarity(model.mean, frame)
        tz = focal / s
        trans.append([(t[0] - cx) * tz / focal, (t[1] - cy) * tz / focal, tz])
        rotvecs.append(rotvec_from_matrix(r[None])[0])
    return np.array(rotvecs), np.array(trans)


def project_scaled(
    model_t: tuple[torch.Tensor, torch.Tensor], rotvec: torch.Tensor, log_s: torch.Tensor,
    txy: torch.Tensor, coeffs: torch.Tensor, log_f: torch.Tensor, width: int, height: int,
) -> torch.Tensor:  # fmt: skip
    """Pixels `(N, P, 2)` in the fitting parametrisation.

    Per frame: s = f / t_z (pixels per metre at the head), txy = (f t_x / t_z, f t_y / t_z)
    (pixels); then u - c = (s q_x + tx) / (1 + s q_z / f) with q = R X. The focal length only
    enters through the small perspective term, which decouples it from the per-frame scale
    (with t_z as a variable, f and t_z form a long narrow valley that L-BFGS crawls along).
    """
    mean, basis = model_t
    shape = mean + torch.einsum("nk,kpc->npc", coeffs, basis)
    q = shape @ _rotmat(rotvec).transpose(1, 2)
    s = log_s.exp()[:, None, None]
    persp = 1 + s * q[..., 2:3] / log_f.exp()
    centre = torch.tensor([width / 2, height / 2], dtype=q.dtype, device=q.device)
    return (s * q[..., :2] + txy[:, None]) / persp + centre


def to_camera(log_s: np.ndarray, txy: np.ndarray, focal: float) -> np.ndarray:
    """Camera translations `(N, 3)` (metres) from the fitting parametrisation."""
    s = np.exp(log_s)
    return np.stack([txy[:, 0] / s, txy[:, 1] / s, focal / s], axis=1)


def fit(
    points: np.ndarray, weights: np.ndarray, model: FaceModel, width: int, height: int, *,
    focal: float | None = None, focal_init: float | None = None, iterations: int = 60,
    robust_px: float = 2.0, expression_weight: float = 0.01,
    init: tuple[np.ndarray, np.ndarray] | None = None, fixed_pose: bool = False,
    init_coeffs: np.ndarray | None = None,
) -> Fit:  # fmt: skip
    """Fit pose, expression and (unless given) focal to `(N, P, 2|3)` landmark pixels.

    Runs on the GPU when one is present (all frames at once), else on the CPU.

    `weights` `(N,)` or `(N, P)`: 0 drops a frame or point (e.g. interpolated frames). `init`:
    (rotvec, translation) guesses; by default from the 3D landmarks. With `fixed_pose` only
    expression (and focal) move.
    """
    dtype = torch.float64
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # chosen once, here
    target = torch.tensor(points[..., :2], dtype=dtype, device=dev)
    w = np.asarray(weights, dtype=np.float64)
    w = np.broadcast_to(w[:, None] if w.ndim == 1 else w, points.shape[:2])
    weight = torch.tensor(np.ascontiguousarray(w), dtype=dtype, device=dev)
    f0 = focal or focal_init or 1.5 * max(width, height)
    if init is None:
        if points.shape[-1] < 3:
            raise ValueError("initial poses need 3D landmarks (x, y, z) or `init`")
        init = initial_poses(points, model, f0, width, height)
    rv0, t0 = init
    model_t = (
        torch.tensor(model.mean, dtype=dtype, device=dev),
        torch.tensor(model.basis, dtype=dtype, device=dev),
    )
    # Variables are scaled so that one unit moves the landmarks by a similar number of pixels.
    rotvec = torch.tensor(rv0, dtype=dtype, device=dev, requires_grad=not fixed_pose)
    log_s = torch.tensor(
        np.log(f0 / t0[:, 2]), dtype=dtype, device=dev, requires_grad=not fixed_pose
    )
    txy_100 = torch.tensor(f0 * t0[:, :2] / t0[:, 2:3] / 100, dtype=dtype, device=dev,
                           requires_grad=not fixed_pose)  # fmt: skip
    k = model.basis.shape[0]
    c0 = init_coeffs if init_coeffs is not None else np.zeros((len(points), k))
    coeffs_10 = torch.tensor(c0 / 10, dtype=dtype, device=dev, requires_grad=True)
    log_f = torch.tensor(np.log(f0), dtype=dtype, device=dev, requires_grad=focal is None)
    params = [p for p in (rotvec, log_s, txy_100, coeffs_10, log_f) if p.requires_grad]
    total = weight.sum().clamp_min(1)
    opt = torch.optim.LBFGS(params, lr=1, max_iter=iterations, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10,
                            tolerance_change=1e-14)  # fmt: skip

    def pixels() -> torch.Tensor:
        return project_scaled(model_t, rotvec, log_s, txy_100 * 100, coeffs_10 * 10, log_f,
                              width, height)  # fmt: skip

    def loss_fn() -> torch.Tensor:
        opt.zero_grad()
        dist = torch.sqrt(((pixels() - target) ** 2).sum(-1) + 1e-12)
        huber = torch.where(dist < robust_px, 0.5 * dist**2, robust_px * (dist - 0.5 * robust_px))
        reg = expression_weight * ((coeffs_10 * 10) ** 2).mean() * k
        loss = (weight * huber).sum() / total + reg
        loss.backward()
        return loss

    opt.step(loss_fn)
    with torch.no_grad():
        err = torch.sqrt(((pixels() - target) ** 2).sum(-1))
        per_frame = (err * weight).sum(1) / weight.sum(1).clamp_min(1e-9)
    focal_px = float(log_f.detach().exp())
    return Fit(
        focal=focal_px,
        rotvec=rotvec.detach().cpu().numpy().copy(),
        translation=to_camera(
            log_s.detach().cpu().numpy(), txy_100.detach().cpu().numpy() * 100, focal_px
        ),  # fmt: skip
        coeffs=coeffs_10.detach().cpu().numpy() * 10,
        error_px=per_frame.cpu().numpy(),
    )
