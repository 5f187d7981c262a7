"""The evaluation's other voices: cross-voice rows (the test split re-rendered from its own
audio with the voice changed, measured against the same ground truth), and the videos driven by
other audio (no ground truth: reference-free metrics, and how widely the mouth moves).

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


def measure_driven(ev, driven, expert, spread: float | None = None) -> dict:
    """The reference-free metrics of each driven video (its figures `<stem>.json` beside it),
    and its `opening_amplitude`: the spread (std) of its inner-lip opening over `spread`, the
    subject's own (a mouth that barely moves with new speech shows here)."""
    from speech2lip.data.audio import frame_mel_windows
    from speech2lip.evaluate.measure import measure
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
    return rows
