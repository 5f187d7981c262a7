"""Stage `resample`: any source video -> constant 25 fps lossless frames + 16 kHz mono audio.

Outputs in the stage folder (`results/{subject}/resample/`):

- `frames.mkv`: FFV1 (lossless RGB), exactly the pixels every later stage sees;
- `audio.wav`: 16 kHz mono PCM, exactly `n_frames * 640` samples (one 40 ms hop per frame),
  denoised when its speech is noisy (`resample.denoise`, `speech2lip.data.denoise`: every later
  stage learns from it, so a noisy source would teach the mouth to follow noisy features), and
  moved by the source's audio/video offset when one is found (`resample.av_offset`,
  `speech2lip.data.avsync`);
- `meta.json`: frame count, size, fps, duration, the source probe, the crop box (source pixels,
  rotation applied) and the train/test split (first 90 % / last 10 % of frames).

Conventions: a box is `[x, y, width, height]` in pixels, x right, y down, origin top-left.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speech2lip import __version__
from speech2lip.atomic import atomic_path
from speech2lip.config import ResampleConfig
from speech2lip.data import avsync
from speech2lip.errors import Speech2LipError
from speech2lip.media import (
    FPS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    FrameWriter,
    Probe,
    output_size,
    probe,
    read_audio,
    read_frames,
    scale_filters,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- pure functions
def split_indices(n_frames: int, test_fraction: float) -> dict[str, list[int]]:
    """First (1 - test_fraction) of the frames train, the rest test: `{split: [start, stop)}`."""
    if n_frames < 2:
        raise ValueError("need at least 2 frames to split")
    n_test = min(max(1, int(round(n_frames * test_fraction))), n_frames - 1)
    return {"train": [0, n_frames - n_test], "test": [n_frames - n_test, n_frames]}


def content_box(frames: Sequence[np.ndarray], threshold: int = 24) -> tuple[int, int, int, int]:
    """The picture area inside black letterbox/pillarbox bars: `[x, y, w, h]`.

    A border row/column is a bar when it is darker than `threshold` in every sampled frame.
    """
    peak = np.max(np.stack([f.max(axis=2) for f in frames]), axis=0)  # (H, W)
    rows = np.flatnonzero(peak.max(axis=1) >= threshold)
    cols = np.flatnonzero(peak.max(axis=0) >= threshold)
    h, w = peak.shape
    if len(rows) == 0 or len(cols) == 0:
        return 0, 0, w, h
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def square_around(
    boxes: np.ndarray, margin: float, bounds: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """One even-sized square covering every face box plus `margin` x face size on each side,
    moved (and if need be shrunk) to lie inside `bounds` = `[x, y, w, h]`.

    `boxes`: `(K, 4)` face boxes `[x, y, w, h]`, NaN rows ignored.
    """
    good = boxes[~np.isnan(boxes).any(axis=1)]
    if len(good) == 0:
        raise ValueError("no face boxes")
    x0, y0 = good[:, 0].min(), good[:, 1].min()
    x1, y1 = (good[:, 0] + good[:, 2]).max(), (good[:, 1] + good[:, 3]).max()
    face = float(np.median(np.maximum(good[:, 2], good[:, 3])))
    side = max(x1 - x0, y1 - y0) + 2 * margin * face
    bx, by, bw, bh = bounds
    side = int(min(side, bw, bh)) // 2 * 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x = _even_within(round(np.clip(cx - side / 2, bx, bx + bw - side)), bx, bx + bw - side)
    y = _even_within(round(np.clip(cy - side / 2, by, by + bh - side)), by, by + bh - side)
    return x, y, side, side


def _even_within(value: int, lo: int, hi: int) -> int:
    """`value` made even (see `check_box`): down, or up when down would leave [lo, hi]."""
    even = int(value) // 2 * 2
    return even + 2 if even < lo and even + 2 <= hi else even


def check_box(
    box: Sequence[int], width: int, height: int, source: str
) -> tuple[int, int, int, int]:
    """Validate an explicit crop box against the frame size; round its corner and size down to
    even (ffmpeg's crop of 4:2:0 video moves an odd corner to even by itself, so the box
    recorded in meta.json would be a pixel off from the frames)."""
    x, y, w, h = (int(v) for v in box)
    if w < 16 or h < 16 or x + w > width or y + h > height:
        raise Speech2LipError(
            f"resample.crop {list(box)} does not fit inside {source} ({width}x{height}); "
            "give [x, y, width, height] inside the frame, or use 'auto'"
        )
    return x // 2 * 2, y // 2 * 2, w // 2 * 2, h // 2 * 2


def fit_audio(audio: np.ndarray, offset_s: float, n_frames: int) -> tuple[np.ndarray, dict]:
    """Align audio to video and make it exactly `n_frames * 640` samples long.

    `offset_s` = audio start - video start (seconds): positive means the audio starts later, so
    silence is put in front; negative means it started earlier, so its head is cut. The tail is
    then padded with silence or trimmed. Returns the audio and what was done (for the log).
    """
    shift = int(round(offset_s * SAMPLE_RATE))
    if shift > 0:
        audio = np.concatenate([np.zeros(shift, audio.dtype), audio])
    elif shift < 0:
        audio = audio[-shift:]
    want = n_frames * SAMPLES_PER_FRAME
    change = want - len(audio)
    audio = np.pad(audio, (0, change)) if change > 0 else audio[:want]
    return audio, {
        "offset_samples": shift,
        "tail_samples": change,
        "tail_ms": 1000 * change / SAMPLE_RATE,
    }


# ----------------------------------------------------------------------------- I/O
def check_source(info: Probe, cfg: ResampleConfig) -> None:
    """Refuse sources the pipeline cannot learn from, with the fix in the message."""
    path = info.path
    if info.video_codec is None:
        raise Speech2LipError(f"{path} has no video stream; give a video of the person talking")
    if info.audio_codec is None:
        raise Speech2LipError(
            f"{path} has no audio stream; speech2lip learns the mouth from speech, so the video "
            "must include the person's voice"
        )
    if info.duration < cfg.min_duration:
        raise Speech2LipError(
            f"{path} is {info.duration:.2f} s long, shorter than resample.min_duration = "
            f"{cfg.min_duration} s; use a longer clip (minutes are best)"
        )


def sample_frames(info: Probe, count: int) -> list[np.ndarray]:
    """`count` evenly spaced frames of the source at its display size (for face detection)."""
    frames = []
    for t in (np.arange(count) + 0.5) / count * info.duration:
        frames += list(read_frames(info.path, info.width, info.height, seek=t, limit=1))
    if not frames:
        raise Speech2LipError(f"could not decode any frame of {info.path}; the file may be corrupt")
    return frames


def find_crop(info: Probe, cfg: ResampleConfig) -> tuple[tuple[int, int, int, int], str]:
    """The crop box in source pixels and how it was chosen."""
    if cfg.crop == "none":
        return (0, 0, info.width // 2 * 2, info.height // 2 * 2), "none"
    if not isinstance(cfg.crop, str):
        return check_box(cfg.crop, info.width, info.height, info.path), "explicit"
    from speech2lip.faces.detect import largest_face_boxes

    frames = sample_frames(info, cfg.detect_frames)
    boxes = largest_face_boxes(frames)
    found = int((~np.isnan(boxes[:, 0])).sum())
    if found == 0:
        raise Speech2LipError(
            f"no face found in {len(frames)} frames sampled from {info.path}; check that the "
            "video shows a face, or set resample.crop to an explicit box [x, y, width, height]"
        )
    log.info("auto crop: face found in %d/%d sampled frames", found, len(frames))
    bounds = content_box(frames)
    if bounds != (0, 0, info.width, info.height):
        log.info("auto crop: picture area inside black bars is %s", list(bounds))
    return square_around(boxes, cfg.crop_margin, bounds), "auto"


def write_frames(video, path, size: tuple[int, int], box, cfg: ResampleConfig, expected: int):
    """Decode `video` through the crop/scale filters into `path` (FFV1, 25 fps); returns the
    frame count, refusing a truncated or too-short video."""
    out_w, out_h = size
    with FrameWriter(path, out_w, out_h, FPS, "ffv1") as writer:
        frames = read_frames(video, out_w, out_h, scale_filters(box, cfg.size))
        for frame in tqdm(frames, total=expected, desc="resample", unit="frame", disable=None):
            writer.write(frame)
            if writer.count % 500 == 0:
                log.info("resample: %d/~%d frames", writer.count, expected)
        writer.close()
        n = writer.count
    if n < 0.9 * expected - 2:
        raise Speech2LipError(
            f"{video}: decoded only {n} of ~{expected} frames (truncated file?); re-export it"
        )
    if n / FPS < cfg.min_duration:
        raise Speech2LipError(
            f"{video}: only {n / FPS:.2f} s of video decoded, less than resample.min_duration"
        )
    return n


def write_audio(video, path, info: Probe, n: int, frames, size, cfg: ResampleConfig):
    """The audio track as 16 kHz mono PCM in `path`, shifted and cut to the `n` frames,
    denoised under `cfg.denoise`, then moved by the source's audio/video offset
    (`find_av_offset` on the written `frames`). Returns the samples, how they were fitted
    (with what noise suppression did) and the offset record."""
    from speech2lip.data.denoise import denoise
    from speech2lip.data.voice import speech_probability

    audio, fit = fit_audio(read_audio(video, SAMPLE_RATE), info.audio_start - info.video_start, n)
    prob = speech_probability(audio, n) if cfg.denoise != "never" else None
    audio, fit["denoise"] = denoise(audio, cfg.denoise, prob, f"{video}'s audio")
    log.info(
        "audio/video reconciled: offset %+d samples, tail %+d samples (%+.1f ms)",
        fit["offset_samples"], fit["tail_samples"], fit["tail_ms"],
    )  # fmt: skip
    if abs(fit["tail_ms"]) > 500:
        log.warning("audio and video lengths differ by %.0f ms: check the source", fit["tail_ms"])
    sync = find_av_offset(frames, size, audio, n, cfg.av_offset)
    audio = avsync.shift_audio(audio, sync["applied"])
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return audio, fit, sync


def find_av_offset(frames, size: tuple[int, int], audio: np.ndarray, n: int, setting) -> dict:
    """The source's audio/video offset (`speech2lip.data.avsync`): with `setting` 'auto', the
    mouth opening of the resampled `frames` (MediaPipe) against the audio's mel windows; a
    number of frames is taken as it is."""
    if setting != "auto":
        applied, reason = avsync.decide({}, setting)
        return {"setting": setting, "applied": applied, "reason": reason}
    from speech2lip.data.audio import frame_mel_windows
    from speech2lip.faces.landmarkers import landmark_frames, open_landmarker
    from speech2lip.geometry.topology import inner_lip_opening

    with open_landmarker("mediapipe") as marker:
        points, found, _ = landmark_frames(read_frames(frames, *size), n, marker)
    found_offset = avsync.estimate(frame_mel_windows(audio, n), inner_lip_opening(points), found)
    applied, reason = avsync.decide(found_offset, setting)
    log.info("audio/video offset: %+d frames found (r %s, confidence %.2f); %s, %+d applied "
             "(+: the sound trailed the picture)", found_offset["frames"],
             "n/a" if found_offset["r"] is None else f"{found_offset['r']:.2f}",
             found_offset["confidence"], reason, applied)  # fmt: skip
    return {"setting": setting, "found": found_offset["frames"], "r": found_offset["r"],
            "r_at_zero": found_offset["r_at_zero"], "confidence": found_offset["confidence"],
            "applied": applied, "reason": reason, "curve": found_offset["curve"]}  # fmt: skip


def run(video: str | Path, out_dir: str | Path, cfg: ResampleConfig) -> dict:
    """Resample `video` into `out_dir`; returns the meta data written to `meta.json`."""
    out_dir = Path(out_dir)
    info = probe(video)
    check_source(info, cfg)
    rate = "variable" if info.variable_frame_rate else "constant"
    log.info(
        "source %s: %dx%d, %.3f fps (%s), %.2f s, audio %s %s Hz x%s",
        video, info.width, info.height, info.fps, rate,
        info.duration, info.audio_codec, info.sample_rate, info.channels,
    )  # fmt: skip
    box, mode = find_crop(info, cfg)
    out_w, out_h = output_size(box, cfg.size)
    log.info("crop %s box %s -> %dx%d", mode, list(box), out_w, out_h)
    expected = int(round(info.duration * FPS))

    with ExitStack() as stack:
        meta_tmp = stack.enter_context(atomic_path(out_dir / "meta.json"))
        wav_tmp = stack.enter_context(atomic_path(out_dir / "audio.wav"))
        mkv_tmp = stack.enter_context(atomic_path(out_dir / "frames.mkv"))
        n = write_frames(video, mkv_tmp, (out_w, out_h), box, cfg, expected)
        audio, fit, sync = write_audio(video, wav_tmp, info, n, mkv_tmp, (out_w, out_h), cfg)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "speech2lip_version": __version__,
            "fps": FPS,
            "n_frames": n,
            "width": out_w,
            "height": out_h,
            "duration_s": n / FPS,
            "frames": "frames.mkv",
            "frames_codec": "ffv1 (lossless, RGB)",
            "audio": {"file": "audio.wav", "sample_rate": SAMPLE_RATE, "channels": 1,
                      "n_samples": len(audio), "samples_per_frame": SAMPLES_PER_FRAME, **fit},
            "av_offset": sync,
            "crop": {"mode": mode, "box": list(box), "source_size": [info.width, info.height],
                     "scale": [out_w / box[2], out_h / box[3]]},
            "split": split_indices(n, cfg.test_fraction),
            "source": info.summary(),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
        }  # fmt: skip
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n")
    log.info("resample: %d frames, %.2f s -> %s", n, n / FPS, out_dir)
    return meta
