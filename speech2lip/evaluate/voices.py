"""The evaluation's other voices: cross-voice rows (the test split re-rendered from its own
audio with the voice changed, measured against the same ground truth), and the videos driven by
other audio (no ground truth: reference-free metrics, and how widely the mouth moves).

A driving file that is a video of someone talking carries a reference of its own: its
speaker's mouth. Their lips differ from the subject's, but when they open and close does not,
so the correlation of the driven mouth's opening with the driver's (`driver_opening`) measures
sync with another real voice (another speaker, microphone, room, language), which no pitch
shift imitates.

A pitch shift with the tempo kept (`evaluate.pitch_shifts`, semitones; ffmpeg's rubberband, so
the formants move too, as with another speaker) changes who seems to speak but not when or what:
the ground truth's lips still hold frame by frame. Each shifted row is rendered as `render`
renders driving audio (same renderer settings, the level matched to the subject's, the same
rest mouth in silent spans), so the
loss of LMD and of opening correlation against ours measures how much the model leans on the
voice rather than on what is said.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from speech2lip.media import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, pitch_shift

log = logging.getLogger(__name__)


def row_name(semitones: float) -> str:
    """The method key of a shifted row: `pitch+4`, `pitch-4`, `pitch+1.5`."""
    return f"pitch{semitones:+g}"


def render_pitch_shifted(ev, test_wav: np.ndarray, audio, source, out_dir: Path) -> dict:
    """Render the test split driven by `test_wav` shifted by each of `ev.cfg.pitch_shifts`
    into `out_dir/<row>.mp4`; `audio`: the subject's own audio.wav (its silent train frames give
    the rest mouth). Returns {row name: video path}."""
    from speech2lip.renderer import SubjectVoice, clean_speech, stream_video

    renderer, test, cfg = ev.renderer, ev.test, ev.renderer.cfg
    voice = SubjectVoice(ev.data, audio) if ev.cfg.pitch_shifts else None
    videos = {}
    for semitones in ev.cfg.pitch_shifts:
        name = row_name(semitones)
        log.info("evaluate: rendering the test split with its voice %+g semitones", semitones)
        shifted = pitch_shift(test_wav, semitones)
        what = f"the test audio shifted {semitones:+g} semitones"
        heard, prob, _ = clean_speech(shifted, cfg, what, True)
        windows = voice.heard(heard, prob, ev.model.sizes.features, what, cfg)
        if cfg.silence:
            voice.rest_in_silence(renderer, prob, cfg)
        try:
            path = out_dir / f"{name}.mp4"
            stream_video(renderer, windows, test, shifted, path, ev.frames_path, ev.meta, source,
                         desc=name)  # fmt: skip
        finally:
            renderer.clear_rest()
        videos[name] = path
    return videos


def cross_voice(methods: dict, shifts) -> dict:
    """Per shifted row, its LMD and opening correlation and their change against ours:
    `lmd_change` (relative, + is worse) and `opening_r_drop` (ours minus shifted, + is worse)."""
    ours = methods["speech2lip"]
    out = {}
    for semitones in shifts:
        row = methods.get(row_name(semitones))
        if row is None:
            continue
        lmd, r = row.get("lmd_px"), row.get("opening_r")
        out[row_name(semitones)] = {
            "semitones": semitones, "lmd_px": lmd, "opening_r": r,
            "lmd_change": None if lmd is None or not ours.get("lmd_px")
            else lmd / ours["lmd_px"] - 1,
            "opening_r_drop": None if r is None or ours.get("opening_r") is None
            else ours["opening_r"] - r,
        }  # fmt: skip
    return out


def lines(rows: dict) -> list[str]:
    """The cross-voice rows in words, for the log and the report."""
    return [
        f"voice {row['semitones']:+g} semitones: LMD {row['lmd_px']:.2f} px "
        f"({100 * row['lmd_change']:+.1f} % against ours), opening r {row['opening_r']:.2f} "
        f"({-row['opening_r_drop']:+.2f})"
        for row in rows.values()
        if None not in (row["lmd_px"], row["lmd_change"], row["opening_r"], row["opening_r_drop"])
    ]


def denoise_lines(driven: dict) -> list[str]:
    """What noise suppression did to each driven video's audio, in words (for the report)."""
    out = []
    for name, row in driven.items():
        done = row.get("denoise") or {}
        snr = done.get("speech_snr_db")
        if done.get("mode") in (None, "never") or snr is None:
            continue
        what = "denoised for the features" if done.get("denoised") else "heard as given"
        out.append(f"{name}: speech SNR about {snr:.1f} dB (DeepFilterNet's estimate), {what}")
    return out


MIN_DRIVER_FACES = 0.5  # share of a driving video's frames with a face, to measure against it
DRIVER_LONG_SIDE = 960  # the driving video is measured at most this large (pixels)


def driver_opening(
    path: Path, n: int, backend: str = "mediapipe"
) -> tuple[np.ndarray, float] | None:
    """The inner-lip opening `(n,)` (pixels, nan without a face) of the person in the driving
    file `path`, per output frame (25 fps from the start of its sound, as `render` reads it),
    and the share of frames with a face; None when `path` has no picture or a face in under
    `MIN_DRIVER_FACES` of its frames."""
    from speech2lip.faces.landmarkers import largest, open_landmarker
    from speech2lip.geometry.topology import inner_lip_opening
    from speech2lip.media import probe, read_frames

    info = probe(path)
    if not info.video_codec or info.width <= 0 or info.height <= 0:
        return None
    scale = min(1.0, DRIVER_LONG_SIDE / max(info.width, info.height))
    w, h = (max(2, int(round(v * scale / 2)) * 2) for v in (info.width, info.height))
    # ffmpeg decodes the picture at a constant rate from the file's earliest start (repeating
    # its first frame when the picture starts later); the sound starts at its own start
    origin = min(info.audio_start, info.video_start) if info.audio_codec else info.video_start
    skip = int(round((info.audio_start - origin) * FPS)) if info.audio_codec else 0
    opening = np.full(n, np.nan)
    marker = open_landmarker(backend, min_confidence=0.5, max_faces=1)
    try:
        frames = read_frames(path, w, h, [f"fps={FPS}", f"scale={w}:{h}"])
        for j, frame in enumerate(frames):
            i = j - skip
            if i >= n:
                break
            faces = marker(frame) if i >= 0 else None
            if faces:
                opening[i] = float(inner_lip_opening(largest(faces)[:, :2]))
    finally:
        marker.close()
    found = float(np.isfinite(opening).mean()) if n else 0.0
    if found < MIN_DRIVER_FACES:
        log.info("evaluate: %s: a face in %.0f %% of its frames, too few to measure its "
                 "speaker's mouth", path.name, 100 * found)  # fmt: skip
        return None
    return opening, found


def driver_lines(driven: dict) -> list[str]:
    """How each driven mouth follows its driving video's speaker, in words."""
    out = []
    for name, row in driven.items():
        r, best, lag = (row.get(k) for k in ("driver_opening_r", "driver_best_r",
                                             "driver_best_lag"))  # fmt: skip
        if r is None:
            continue
        out.append(f"{name}: opens and closes with the driving video's speaker at r = {r:.2f} "
                   f"(best {best:.2f} at {lag:+d} frames; {100 * row['driver_faces']:.0f} % of "
                   f"its frames had a face)")  # fmt: skip
    return out


def measure_driven(ev, driven, expert, spread: float | None = None) -> dict:
    """The reference-free metrics of each driven video (its figures `<stem>.json` beside it),
    and its `opening_amplitude`: the spread (std) of its inner-lip opening over `spread`, the
    subject's own (a mouth that barely moves with new speech shows here). When the driving file
    (`stats["audio"]`) is a video with a face, also how the mouth follows its speaker's
    (`driver_opening`): `driver_opening_r` at lag 0, `driver_best_r` at `driver_best_lag`
    (+: ours later), and `driver_faces`."""
    from speech2lip.data.audio import frame_mel_windows
    from speech2lip.evaluate.measure import measure
    from speech2lip.evaluate.metrics import articulation
    from speech2lip.media import probe, read_audio
    from speech2lip.renderer.frames import pingpong

    rows = {}
    for path in map(Path, driven):
        n = int(round(probe(path).duration * FPS))
        stats_file = path.with_suffix(".json")
        stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        bg = pingpong(n, len(ev.data), int(stats.get("start_frame", 0)))
        wav = read_audio(path, SAMPLE_RATE)[: n * SAMPLES_PER_FRAME]
        wav = np.pad(wav, (0, n * SAMPLES_PER_FRAME - len(wav)))
        track = measure(path.stem, ev.decode(path, bool(stats.get("pasted_back")), n),
                        ev.data.read_field("mouth_origin", bg), ev.box, None,
                        ev.face_boxes(bg), ev.cfg.landmarks, ev.cfg.cpbd_edges)  # fmt: skip
        rows[path.stem] = ev.summary_of(track, None, expert, frame_mel_windows(wav, n), wav)
        rows[path.stem]["denoise"] = stats.get("denoise")  # what render heard (None: unknown)
        opening = np.asarray(track.opening, np.float64)
        if spread and np.isfinite(opening).sum() > 1:
            rows[path.stem]["opening_amplitude"] = float(np.nanstd(opening) / spread)
        source = Path(str(stats.get("audio", "")))  # render's record of the driving file
        driver = driver_opening(source, n, ev.cfg.landmarks) if source.is_file() else None
        if driver is not None:
            follows = articulation(opening, driver[0])
            rows[path.stem].update(driver_opening_r=follows["opening_r"],
                                   driver_best_r=follows["opening_best_r"],
                                   driver_best_lag=follows["opening_best_lag"],
                                   driver_faces=driver[1])  # fmt: skip
    return rows
