"""Cross-voice rows of the evaluation: the test split re-rendered from its own audio with the
voice changed, measured against the same ground truth.

A pitch shift with the tempo kept (`evaluate.pitch_shifts`, semitones; ffmpeg's rubberband, so
the formants move too, as with another speaker) changes who seems to speak but not when or what:
the ground truth's lips still hold frame by frame. Each shifted row is rendered exactly as
`render` renders ours (same renderer settings, the same rest mouth in silent spans), so the
loss of LMD and of opening correlation against ours measures how much the model leans on the
voice rather than on what is said.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from speech2lip.media import pitch_shift

log = logging.getLogger(__name__)


def row_name(semitones: float) -> str:
    """The method key of a shifted row: `pitch+4`, `pitch-4`, `pitch+1.5`."""
    return f"pitch{semitones:+g}"


def render_pitch_shifted(ev, test_wav: np.ndarray, audio, source, out_dir: Path) -> dict:
    """Render the test split driven by `test_wav` shifted by each of `ev.cfg.pitch_shifts`
    into `out_dir/<row>.mp4`; `audio`: the subject's own audio.wav (its silent train frames give
    the rest mouth). Returns {row name: video path}."""
    from speech2lip.renderer import audio_windows, rest_in_silence, stream_video

    renderer, test = ev.renderer, ev.test
    videos = {}
    for semitones in ev.cfg.pitch_shifts:
        name = row_name(semitones)
        log.info("evaluate: rendering the test split with its voice %+g semitones", semitones)
        shifted = pitch_shift(test_wav, semitones)
        windows = audio_windows(shifted, ev.model.sizes.features,
                                f"the test audio shifted {semitones:+g} semitones")  # fmt: skip
        if renderer.cfg.silence:
            rest_in_silence(renderer, ev.data, audio, shifted, len(test), renderer.cfg)
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
