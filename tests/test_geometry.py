"""Face geometry with known answers: topology, rasteriser, model building, fitting, smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from speech2lip.fit3dmm import jitter, smooth_poses
from speech2lip.fit3dmm.facemodel import FaceModel, build_subject_model, fit, similarity
from speech2lip.geometry import (
    face_triangles,
    intrinsics,
    project,
    rasterize_depth,
    rodrigues,
    rotation_angle_deg,
)
from speech2lip.pose_depth import choose_canonical, extend_depth


def test_mesh_topology_from_mediapipe_source():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    tris = face_triangles(closed=False)
    assert tris.shape == (852, 3) and len(np.unique(tris)) == 468
    edges = {frozenset(e) for e in FACEMESH_TESSELATION}
    for a, b, c in tris:
        assert {frozenset((a, b)), frozenset((b, c)), frozenset((c, a))} <= edges
    closed = face_triangles()
    count: dict[frozenset, int] = {}
    for a, b, c in closed:
        for e in (frozenset((a, b)), frozenset((b, c)), frozenset((c, a))):
            count[e] = count.get(e, 0) + 1
    from speech2lip.geometry import MOUTH_RING

    ring = [frozenset(p) for p in zip(MOUTH_RING, MOUTH_RING[1:] + MOUTH_RING[:1], strict=True)]
    assert all(count.get(e) == 2 for e in ring)  # the mouth hole is closed


def test_rasterised_plane_and_triangle_match_the_analytic_depth():
    # a fronto-parallel square at depth 2 covering pixel centres 10.5..99.5 x 10.5..79.5
    px = np.array([[10.0, 10], [100, 10], [10, 80], [100, 80]])
    depth = rasterize_depth(px, np.full(4, 2.0), np.array([[0, 1, 2], [1, 3, 2]]), 128, 96)
    assert (depth > 0).sum() == 90 * 70
    assert np.all(depth[10:80, 10:100] == 2.0)
    # a sloped triangle: depth linear in x, z = 1 + x / 100, exact at pixel centres
    px = np.array([[0.0, 0], [120, 0], [0, 120]])
    z = 1 + px[:, 0] / 100
    depth = rasterize_depth(px, z, np.array([[0, 1, 2]]), 128, 128)
    ys, xs = np.nonzero(depth)
    assert np.all(xs + ys + 1 <= 120)  # inside the triangle's hypotenuse
    np.testing.assert_allclose(depth[ys, xs], 1 + (xs + 0.5) / 100, rtol=1e-5)


def test_rasteriser_keeps_the_nearest_surface():
    px = np.array([[0.0, 0], [64, 0], [0, 64], [64, 64]])
    tris = np.array([[0, 1, 2], [1, 3, 2]])
    near = rasterize_depth(px, np.full(4, 1.0), tris, 64, 64)
    both = rasterize_depth(np.concatenate([px, px]), np.r_[np.full(4, 3.0), np.full(4, 1.0)],
                           np.concatenate([tris, tris + 4]), 64, 64)  # fmt: skip
    np.testing.assert_array_equal(both, near)


def synthetic_model(rng: np.random.Generator) -> FaceModel:
    """A face-sized curved surface (metres) with a few smooth expression modes."""
    u = rng.uniform(-1, 1, (478, 2))
    bulge = np.sqrt(np.clip(1 - u[:, 0] ** 2 - 0.5 * u[:, 1] ** 2, 0, None))
    mean = np.c_[u[:, 0] * 0.07, u[:, 1] * 0.09, -0.05 * bulge]
    modes = np.stack([np.c_[0 * u[:, 0], 0.004 * u[:, 1] ** 2, 0 * u[:, 0]],
                      np.c_[0.003 * u[:, 0], 0 * u[:, 0], 0 * u[:, 0]],
                      np.c_[0 * u[:, 0], 0 * u[:, 0], 0.004 * u[:, 0] * u[:, 1]]])  # fmt: skip
    return FaceModel(mean=mean - mean.mean(0), basis=modes, stddev=np.ones(3))


def render(model: FaceModel, rotvec, trans, coeffs, focal, size):
    cam = np.einsum("nij,npj->npi", rodrigues(rotvec), model.shape(coeffs)) + trans[:, None]
    px = project(cam, intrinsics(focal, size, size))
    # MediaPipe-like z: relative depth in pixels at the head's distance
    z = (cam[..., 2] - cam[..., 2].mean(1, keepdims=True)) * focal / trans[:, 2:3]
    return np.concatenate([px, z[..., None]], -1)


def test_fit_recovers_known_poses_and_focal():
    rng = np.random.default_rng(0)
    model = synthetic_model(rng)
    n, size, focal = 30, 512, 700.0
    rotvec = rng.normal(0, 0.2, (n, 3))
    trans = np.c_[rng.normal(0, 0.02, (n, 2)), rng.uniform(0.45, 0.6, n)]
    coeffs = rng.normal(0, 1, (n, 3))
    points = render(model, rotvec, trans, coeffs, focal, size)
    result = fit(points, np.ones(n), model, size, size, iterations=150, expression_weight=1e-4)
    assert abs(result.focal / focal - 1) < 0.02
    rel = np.einsum("nji,njk->nik", rodrigues(result.rotvec), rodrigues(rotvec))
    assert rotation_angle_deg(rel).max() < 0.5
    assert result.error_px.max() < 0.3
    np.testing.assert_allclose(result.translation, trans, atol=0.005)


def test_fit_is_robust_to_a_few_wrong_landmarks():
    rng = np.random.default_rng(1)
    model = synthetic_model(rng)
    n = 10
    rotvec, trans = rng.normal(0, 0.15, (n, 3)), np.c_[np.zeros((n, 2)), np.full(n, 0.5)]
    points = render(model, rotvec, trans, np.zeros((n, 3)), 800.0, 512)
    points[:, :10, :2] += 40  # ten landmarks off by 57 px in every frame
    result = fit(points, np.ones(n), model, 512, 512, focal=800.0, iterations=100)
    rel = np.einsum("nji,njk->nik", rodrigues(result.rotvec), rodrigues(rotvec))
    assert rotation_angle_deg(rel).max() < 0.5


def test_subject_model_recovers_shape_and_modes_from_moving_copies():
    rng = np.random.default_rng(2)
    base = synthetic_model(rng)
    # local deformations (a jaw drop, a lip spread, a cheek puff): not similarity transforms,
    # which the alignment removes by design
    u = base.mean[:, :2] / [0.07, 0.09]
    low, mid = (u[:, 1] > 0.3).astype(float), (np.abs(u[:, 1]) < 0.3).astype(float)
    modes = np.zeros((3, 478, 3))
    modes[0, :, 1] = 0.006 * low * (1 - u[:, 0] ** 2)
    modes[1, :, 0] = 0.004 * mid * u[:, 0] * (u[:, 1] > 0)
    modes[2, :, 2] = -0.004 * mid * (np.abs(u[:, 0]) > 0.5)
    truth = FaceModel(mean=base.mean, basis=modes, stddev=np.ones(3))
    n = 60
    coeffs = rng.normal(0, 1, (n, 3))
    shapes = truth.shape(coeffs)
    rot = rodrigues(rng.normal(0, 0.3, (n, 3)))
    moved = 500 * np.einsum("nij,npj->npi", rot, shapes) + rng.normal(0, 50, (n, 1, 3))
    model, aligned = build_subject_model(moved, n_components=3, eye_distance=0.09, iterations=5)
    average = truth.shape(coeffs.mean(0, keepdims=True))[0]  # the sample's own mean shape
    s, r, t = similarity(model.mean, average)
    assert np.abs(s * model.mean @ r.T + t - average).max() < 1e-4
    # the three modes, in the model's frame, span the true ones
    q, _ = np.linalg.qr(model.basis.reshape(3, -1).T)
    true = (truth.basis @ r).reshape(3, -1).T / s  # true modes turned into the model's frame
    m = model.mean  # alignment removes each mode's similarity part: project it out first
    similar = [np.tile(e, (478, 1)) for e in np.eye(3)] + [np.cross(e, m) for e in np.eye(3)] + [m]
    sq, _ = np.linalg.qr(np.stack([v.ravel() for v in similar], 1))
    true = true - sq @ (sq.T @ true)
    residual = true - q @ (q.T @ true)
    assert np.linalg.norm(residual) / np.linalg.norm(true) < 0.1


def test_subject_model_faces_the_camera():
    from speech2lip.sample.face import face_landmarks, photo

    lm = face_landmarks(photo())  # the demo photo, a near-frontal face
    pts = np.concatenate([lm, np.zeros((478, 1))], 1)
    mp_z = lm[:, :1] * 0  # flat z is enough for the axes
    pts[:, 2:] = mp_z
    model, _ = build_subject_model(pts[None].repeat(3, 0), n_components=0)
    eye_axis = model.mean[263] - model.mean[33]
    assert abs(eye_axis[1]) < 1e-9 and eye_axis[0] > 0  # eyes level, left eye on the right
    assert abs(np.linalg.norm(eye_axis) - 0.09) < 1e-9
    assert model.mean[152, 1] > model.mean[10, 1]  # chin below forehead (y down)


def test_smoothing_reduces_jitter_and_keeps_a_step():
    rng = np.random.default_rng(3)
    n = 200
    level = np.where(np.arange(n) < 100, 0.0, 0.2)
    rv = np.c_[level, np.zeros(n), np.zeros(n)] + rng.normal(0, 0.01, (n, 3))
    tr = np.c_[np.zeros((n, 2)), np.full(n, 0.5)] + rng.normal(0, 0.001, (n, 3))
    srv, str_ = smooth_poses(rv, tr, 7, 2)
    before, after = jitter(rv, tr), jitter(srv, str_)
    assert after["rotation_deg"] < 0.4 * before["rotation_deg"]
    assert after["translation_mm"] < 0.4 * before["translation_mm"]
    assert abs(srv[105, 0] - 0.2) < 0.02 and abs(srv[94, 0]) < 0.02  # the step stays sharp
    same = smooth_poses(rv, tr, 1, 0)
    np.testing.assert_array_equal(same[0], rv)


def test_canonical_choice_prefers_frontal_closed_sharp():
    n = 6
    rot = rodrigues(np.c_[np.deg2rad([20, 1, 0.5, 0.2, 15, 0]), np.zeros((n, 2))])
    gap = np.array([0.2, 0.1, 5.0, 0.1, 0.3, 0.0])
    allowed = np.array([True, True, True, True, True, False])  # frame 5: test split
    # frontal enough: 1, 2, 3; closed: 1, 3 (2 is open); then the sharpest
    assert choose_canonical(rot, gap, {1: 10.0, 2: 99.0, 3: 30.0}, allowed) == 3
    assert choose_canonical(rot, gap, {1: 40.0, 3: 30.0}, allowed) == 1


def test_depth_extension_is_continuous_and_stays_in_the_region():
    depth = np.zeros((200, 200), np.float32)
    depth[80:120, 80:120] = 1.0 + np.linspace(0, 0.2, 40)[None, :]
    region = np.zeros((200, 200), bool)
    region[40:160, 40:160] = True
    out = extend_depth(depth, region)
    np.testing.assert_array_equal(out[80:120, 80:120], depth[80:120, 80:120])
    assert out[~region].max() == 0 and out[region].min() > 0
    assert abs(out[100, 78] - 1.0) < 0.03 and abs(out[100, 121] - 1.2) < 0.03


@pytest.mark.parametrize("shape", [(5, 478, 3)])
def test_frontal_model_requires_enough_frames(shape):
    pts = np.random.default_rng(4).normal(size=shape)
    model, _ = build_subject_model(pts, n_components=16)
    assert model.basis.shape[0] == 4  # at most frames - 1 components
