"""The render stage: background frames, streaming into ffmpeg, driving audio, pose control."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import encode

from speech2lip.config import RenderConfig
from speech2lip.errors import Speech2LipError
from speech2lip.media import probe, read_frames
from speech2lip.render import run
from speech2lip.renderer import check_driving_audio, load_driving_audio
from speech2lip.renderer.frames import FrameSource, paste_back, pingpong


def test_pingpong_plays_forwards_then_backwards():
    assert pingpong(10, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert pingpong(5, 4, start=2).tolist() == [2, 3, 2, 1, 0]
    assert pingpong(3, 1).tolist() == [0, 0, 0]
    assert np.abs(np.diff(pingpong(500, 37, 11))).max() == 1  # never jumps
    with pytest.raises(Speech2LipError, match="start_frame 9"):
        pingpong(5, 4, start=9)


def test_frame_source_random_access_matches_sequential_decode(demo_geometry):
    frames = demo_geometry / "resample/frames.mkv"
    meta = json.loads((demo_geometry / "resample/meta.json").read_text())
    w, h, n = meta["width"], meta["height"], meta["n_frames"]
    seq = list(read_frames(frames, w, h))
    src = FrameSource(frames, w, h, n, chunk=8)
    order = list(range(20, 40)) + list(range(39, 5, -1)) + [70, 3, 71]  # ping-pong + jumps
    for i in order:
        assert np.array_equal(src[i], seq[i]), i
        assert len(src._frames) <= 8  # bounded memory
    assert src.decodes < len(order) / 3  # whole chunks, not frame by frame
    with pytest.raises(IndexError):
        src[n]


def test_paste_back_maps_pixels_through_the_crop():
    source = np.zeros((100, 120, 3), np.uint8)
    patch = np.full((10, 20, 3), 200, np.uint8)
    crop = {"box": [20, 10, 80, 80], "scale": 0.5}  # resampled frame = 40x40
    out = paste_back(source.copy(), patch, (4, 6), crop)
    ys, xs = np.nonzero(out[..., 0])
    # resampled (4..24, 6..16) -> source x 20 + 8 .. 20 + 48, y 10 + 12 .. 10 + 32
    assert xs.min() >= 27 and xs.max() <= 68 and ys.min() >= 21 and ys.max() <= 42
    assert out[30, 40, 0] == 200 and out[5, 5, 0] == 0  # inside full, outside untouched
    same = paste_back(source.copy(), patch, (4, 6), {"box": [0, 0, 120, 100], "scale": 1.0})
    assert np.array_equal(same[7:15, 5:23], patch[1:-1, 1:-1])  # scale 1: exact inside the seam


def _probe_counts(path):
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,codec_name,nb_read_frames,width,height,duration",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    return {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}  # fmt: skip


def _inputs(demo_geometry, demo_warp):
    r = demo_geometry / "resample"
    return (demo_warp / "index.json", r / "frames.mkv", r / "meta.json", r / "audio.wav")


def test_render_test_split_is_a_playable_mp4_with_audio(demo_model, demo_geometry, demo_warp,
                                                        tmp_path):  # fmt: skip
    index, frames, meta_path, audio = _inputs(demo_geometry, demo_warp)
    meta = json.loads(meta_path.read_text())
    start, stop = meta["split"]["test"]
    out = tmp_path / "video.mp4"
    (tmp_path / ".video.tmp-999999.mp4").write_bytes(b"half a video")  # a killed render's
    (tmp_path / ".render-video-999999-abc").mkdir()
    (tmp_path / ".render-video-999999-abc" / "audio.wav").write_bytes(b"x")
    (tmp_path / "other").mkdir()  # another output's temporaries are not ours to remove
    (tmp_path / "other" / ".next.tmp-999999.mp4").write_bytes(b"x")
    stats = run(demo_model, index, frames, meta_path, audio, out,
                RenderConfig(output_size="cropped"), device="cpu")  # fmt: skip
    assert (tmp_path / "other" / ".next.tmp-999999.mp4").is_file()
    shutil.rmtree(tmp_path / "other")
    streams = _probe_counts(out)
    assert int(streams["video"]["nb_read_frames"]) == stop - start == stats["frames"]
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert float(streams["video"]["duration"]) == pytest.approx((stop - start) / 25, abs=0.05)
    assert float(streams["audio"]["duration"]) == pytest.approx((stop - start) / 25, abs=0.08)
    assert (int(streams["video"]["width"]), int(streams["video"]["height"])) == (
        meta["width"], meta["height"])  # fmt: skip
    assert not list(tmp_path.glob(".*"))  # no temporary files left
    # Outside the mouth boxes the frames are the background frames (up to H.264's error).
    got = np.stack(list(read_frames(out, meta["width"], meta["height"])))
    gt = np.stack(list(read_frames(frames, meta["width"], meta["height"])))[start:stop]
    from speech2lip.data.shards import WarpData

    data = WarpData(index, fields=["mouth_origin"])
    ex, ey, ew, eh = data.index["extended_box"]
    outside = np.ones(got.shape[:3], bool)
    for k, (x, y) in enumerate(data.read_field("mouth_origin", np.arange(start, stop))):
        outside[k, y : y + eh, x : x + ew] = False
    from speech2lip.media import FrameWriter

    with FrameWriter(tmp_path / "gt.mp4", meta["width"], meta["height"], codec="h264") as w:
        for frame in gt:
            w.write(frame)
    coded = np.stack(list(read_frames(tmp_path / "gt.mp4", meta["width"], meta["height"])))
    codec_error = np.abs(coded.astype(int) - gt)[outside].mean()
    assert np.abs(got.astype(int) - gt)[outside].mean() < codec_error + 0.3


def test_driven_render_pingpongs_and_pastes_back_into_the_source(demo_model, demo_geometry,
                                                                 demo_warp, demo_video,
                                                                 tmp_path):  # fmt: skip
    index, frames, meta_path, audio = _inputs(demo_geometry, demo_warp)
    meta = json.loads(meta_path.read_text())
    n = meta["n_frames"]
    # 48 kHz stereo FLAC, longer than the video: the background must ping-pong
    t = np.arange(int(48000 * (n / 25 + 1.3))) / 48000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    drive = tmp_path / "speech.flac"
    sf.write(drive, np.stack([tone, tone], 1), 48000)
    out = tmp_path / "driven.mp4"
    stats = run(demo_model, index, frames, meta_path, audio, out, RenderConfig(start_frame=5),
                driving=str(drive), source=str(demo_video), device="cpu")  # fmt: skip
    assert stats["frames"] == round((n / 25 + 1.3) * 25) and stats["pasted_back"]
    info = probe(out)
    assert (info.width, info.height) == tuple(meta["crop"]["source_size"])  # pasted back
    assert _probe_counts(out)["audio"]["codec_name"] == "aac"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("missing", "not found"),
        ("video_only", "no audio stream"),
        ("short", "less than"),
        ("garbage", "demo"),
    ],
)
def test_bad_driving_audio_is_a_clear_error(tmp_path, make, message):
    path = tmp_path / f"{make}.wav"
    if make == "video_only":
        path = encode(tmp_path / "v.mp4", np.zeros((10, 32, 32, 3), np.uint8), audio_hz=None)
    elif make == "short":
        sf.write(path, 0.5 * np.ones(1000), 16000)
    elif make == "garbage":
        path.write_bytes(b"demo" * 100)
        message = str(path)
    with pytest.raises(Speech2LipError, match=message):
        load_driving_audio(path)


def test_driving_audio_is_padded_to_whole_frames():
    wav = check_driving_audio(0.1 * np.ones(16000 + 100, np.float32), "x.wav")
    assert len(wav) == 26 * 640 and wav[-1] == 0


def _peak_rss_mb(code: str) -> float:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.strip().splitlines()[-1])


def test_streaming_memory_does_not_grow_with_the_length(demo_model, demo_geometry, demo_warp,
                                                        tmp_path):  # fmt: skip
    """Render 2 s and 24 s of driving audio in fresh processes: the peak memory must not grow
    by what holding the extra 550 frames (256x256x3 = 108 MB) would cost."""
    index, frames, meta_path, audio = _inputs(demo_geometry, demo_warp)
    peaks = []
    for seconds in (2, 24):
        drive = tmp_path / f"d{seconds}.wav"
        t = np.arange(16000 * seconds) / 16000
        sf.write(drive, 0.3 * np.sin(2 * np.pi * 180 * t), 16000)
        code = (
            "import resource; from speech2lip.render import run; "
            "from speech2lip.config import RenderConfig; "
            f"run({str(demo_model)!r}, {str(index)!r}, {str(frames)!r}, {str(meta_path)!r}, "
            f"{str(audio)!r}, {str(tmp_path / f'o{seconds}.mp4')!r}, "
            "RenderConfig(output_size='cropped', encoder_preset='ultrafast'), "
            f"driving={str(drive)!r}, device='cpu'); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
        )
        peaks.append(_peak_rss_mb(code))
    assert peaks[1] - peaks[0] < 40, peaks
    assert resource  # (the child measures itself)


def _posed_frames(model_path, demo_warp, demo_geometry, offsets_deg, ids, rest=False):
    """Frames `ids` rendered over themselves normally and through pose control with
    `offsets_deg`, and the backgrounds; `rest`: every frame at the rest mouth."""
    from speech2lip.data.batches import read_audio
    from speech2lip.data.shards import WarpData
    from speech2lip.models.checkpoint import load_model
    from speech2lip.renderer import FIELDS, Renderer, mel_contexts, paste
    from speech2lip.renderer.pose import PoseControl

    model = load_model(model_path)
    data = WarpData(demo_warp / "index.json", fields=FIELDS + ["mel"])
    n = len(data)
    meta = json.loads((demo_geometry / "resample/meta.json").read_text())
    frames = FrameSource(demo_geometry / "resample/frames.mkv", meta["width"], meta["height"], n)
    renderer = Renderer(model, data, RenderConfig(), "cpu")
    heard = read_audio(data, np.arange(n), model.sizes.features)
    ctx = mel_contexts(heard, model.sizes.audio_radius)[ids]
    if rest:
        renderer.set_rest(data.split_ids("train"), np.ones(n, np.float32))
    mouths, origins = renderer.mouths(ctx, ids, out_ids=ids)
    normal = [paste(frames[b], m, o) for b, m, o in zip(ids, mouths, origins, strict=True)]
    pose = PoseControl(model, np.tile(offsets_deg, (n, 1)), data.canonical["canonical_pose"])
    patches = pose.render(renderer, ctx, ids, ids, frames)
    posed = [paste(frames[b], p, o) for b, (p, o) in zip(ids, patches, strict=True)]
    return np.stack(normal), np.stack(posed), np.stack([frames[b] for b in ids])


def test_pose_offset_zero_reproduces_the_normal_render(demo_model, demo_warp, demo_geometry):
    from speech2lip.evaluate.metrics import psnr

    ids = np.array([12, 50])
    normal, posed, _ = _posed_frames(demo_model, demo_warp, demo_geometry, [0, 0, 0], ids)
    for a, b in zip(normal, posed, strict=True):
        assert psnr(b, a) > 40  # through the warp (Newton residuals < 0.05 px) and back


def test_pose_control_rests_the_mouth_as_the_normal_render_does(demo_model, demo_warp,
                                                                 demo_geometry):  # fmt: skip
    """In silent spans the re-posed path draws the rest mouth's real lips too."""
    from speech2lip.evaluate.metrics import psnr

    ids = np.array([12, 50])
    free, _, _ = _posed_frames(demo_model, demo_warp, demo_geometry, [0, 0, 0], ids)
    normal, posed, _ = _posed_frames(demo_model, demo_warp, demo_geometry, [0, 0, 0], ids,
                                     rest=True)  # fmt: skip
    assert np.abs(normal.astype(int) - free).max() > 10  # at rest: other lips than the audio's
    for a, b in zip(normal, posed, strict=True):
        assert psnr(b, a) > 40  # ... and the same through the pose path


def test_a_yaw_offset_turns_the_head_and_leaves_no_holes(demo_model, demo_warp, demo_geometry):
    ids = np.array([12])
    normal, posed, background = _posed_frames(demo_model, demo_warp, demo_geometry,
                                              [12, 0, 0], ids)  # fmt: skip
    changed = np.abs(posed.astype(int) - normal).max(axis=-1)[0] > 20
    assert changed.mean() > 0.01  # the head moved
    ys, xs = np.nonzero(changed)
    h, w = changed.shape
    assert xs.min() > 0.1 * w and xs.max() < 0.9 * w  # ... and only the head
    assert (posed.max(axis=-1) > 8).mean() >= (background.max(axis=-1) > 8).mean() - 0.002


def test_pose_schedule_and_pose_file(tmp_path):
    from speech2lip.renderer.pose import pose_schedule, rotation

    cfg = RenderConfig(pose_offset=(5, 0, 0), pose_sweep=(0, 10, 0), pose_period=2.0)
    offsets = pose_schedule(51, cfg)
    assert offsets.shape == (51, 3) and np.allclose(offsets[:, 0], 5)
    assert offsets[12, 1] == pytest.approx(10 * np.sin(2 * np.pi * 12 / 50))  # t = 0.48 s
    csv_path = tmp_path / "pose.csv"
    csv_path.write_text("yaw,pitch,roll\n1,2,3\n4,5,6\n")
    rows = pose_schedule(4, RenderConfig(pose_file=str(csv_path)))
    assert rows.tolist() == [[1, 2, 3], [4, 5, 6], [4, 5, 6], [4, 5, 6]]  # the last row holds
    csv_path.write_text("a,b\n1,2\n")
    with pytest.raises(Speech2LipError, match="yaw,pitch,roll"):
        pose_schedule(4, RenderConfig(pose_file=str(csv_path)))
    with pytest.raises(Speech2LipError, match="not found"):
        pose_schedule(4, RenderConfig(pose_file=str(tmp_path / "none.csv")))
    r = rotation(30, 0, 0)[:3, :3]  # yaw turns about the (downward) y axis
    assert np.allclose(r @ [0, 1, 0], [0, 1, 0]) and np.allclose(r @ r.T, np.eye(3))
