"""Shared fixtures: tiny generated clips (numpy frames encoded by ffmpeg) and the demo video."""

from __future__ import annotations

import os
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT.parent / "shared" / "media"


def _fast_fit():
    from speech2lip.config import Fit3dmmConfig

    return Fit3dmmConfig(iterations=30, n_expression=8)


FAST_FIT = _fast_fit()


def index_frame(k: int, width: int, height: int) -> np.ndarray:
    """A frame whose grey level encodes `k` (robust to lossy coding): blocks of 8*(k % 32)."""
    img = np.full((height, width, 3), 8 * (k % 32), np.uint8)
    img[: height // 4, : width // 4] = 255  # a fixed white corner
    return img


def encode(
    path: Path,
    frames: np.ndarray,
    fps: str = "25",
    codec: str = "libx264",
    audio_hz: int | None = 44100,
    audio_channels: int = 2,
    extra: list[str] | None = None,
    tone_hz: float = 440.0,
) -> Path:
    """Encode `(N, H, W, 3) uint8` frames at `fps` (ffmpeg rate string) with an optional tone."""
    n, h, w, _ = frames.shape
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    args += ["-s", f"{w}x{h}", "-r", fps, "-i", "-"]
    if audio_hz:
        dur = n / float(Fraction(fps))
        args += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate={audio_hz}:duration={dur}",
        ]
        args += ["-ac", str(audio_channels)]
    if codec == "libx264":
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-crf", "10"]
    else:
        args += ["-c:v", codec]
    if audio_hz:
        args += ["-c:a", "aac" if path.suffix in (".mp4", ".mov") else "pcm_s16le"]
    args += (extra or []) + [str(path)]
    subprocess.run(args, input=frames.tobytes(), check=True)
    return path


@pytest.fixture(scope="session")
def demo_video(tmp_path_factory) -> Path:
    """A 3-second demo subject (made once per test session)."""
    from speech2lip.config import SampleConfig
    from speech2lip.sample import run

    out = tmp_path_factory.mktemp("demo") / "video.mp4"
    run(SampleConfig(duration=3, seed=3), out, out.with_suffix(".npz"))
    return out


@pytest.fixture(scope="session")
def demo_geometry(tmp_path_factory, demo_video) -> Path:
    """The 3-second demo through resample (256 px), landmarks, fit3dmm and pose_depth."""
    from speech2lip import fit3dmm, landmarks, pose_depth, resample
    from speech2lip.config import LandmarksConfig, PoseDepthConfig, ResampleConfig

    base = tmp_path_factory.mktemp("geometry")
    resample.run(demo_video, base / "resample", ResampleConfig(size=256))
    landmarks.run(base / "resample/frames.mkv", base / "resample/meta.json", base / "landmarks",
                  LandmarksConfig())  # fmt: skip
    fit3dmm.run(base / "landmarks/landmarks.npz", base / "resample/meta.json", base / "fit3dmm",
                FAST_FIT)  # fmt: skip
    pose_depth.run(base / "resample/frames.mkv", base / "resample/meta.json",
                   base / "landmarks/landmarks.npz", base / "fit3dmm/fit.npz", base / "pose_depth",
                   PoseDepthConfig(qa_frames=4))  # fmt: skip
    return base


@pytest.fixture(scope="session")
def demo_warp(demo_geometry, tmp_path_factory) -> Path:
    """The 3-second demo's `warp` output (shards of 32 frames, 2 processes)."""
    from speech2lip import warp
    from speech2lip.config import WarpConfig

    out = tmp_path_factory.mktemp("warp")
    base = demo_geometry
    warp.run(base / "resample/frames.mkv", base / "resample/meta.json",
             base / "resample/audio.wav", base / "landmarks/landmarks.npz",
             base / "pose_depth/geometry.h5", out, WarpConfig(shard_frames=32, qa_frames=4),
             threads=2)  # fmt: skip
    return out


def media(name: str) -> Path:
    """A real clip from ../shared/media, or skip the test when the folder is absent."""
    path = MEDIA / name
    if not path.is_file():
        pytest.skip(f"real media not available: {path}")
    return path


TINY_SIZES = dict(
    lips_width=16,
    lips_layers=2,
    lips_skip=0,
    uv_freqs=2,
    audio_dim=8,
    audio_radius=1,
    blend_channels=(4, 8),
    shape_dim=3,  # lip-shape guidance, as the default preset
    # the paper's: drawn on the mean lips, a 24-step model barely leaves them (its last layer
    # starts at zero), and the tests using it need lips that move with the audio
    # (tests/test_lips_base.py tests the base)
    lips_base="none",
)
TINY_TRAIN = dict(steps=24, batch_frames=4, checkpoint_every=24, log_every=12, mouth_start=0,
                  lips_pixels=256, mouth_frames=2, sync_weight=0.0)  # fmt: skip


@pytest.fixture(scope="session")
def demo_model(demo_warp, tmp_path_factory) -> Path:
    """A tiny model trained for a few steps on the 3-second demo: `model.pt`."""
    from speech2lip.config import ModelSizes, TrainConfig
    from speech2lip.train import run

    out = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(**TINY_TRAIN, model=ModelSizes(**TINY_SIZES))
    run(demo_warp / "index.json", out, cfg, threads=1, resume="no",
        device="cpu")  # fmt: skip
    return out / "model.pt"


def results_folder(base: Path, model: Path, geometry: Path, warp: Path) -> Path:
    """`base` laid out as the pipeline's `results/<subject>` (links to the demo's outputs):
    what live mode reads next to `train/model.pt`."""
    (base / "train").mkdir(parents=True)
    (base / "resample").symlink_to(geometry / "resample")
    (base / "warp").symlink_to(warp)
    (base / "train/model.pt").symlink_to(model)
    return base
