"""Stages `landmarks`, `fit3dmm`, `pose_depth` on generated clips, and the optional loaders."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import FAST_FIT, encode, media

from speech2lip import fit3dmm, landmarks, pose_depth, resample
from speech2lip.config import Fit3dmmConfig, LandmarksConfig, PoseDepthConfig, ResampleConfig
from speech2lip.errors import Speech2LipError
from speech2lip.faces.landmarkers import landmark_frames, open_landmarker
from speech2lip.landmarks import fill_gaps, runs
from speech2lip.media import read_frames


def test_runs_and_gap_filling():
    found = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0], bool)
    assert runs(~found) == [(2, 4), (5, 6), (8, 9)]
    pts = np.arange(9, dtype=np.float32)[:, None, None] * np.ones((9, 2, 3), np.float32)
    filled, interp = fill_gaps(np.where(found[:, None, None], pts, -1), found, 2, 0.5)
    np.testing.assert_allclose(filled[:8], pts[:8])  # linear motion interpolates exactly
    assert filled[8, 0, 0] == 7  # a gap at the end holds the last found frame
    assert interp.tolist() == (~found).tolist()


def test_too_many_or_too_long_gaps_name_the_frames():
    found = np.ones(100, bool)
    found[40:60] = False
    with pytest.raises(
        Speech2LipError, match=r"clip.mp4: .*max_gap = 12.*frames without a face: 40-59"
    ):
        fill_gaps(np.zeros((100, 3, 3)), found, 12, 0.5, "clip.mp4")
    found = np.ones(100, bool)
    found[::10] = False  # 10 % missing in short gaps
    with pytest.raises(Speech2LipError, match=r"10.0% of frames have no face"):
        fill_gaps(np.zeros((100, 3, 3)), found, 12, 0.05)
    with pytest.raises(Speech2LipError, match="no face found in any"):
        fill_gaps(np.zeros((5, 3, 3)), np.zeros(5, bool), 12, 0.05)


def test_landmarks_on_the_demo(demo_geometry):
    data = np.load(demo_geometry / "landmarks/landmarks.npz")
    meta = json.loads((demo_geometry / "resample/meta.json").read_text())
    assert data["points"].shape == (meta["n_frames"], 478, 3)
    assert data["found"].all() and not data["interpolated"].any()
    summary = json.loads((demo_geometry / "landmarks/landmarks.json").read_text())
    assert summary["found"] == meta["n_frames"] and summary["face_size_px"] > 100
    assert np.all(data["points"][..., :2] >= 0) and np.all(data["points"][..., :2] <= 256)


def test_faceless_stretch_is_a_clear_error_and_leaves_nothing(tmp_path, demo_video):
    frames = np.stack([f for f in read_frames(demo_video, 512, 512)])[:, ::2, ::2]
    frames[10:30] = np.random.default_rng(0).integers(0, 256, frames[10:30].shape, dtype=np.uint8)
    src = encode(tmp_path / "gap.mp4", np.ascontiguousarray(frames), fps="25")
    resample.run(src, tmp_path / "resample", ResampleConfig(crop="none", size=None))
    with pytest.raises(Speech2LipError, match=r"frames without a face: 1\d-(2\d|3\d)"):
        landmarks.run(tmp_path / "resample/frames.mkv", tmp_path / "resample/meta.json",
                      tmp_path / "landmarks", LandmarksConfig())  # fmt: skip
    assert not (tmp_path / "landmarks").exists() or not any((tmp_path / "landmarks").iterdir())


def test_small_face_is_refused(tmp_path, demo_video):
    frames = np.stack([f for f in read_frames(demo_video, 512, 512)])[:60]
    src = encode(tmp_path / "small.mp4", np.ascontiguousarray(frames))
    resample.run(src, tmp_path / "r", ResampleConfig(crop="none", size=128))
    with pytest.raises(Speech2LipError, match="the face is only ~"):
        landmarks.run(tmp_path / "r/frames.mkv", tmp_path / "r/meta.json", tmp_path / "l",
                      LandmarksConfig(min_face_size=200))  # fmt: skip


def test_fit_on_the_demo(demo_geometry):
    summary = json.loads((demo_geometry / "fit3dmm/fit.json").read_text())
    print("demo fit:", summary["error_px"], summary["focal_px"], summary["focal_source"])
    assert summary["error_px"]["mean"] < 1.5 * 256 / 512  # the 1.5 px target at 512, scaled
    assert summary["jitter_after"]["rotation_deg"] < summary["jitter_before"]["rotation_deg"]
    fit = np.load(demo_geometry / "fit3dmm/fit.npz")
    n = len(fit["pose"])
    assert fit["pose"].shape == (n, 4, 4) and fit["K"][0, 2] == 128
    np.testing.assert_allclose(fit["pose"][:, :3, :3] @ fit["pose"][:, :3, :3].transpose(0, 2, 1),
                               np.broadcast_to(np.eye(3), (n, 3, 3)), atol=1e-9)  # fmt: skip
    assert (demo_geometry / "fit3dmm/qa_pose.png").stat().st_size > 10_000


def test_pose_depth_on_the_demo(demo_geometry):
    with h5py.File(demo_geometry / "pose_depth/geometry.h5") as h5:
        n = h5.attrs["n_frames"]
        c = int(h5.attrs["canonical_index"])
        depth = h5["face_depth"]
        assert depth.shape == (n, 256, 256) and depth.dtype == np.float16
        d0 = depth[c].astype(np.float32)
        d_c = h5["canonical_depth"][:]
        mask = h5["head_mask"][:].astype(bool)
        np.testing.assert_array_equal(h5["canonical_pose"][:], h5["pose"][c])
        tz = h5["pose"][c][2, 3]
    face = d0 > 0
    assert 0.4 * 256 * 256 > face.sum() > 0.05 * 256 * 256
    assert abs(np.median(d0[face]) - tz) < 0.05  # the face sits at the head's distance
    assert np.all(d_c[face] == pytest.approx(d0[face], rel=1e-3))  # f16 storage of D_o
    assert (d_c > 0).sum() > face.sum() and np.all(d_c[~mask] == 0)
    for name in ("qa_contact_sheet.png", "qa_canonical_depth.png"):
        assert (demo_geometry / "pose_depth" / name).stat().st_size > 10_000


def test_pose_depth_refuses_mismatched_counts(tmp_path, demo_geometry):
    fit = dict(np.load(demo_geometry / "fit3dmm/fit.npz"))
    fit["pose"] = fit["pose"][:-1]
    np.savez(tmp_path / "fit.npz", **fit)
    with pytest.raises(Speech2LipError, match="frame counts disagree"):
        pose_depth.run(demo_geometry / "resample/frames.mkv", demo_geometry / "resample/meta.json",
                       demo_geometry / "landmarks/landmarks.npz", tmp_path / "fit.npz",
                       tmp_path / "out", PoseDepthConfig())  # fmt: skip
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------- FAN loader
def test_fan_without_weights_names_the_file(tmp_path, monkeypatch):
    from speech2lip.faces import fan

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        Speech2LipError, match=r"needs 2DFAN4-11f355bf06.pth.tar in .*hub/checkpoints"
    ):
        fan.load("2D")


def test_fan_loads_generated_weights(tmp_path, monkeypatch):
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from speech2lip.faces import fan

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    net = FAN(4)
    torch.save(net.state_dict(), folder / "2DFAN4-11f355bf06.pth.tar")
    torch.save(s3fd().state_dict(), folder / "s3fd-619a316812.pth")
    model = fan.load("2D")
    key = next(iter(net.state_dict()))
    assert torch.equal(model.face_alignment_net.state_dict()[key], net.state_dict()[key])
    frames = [np.zeros((64, 64, 3), np.uint8)] * 2
    with open_landmarker("face_alignment") as marker:
        points, found, faces = landmark_frames(frames, 2, marker)
    assert points.shape == (2, 68, 3) and found.dtype == bool and faces.shape == (2,)


def test_fan_corrupt_weights(tmp_path, monkeypatch):
    from speech2lip.faces import fan

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for name in fan.FILES["2D"]:
        (folder / name).write_bytes(b"not a checkpoint")
    with pytest.raises(Speech2LipError, match="could not load the FAN weights"):
        fan.load("2D")


# ----------------------------------------------------------------------------- BFM loader
def write_bfm(path: Path, v: int = 300, c: int = 5, seed: int = 0) -> dict:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 5e4, (v, 3))  # micrometres, BFM axes (y up, z to the viewer)
    mu[0], mu[1] = [-45e3, 30e3, 0], [45e3, 30e3, 0]  # two "eye corners" 9 cm apart
    data = {"shapeMU": mu.reshape(-1, 1), "shapePC": rng.normal(0, 1, (3 * v, c)),
            "shapeEV": np.linspace(2e3, 1e3, c)[:, None],
            "tl": rng.integers(1, v + 1, (2 * v, 3)).astype(np.float64)}  # fmt: skip
    savemat(path, data)
    return data


def test_bfm_loads_a_generated_file(tmp_path):
    from speech2lip.fit3dmm.bfm import load_bfm, load_bfm_model

    data = write_bfm(tmp_path / "01_MorphableModel.mat")
    bfm = load_bfm(tmp_path / "01_MorphableModel.mat")
    mu = data["shapeMU"].reshape(-1, 3)
    np.testing.assert_allclose(bfm.mean, mu * [1, -1, -1])  # y down, z away from the camera
    assert bfm.basis.shape == (5, 300, 3) and bfm.triangles.min() >= 0
    idx = np.arange(68)
    idx[36], idx[45] = 0, 1
    (tmp_path / "map.txt").write_text("\n".join(map(str, idx)))
    points, mesh, tris = load_bfm_model(tmp_path / "01_MorphableModel.mat", tmp_path / "map.txt",
                                        68, 0.09)  # fmt: skip
    assert abs(np.linalg.norm(points.mean[36] - points.mean[45]) - 0.09) < 1e-9
    assert mesh.mean.shape == (300, 3) and points.basis.shape == (5, 68, 3)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "Basel Face Model file is missing"), (b"junk", "not a readable MATLAB file"),
     ("other", "not a Basel Face Model file")],
)  # fmt: skip
def test_bfm_errors(tmp_path, content, message):
    from scipy.io import savemat

    from speech2lip.fit3dmm.bfm import load_bfm

    path = tmp_path / "01_MorphableModel.mat"
    if content == "other":
        savemat(path, {"something": np.zeros(3)})
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(Speech2LipError, match=message):
        load_bfm(path)


def test_bfm_landmark_map_errors(tmp_path):
    from speech2lip.fit3dmm.bfm import load_bfm_model

    write_bfm(tmp_path / "bfm.mat")
    with pytest.raises(Speech2LipError, match="needs fit3dmm.bfm_landmarks"):
        load_bfm_model(tmp_path / "bfm.mat", "", 68, 0.09)
    (tmp_path / "map.txt").write_text("1\n2\n")
    with pytest.raises(Speech2LipError, match="needs 68 indices"):
        load_bfm_model(tmp_path / "bfm.mat", tmp_path / "map.txt", 68, 0.09)


# ----------------------------------------------------------------------------- real clips
@pytest.mark.media
@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "hdtf_woman_512.mp4",
        "vfr_office.mp4",
        "obama_weekly_address.mp4",
        "portrait_hevc_kitchen.mp4",
    ],
)
def test_real_clip_geometry(tmp_path, name):
    src = media(name)
    resample.run(src, tmp_path / "r", ResampleConfig(size=256))
    summary = landmarks.run(tmp_path / "r/frames.mkv", tmp_path / "r/meta.json", tmp_path / "l",
                            LandmarksConfig())  # fmt: skip
    assert summary["found"] == summary["n_frames"]  # a face in every frame
    fit = fit3dmm.run(tmp_path / "l/landmarks.npz", tmp_path / "r/meta.json", tmp_path / "f",
                      Fit3dmmConfig(iterations=40))  # fmt: skip
    print(
        f"{name} at 256 px: reprojection {fit['error_px']}, focal {fit['focal_px']:.0f} "
        f"({fit['focal_source']})"
    )
    assert fit["error_px"]["mean"] < 1.5


def test_bfm_model_runs_through_fit3dmm_and_pose_depth(tmp_path):
    """The optional BFM path end to end, on a generated face-like BFM and synthetic landmarks."""
    from scipy.io import savemat
    from scipy.spatial import Delaunay

    from speech2lip.fit3dmm.bfm import load_bfm_model
    from speech2lip.geometry import intrinsics, project, rodrigues
    from speech2lip.media import FrameWriter

    rng = np.random.default_rng(5)
    v = 400
    uv = rng.uniform(-1, 1, (v, 2))
    uv[:4] = [[-1, -1], [1, -1], [-1, 1], [1, 1]]
    bulge = np.sqrt(np.clip(1.2 - uv[:, 0] ** 2 - 0.5 * uv[:, 1] ** 2, 0, None))
    mu = np.c_[uv[:, 0] * 7e4, uv[:, 1] * 9e4, 5e4 * bulge]  # micrometres, y up, z to viewer
    idx = rng.choice(np.arange(4, v), 68, replace=False)
    mu[idx[36]], mu[idx[45]] = [-4.5e4, 3e4, 4e4], [4.5e4, 3e4, 4e4]
    tris = Delaunay(uv).simplices + 1
    savemat(tmp_path / "bfm.mat", {"shapeMU": mu.reshape(-1, 1),
                                   "shapePC": rng.normal(0, 1e-3, (3 * v, 4)),
                                   "shapeEV": np.ones((4, 1)),
                                   "tl": tris.astype(float)})  # fmt: skip
    (tmp_path / "map.txt").write_text("\n".join(map(str, idx)))
    points_model, _, _ = load_bfm_model(tmp_path / "bfm.mat", tmp_path / "map.txt", 68, 0.09)

    n, size, focal = 20, 256, 512.0
    rv = rng.normal(0, 0.1, (n, 3))
    tr = np.c_[rng.normal(0, 0.01, (n, 2)), np.full(n, 0.6)]
    cam = np.einsum("nij,pj->npi", rodrigues(rv), points_model.mean) + tr[:, None]
    px = project(cam, intrinsics(focal, size, size))
    z = (cam[..., 2] - cam[..., 2].mean(1, keepdims=True)) * focal / tr[:, 2:3]
    pts = np.concatenate([px, z[..., None]], -1).astype(np.float32)
    np.savez(
        tmp_path / "landmarks.npz",
        points=pts,
        found=np.ones(n, bool),
        interpolated=np.zeros(n, bool),
        box=landmarks.boxes(pts),
        faces=np.ones(n, np.int8),
    )
    meta = {"n_frames": n, "width": size, "height": size, "fps": 25,
            "crop": {"source_size": [size, size], "scale": 1.0},
            "split": {"train": [0, 18], "test": [18, 20]}}  # fmt: skip
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with FrameWriter(tmp_path / "frames.mkv", size, size) as writer:
        for _ in range(n):
            writer.write(np.full((size, size, 3), 128, np.uint8))
    cfg = Fit3dmmConfig(model="bfm", bfm_path=str(tmp_path / "bfm.mat"), focal=focal,
                        bfm_landmarks=str(tmp_path / "map.txt"), iterations=60,
                        smooth_window=1)  # random poses per frame: nothing to smooth  # fmt: skip
    summary = fit3dmm.run(tmp_path / "landmarks.npz", tmp_path / "meta.json", tmp_path / "f", cfg)
    assert summary["error_px"]["max"] < 0.5
    out = pose_depth.run(tmp_path / "frames.mkv", tmp_path / "meta.json",
                         tmp_path / "landmarks.npz", tmp_path / "f/fit.npz", tmp_path / "p",
                         PoseDepthConfig(qa_frames=2))  # fmt: skip
    assert out["face_pixels_canonical"] > 1000


def test_fit3dmm_refuses_a_track_that_jumps_between_faces(demo_geometry, tmp_path):
    """Landmarks that jump to another place every few frames (a track alternating between two
    people) are refused with the numbers and the frames, not fitted with a 20 px error."""
    lm = dict(np.load(demo_geometry / "landmarks/landmarks.npz"))
    jumped = lm["points"].copy()
    other = (np.arange(len(jumped)) // 2) % 2 == 1  # every other pair of frames
    jumped[other, :, 0] += 100  # the other person, 100 px to the right
    np.savez(tmp_path / "landmarks.npz", **{**lm, "points": jumped})
    with pytest.raises(Speech2LipError, match=r"mean error of \d+\.\d px .*worst frames \["):
        fit3dmm.run(tmp_path / "landmarks.npz", demo_geometry / "resample/meta.json",
                    tmp_path / "f", FAST_FIT)  # fmt: skip
    assert not (tmp_path / "f" / "fit.npz").exists()


def test_a_face_too_small_to_track_says_so(demo_video, tmp_path):
    import cv2

    face = list(read_frames(demo_video, 512, 512, limit=75))
    frames = np.zeros((len(face), 256, 256, 3), np.uint8)
    for i, f in enumerate(face):
        frames[i, 100:148, 100:148] = cv2.resize(f, (48, 48), interpolation=cv2.INTER_AREA)
    src = encode(tmp_path / "small.mp4", frames)
    resample.run(src, tmp_path / "r", ResampleConfig(crop="none", size=None))
    message = r"the face is ~\d+ px across, below landmarks.min_face_size = 64, too small"
    with pytest.raises(Speech2LipError, match=message):
        landmarks.run(tmp_path / "r/frames.mkv", tmp_path / "r/meta.json", tmp_path / "l",
                      LandmarksConfig())  # fmt: skip
    assert not (tmp_path / "l" / "landmarks.npz").exists()
