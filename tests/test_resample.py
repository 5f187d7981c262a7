"""Stage `resample`: pure functions, generated clips, bad inputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import encode, index_frame

from speech2lip.config import ResampleConfig
from speech2lip.errors import Speech2LipError
from speech2lip.media import read_frames
from speech2lip.resample import content_box, fit_audio, run, split_indices, square_around

NO_CROP = ResampleConfig(crop="none", size=None)


def outputs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def decode(path: Path, size: tuple[int, int]) -> np.ndarray:
    return np.stack(list(read_frames(path, *size)))


# ----------------------------------------------------------------------------- pure functions
def test_split_is_first_90_percent_train():
    assert split_indices(100, 0.1) == {"train": [0, 90], "test": [90, 100]}
    assert split_indices(51, 0.1) == {"train": [0, 46], "test": [46, 51]}
    assert split_indices(2, 0.1) == {"train": [0, 1], "test": [1, 2]}


def test_fit_audio_offsets_and_lengths():
    audio = np.arange(1000, dtype=np.float32) + 1
    # starts 10 ms late: 160 zeros in front, then padded to 2 frames = 1280 samples
    out, info = fit_audio(audio, 0.010, 2)
    assert len(out) == 1280 and np.all(out[:160] == 0) and out[160] == 1
    assert info["offset_samples"] == 160 and info["tail_samples"] == 1280 - 1160
    # started 5 ms early: head cut; too long: tail trimmed
    out, info = fit_audio(audio, -0.005, 1)
    assert len(out) == 640 and out[0] == 81 and info["tail_samples"] == 640 - 920


def test_content_box_finds_letterbox():
    frame = np.zeros((72, 128, 3), np.uint8)
    frame[4:68, 6:122] = 100
    frame[10, 10] = 0
    assert content_box([frame]) == (6, 4, 116, 64)
    assert content_box([np.zeros((8, 8, 3), np.uint8)]) == (0, 0, 8, 8)


def test_square_around_faces_margin_and_bounds():
    boxes = np.array([[100.0, 100, 50, 60], [110, 100, 50, 60], [np.nan] * 4])
    x, y, w, h = square_around(boxes, 0.5, (0, 0, 1000, 1000))
    assert w == h == 120  # extent 60 + 2 * 0.5 * 60
    assert (x, y) == (70, 70)  # centred on the union (130, 130)
    # near the top-left corner: moved inside; bigger than the bounds: shrunk to fit (even)
    assert square_around(boxes - [90, 90, 0, 0], 0.5, (0, 0, 1000, 1000))[:2] == (0, 0)
    # corners are even (ffmpeg crops 4:2:0 video at even corners): 55 -> 54; 7 -> 6, as 8
    # would leave the bounds at the bottom
    assert square_around(boxes, 3.0, (5, 7, 201, 150)) == (54, 6, 150, 150)


# ----------------------------------------------------------------------------- generated clips
@pytest.mark.parametrize(
    ("fps", "seconds"), [("25", 2.4), ("30", 2.0), ("30000/1001", 2.5), ("50", 2.2), ("12", 3.0)]
)
def test_frame_rates_become_25fps_with_matching_audio(tmp_path, fps, seconds):
    rate = float(eval(fps))  # noqa: S307 - test literal
    n_src = int(round(seconds * rate))
    frames = np.stack([index_frame(k, 64, 48) for k in range(n_src)])
    src = encode(tmp_path / "src.mp4", frames, fps=fps)
    meta = run(src, tmp_path / "out", NO_CROP)
    expected = int(round(n_src / rate * 25))
    assert abs(meta["n_frames"] - expected) <= 1
    assert meta["fps"] == 25 and (meta["width"], meta["height"]) == (64, 48)
    out = decode(tmp_path / "out" / "frames.mkv", (64, 48))
    assert len(out) == meta["n_frames"]
    # each output frame i (t = i/25) shows the source frame nearest in time
    shown = np.round(out[:, 40, 60, 0].astype(float) / 8).astype(int)
    want = np.round(np.arange(len(out)) / 25 * rate).astype(int) % 32
    assert np.mean(np.abs(shown - want) <= 1) > 0.95
    audio, sr = sf.read(tmp_path / "out" / "audio.wav", dtype="float32")
    assert sr == 16000 and audio.ndim == 1
    assert len(audio) == meta["n_frames"] * 640 == meta["audio"]["n_samples"]
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 3  # the 440 Hz tone survived
    n = meta["n_frames"]
    assert meta["split"] == split_indices(n, 0.1)
    assert json.loads((tmp_path / "out" / "meta.json").read_text()) == meta


def test_frames_are_lossless(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (60, 40, 56, 3), dtype=np.uint8)
    src = encode(tmp_path / "src.mkv", frames, codec="ffv1")
    meta = run(src, tmp_path / "out", NO_CROP)
    assert meta["n_frames"] == 60
    assert np.array_equal(decode(tmp_path / "out" / "frames.mkv", (56, 40)), frames)


def test_variable_frame_rate_is_converted(tmp_path):
    frames = np.stack([index_frame(k, 64, 64) for k in range(90)])  # 3 s at 30 fps
    src = tmp_path / "cfr.mp4"
    encode(src, frames, fps="30")
    vfr = tmp_path / "vfr.mp4"
    keep = "not(between(n\\,20\\,40))*not(mod(n\\,2))+gt(n\\,60)"  # irregular gaps
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", f"select='{keep}'",
         "-fps_mode", "vfr", "-c:a", "copy", str(vfr)], check=True,
    )  # fmt: skip
    meta = run(vfr, tmp_path / "out", NO_CROP)
    assert meta["source"]["variable_frame_rate"]
    assert abs(meta["n_frames"] - 75) <= 1
    assert meta["audio"]["n_samples"] == meta["n_frames"] * 640


def test_crop_box_and_resize(tmp_path):
    frames = np.zeros((50, 120, 160, 3), np.uint8)
    frames[:, 20:60, 30:70] = 200  # a bright square at x 30..70, y 20..60
    src = encode(tmp_path / "src.mp4", frames)
    meta = run(src, tmp_path / "out", ResampleConfig(crop=(30, 20, 40, 40), size=64))
    assert meta["crop"] == {"mode": "explicit", "box": [30, 20, 40, 40], "source_size": [160, 120],
                            "scale": [1.6, 1.6]}  # fmt: skip
    out = decode(tmp_path / "out" / "frames.mkv", (64, 64))
    assert out.shape == (50, 64, 64, 3) and out[:, 8:56, 8:56].min() > 180


def marker_video(path, width: int, height: int, centre: tuple[int, int]):
    """A short clip, black but for a bright 8 x 8 square at `centre` (source pixels)."""
    frames = np.zeros((60, height, width, 3), np.uint8)
    cx, cy = centre
    frames[:, cy - 4 : cy + 4, cx - 4 : cx + 4] = 255
    return encode(path, frames)


def centroid(image: np.ndarray) -> np.ndarray:
    """The bright area's centre (x, y) in pixel-centre coordinates (pixel i covers i..i+1)."""
    grey = image.astype(np.float64).mean(axis=2)
    weight = np.where(grey > 60, grey, 0)
    ys, xs = np.indices(grey.shape)
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum() + 0.5


@pytest.mark.parametrize(
    ("width", "height", "crop", "centre"),
    [(320, 180, "none", (200, 120)), (180, 320, "none", (70, 230)),  # 16:9 and 9:16
     (320, 180, (16, 9, 288, 162), (150, 90)), (180, 320, (10, 40, 150, 240), (90, 200))],
)  # fmt: skip
def test_aspect_ratio_is_kept_and_paste_back_lands_on_the_source(tmp_path, width, height,
                                                                  crop, centre):  # fmt: skip
    """The README's non-square box and crop: none on 16:9 and 9:16 sources: the frames keep
    their shape, the scale is recorded per axis, and a mouth box found in the resampled frame
    pastes back onto the same spot of the source (within 1 px)."""
    from speech2lip.renderer.frames import paste_back

    src = marker_video(tmp_path / "src.mp4", width, height, centre)
    meta = run(src, tmp_path / "out", ResampleConfig(crop=crop, size=128))
    box = meta["crop"]["box"]
    assert max(meta["width"], meta["height"]) == 128
    assert meta["width"] / meta["height"] == pytest.approx(box[2] / box[3], rel=0.02)
    sx, sy = meta["crop"]["scale"]
    assert (sx, sy) == (meta["width"] / box[2], meta["height"] / box[3])
    frame = decode(tmp_path / "out" / "frames.mkv", (meta["width"], meta["height"]))[10]
    found = centroid(frame)  # where the resampled frame shows the marker
    origin = (int(found[0]) - 8, int(found[1]) - 8)
    patch = frame[origin[1] : origin[1] + 16, origin[0] : origin[0] + 16]
    pasted = paste_back(np.zeros((height, width, 3), np.uint8), patch, origin, meta["crop"])
    assert np.abs(centroid(pasted) - np.array(centre)).max() <= 1.0


def test_auto_crop_is_a_square_around_the_face(tmp_path, demo_video):
    # put the demo face into a wide letterboxed frame
    face = decode(demo_video, (512, 512))[:, ::4, ::4]  # 128x128
    frames = np.zeros((len(face), 180, 320, 3), np.uint8)
    frames[10:170] = 90
    frames[:, 30:158, 150:278] = face
    src = encode(tmp_path / "wide.mp4", frames)
    meta = run(src, tmp_path / "out", ResampleConfig(size=96))
    x, y, w, h = meta["crop"]["box"]
    assert meta["crop"]["mode"] == "auto" and w == h and w % 2 == 0
    assert 150 <= x + w / 2 <= 278 and 30 <= y + h / 2 <= 158  # centred on the face
    assert y >= 10 and y + h <= 170  # kept out of the black bars
    assert (meta["width"], meta["height"]) == (96, 96)


# ----------------------------------------------------------------------------- bad inputs
def check_fails(src: Path, out: Path, cfg: ResampleConfig, *texts: str) -> None:
    with pytest.raises(Speech2LipError) as err:
        run(src, out, cfg)
    message = str(err.value)
    assert "\n" not in message
    for text in texts:
        assert text in message
    assert outputs(out) == []  # nothing finished-looking, nothing half-written


def test_missing_file(tmp_path):
    check_fails(tmp_path / "nope.mp4", tmp_path / "out", NO_CROP, "file not found", "nope.mp4")


def test_not_a_media_file(tmp_path):
    src = tmp_path / "notes.mp4"
    src.write_text("this is not a video\n" * 50)
    check_fails(src, tmp_path / "out", NO_CROP, "not a readable media file", "notes.mp4")


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_file(tmp_path, faststart):
    frames = np.random.default_rng(1).integers(0, 256, (100, 64, 64, 3), dtype=np.uint8)
    extra = ["-movflags", "+faststart"] if faststart else []
    src = encode(tmp_path / "full.mp4", frames, extra=extra)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(Speech2LipError) as err:
        run(cut, tmp_path / "out", NO_CROP)
    assert "cut.mp4" in str(err.value)
    assert any(w in str(err.value) for w in ("truncated", "not a readable media file", "corrupt"))
    assert outputs(tmp_path / "out") == []


def test_no_video_stream(tmp_path):
    src = tmp_path / "speech.wav"
    sf.write(src, np.zeros(48000, np.float32), 16000)
    check_fails(src, tmp_path / "out", NO_CROP, "has no video stream", "speech.wav")


def test_no_audio_stream(tmp_path):
    src = encode(tmp_path / "silent.mp4", np.zeros((75, 32, 32, 3), np.uint8), audio_hz=None)
    check_fails(src, tmp_path / "out", NO_CROP, "has no audio stream", "silent.mp4")


def test_too_short(tmp_path):
    src = encode(tmp_path / "short.mp4", np.zeros((30, 32, 32, 3), np.uint8))
    check_fails(src, tmp_path / "out", NO_CROP, "shorter than resample.min_duration", "short.mp4")


def test_no_face_for_auto_crop(tmp_path):
    frames = np.random.default_rng(2).integers(0, 256, (60, 96, 96, 3), dtype=np.uint8)
    src = encode(tmp_path / "noise.mp4", frames)
    check_fails(src, tmp_path / "out", ResampleConfig(), "no face found", "noise.mp4")


def test_crop_box_outside_frame(tmp_path):
    src = encode(tmp_path / "small.mp4", np.zeros((60, 48, 64, 3), np.uint8))
    check_fails(
        src, tmp_path / "out", ResampleConfig(crop=(40, 0, 40, 40)), "does not fit", "64x48"
    )


def test_odd_sizes_are_made_even(tmp_path):
    frames = np.full((55, 75, 99, 3), 128, np.uint8)
    src = encode(tmp_path / "odd.mkv", frames, codec="ffv1")
    meta = run(src, tmp_path / "out", NO_CROP)
    assert (meta["width"], meta["height"]) == (98, 74)


def test_stereo_48k_becomes_16k_mono(tmp_path):
    src = encode(tmp_path / "a.mkv", np.zeros((60, 32, 32, 3), np.uint8), codec="ffv1",
                 audio_hz=48000, audio_channels=2, tone_hz=1000)  # fmt: skip
    run(src, tmp_path / "out", NO_CROP)
    audio, sr = sf.read(tmp_path / "out" / "audio.wav")
    assert sr == 16000 and audio.ndim == 1 and len(audio) == 60 * 640
    assert abs(np.argmax(np.abs(np.fft.rfft(audio))) * sr / len(audio) - 1000) < 5


@pytest.mark.parametrize("layout", ["5.1", "7.1"])
def test_surround_dialogue_keeps_its_level(tmp_path, layout):
    """Film audio carries dialogue in the centre channel: the mono mix keeps it at the level a
    stereo copy of the same speech has (ffmpeg's normalised -ac 1 left it ~10 dB quieter)."""
    from speech2lip.media import read_audio

    silent = {"5.1": "FL|FR|LFE|BL|BR", "7.1": "FL|FR|LFE|BL|BR|SL|SR"}[layout].split("|")
    pan = f"pan={layout}|FC=c0|" + "|".join(f"{c}=0*c0" for c in silent)
    tone = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=300:duration=2"]
    subprocess.run([*tone, "-af", pan, str(tmp_path / "surround.wav")], check=True)
    subprocess.run([*tone, "-af", "pan=stereo|FL=c0|FR=c0", str(tmp_path / "stereo.wav")],
                   check=True)  # fmt: skip
    rms = {name: float(np.sqrt(np.mean(read_audio(tmp_path / f"{name}.wav") ** 2)))
           for name in ("surround", "stereo")}  # fmt: skip
    assert 20 * np.log10(rms["surround"] / rms["stereo"]) == pytest.approx(0, abs=1.0)


@pytest.mark.parametrize("mode", ["auto", "never"])
def test_noisy_source_audio_is_denoised(tmp_path, mode):
    """A source whose speech is noisy (white noise at 5 dB SNR) is written denoised under
    `auto` (meta.json says so) and as it is under `never`."""
    import shutil

    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    said = tmp_path / "said.wav"
    subprocess.run(["espeak-ng", "-w", str(said), "Peter picked a map of the bay."], check=True)
    x, sr = sf.read(said, dtype="float32")
    clean = np.zeros(16000 * 3, np.float32)
    speech = resample_poly(x, 16000, sr)[: len(clean) - 8000].astype(np.float32)
    clean[4000 : 4000 + len(speech)] = speech / np.abs(speech).max() * 0.5
    power = np.mean(clean[np.abs(clean) > 0.01] ** 2)
    noise = np.random.default_rng(0).normal(0, np.sqrt(power / 10**0.5), len(clean))
    sf.write(tmp_path / "noisy.wav", (clean + noise).astype(np.float32), 16000)
    frames = np.stack([index_frame(k, 32, 32) for k in range(75)])
    silent = encode(tmp_path / "v.mkv", frames, codec="ffv1", audio_hz=None)
    src = tmp_path / "noisy.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(silent), "-i",
                    str(tmp_path / "noisy.wav"), "-c:v", "copy", "-c:a", "pcm_s16le",
                    str(src)], check=True)  # fmt: skip
    meta = run(src, tmp_path / "out", ResampleConfig(crop="none", size=None, denoise=mode))
    audio, _ = sf.read(tmp_path / "out" / "audio.wav", dtype="float32")
    shift = meta["av_offset"]["applied"] * 640  # 0: no face to find an offset from
    assert shift == 0 and len(audio) == len(clean)
    left = 10 * np.log10(np.sum((audio - clean) ** 2) / np.sum(noise**2))  # noise kept, dB
    done = meta["audio"]["denoise"]
    if mode == "auto":
        assert done["denoised"] and done["speech_snr_db"] < 20
        assert left < -6  # most of the noise is gone
    else:
        assert done == {"mode": "never", "speech_snr_db": None, "denoised": False}
        assert left == pytest.approx(0, abs=0.5)  # the noise as it was (16-bit PCM)
