"""Cross-voice rows: the pitch shift itself, and the rows' arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from speech2lip import media
from speech2lip.evaluate.voices import cross_voice, lines, row_name


def _pitch(wav: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("rubberband", [True, False])
def test_pitch_shift_moves_the_pitch_and_keeps_the_length(rubberband, monkeypatch):
    if rubberband and not media.has_filter("rubberband"):
        pytest.skip("this ffmpeg has no rubberband filter")
    monkeypatch.setattr(media, "has_filter", lambda name: rubberband)
    t = np.arange(32000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    for semitones, expected in ((12, 440.0), (-12, 110.0), (4, 220 * 2 ** (4 / 12))):
        out = media.pitch_shift(tone, semitones)
        assert out.shape == tone.shape and out.dtype == np.float32
        middle = out[8000:24000]  # away from the filters' edges
        assert _pitch(middle) == pytest.approx(expected, rel=0.05), semitones
        assert 0.5 < np.sqrt(np.mean(middle**2)) / np.sqrt(np.mean(tone**2)) < 2  # loudness kept


def test_cross_voice_rows_compare_with_ours():
    methods = {"speech2lip": {"lmd_px": 2.0, "opening_r": 0.8},
               "pitch+4": {"lmd_px": 2.2, "opening_r": 0.7},
               "pitch-4": {"lmd_px": 1.9, "opening_r": 0.85}}  # fmt: skip
    rows = cross_voice(methods, [4, -4, 7])
    assert list(rows) == ["pitch+4", "pitch-4"]  # no row for a shift that was not rendered
    assert rows["pitch+4"]["lmd_change"] == pytest.approx(0.1)
    assert rows["pitch+4"]["opening_r_drop"] == pytest.approx(0.1)
    assert rows["pitch-4"]["lmd_change"] == pytest.approx(-0.05)
    assert rows["pitch-4"]["opening_r_drop"] == pytest.approx(-0.05)
    text = lines(rows)
    assert (
        text[0] == "voice +4 semitones: LMD 2.20 px (+10.0 % against ours), opening r 0.70 (-0.10)"
    )
    assert row_name(1.5) == "pitch+1.5" and row_name(-4) == "pitch-4"
    unmeasured = {"lmd_px": None, "opening_r": None}
    assert lines(cross_voice({"speech2lip": unmeasured, "pitch+4": unmeasured}, [4])) == []
