"""The source video's audio/video offset: estimate, decision, the shift, and resample's use."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from speech2lip.config import ResampleConfig
from speech2lip.data import avsync
from speech2lip.data.audio import SAMPLE_RATE, SAMPLES_PER_FRAME, frame_mel_windows


def test_shift_audio_moves_whole_frames_and_keeps_the_length():
    wav = np.arange(4 * SAMPLES_PER_FRAME, dtype=np.float32) + 1
    early = avsync.shift_audio(wav, 1)  # the sound trailed: it moves one frame earlier
    np.testing.assert_array_equal(early[: 3 * SAMPLES_PER_FRAME], wav[SAMPLES_PER_FRAME:])
    assert early.shape == wav.shape and not early[3 * SAMPLES_PER_FRAME :].any()
    late = avsync.shift_audio(wav, -2)
    np.testing.assert_array_equal(late[2 * SAMPLES_PER_FRAME :], wav[: 2 * SAMPLES_PER_FRAME])
    assert not late[: 2 * SAMPLES_PER_FRAME].any()
    assert avsync.shift_audio(wav, 0) is wav
    assert not avsync.shift_audio(wav, 9).any()  # more than the clip: all silence


@pytest.mark.parametrize(
    "found, setting, applied, reason",
    [
        ({}, 3, 3, "set by resample.av_offset"),
        ({}, 0, 0, "set by resample.av_offset"),
        ({"frames": 0, "r": None, "confidence": 0.0}, "auto", 0, "clip too short"),
        ({"frames": 0, "r": 0.5, "confidence": 1.0}, "auto", 0, "in sync"),
        ({"frames": 2, "r": 0.1, "confidence": 1.0}, "auto", 0, "too weakly"),
        ({"frames": 2, "r": 0.5, "confidence": 0.4}, "auto", 0, "low confidence"),
        ({"frames": -2, "r": 0.5, "confidence": 0.8}, "auto", -2, "estimated"),
    ],
)
def test_decide(found, setting, applied, reason):
    got, why = avsync.decide(found, setting)
    assert got == applied and reason in why


@pytest.fixture(scope="module")
def talking():
    """20 s of espeak-ng speech (16 kHz) and the mouth opening its phonemes imply per frame,
    in sync by construction."""
    from scipy.signal import resample_poly

    from speech2lip.sample.speech import mouth_controls, speak_script

    speech = speak_script(20.0, np.random.default_rng(1), "en-us", 160)
    wav = resample_poly(speech.audio.astype(np.float64) / 32768, SAMPLE_RATE, speech.sample_rate)
    n = len(wav) // SAMPLES_PER_FRAME
    opening = mouth_controls(speech.phonemes, speech.sample_rate, n)[:, 0]
    return wav[: n * SAMPLES_PER_FRAME], opening


@pytest.mark.parametrize("trail", [0, 3, -3, 5])
def test_estimate_finds_a_known_shift(talking, trail):
    wav, opening = talking
    n = len(opening)
    heard = avsync.shift_audio(wav, -trail)  # delayed by `trail` frames: the sound trails
    found = avsync.estimate(frame_mel_windows(heard, n), opening, np.ones(n, bool))
    assert abs(found["frames"] - trail) <= 1, found
    assert found["r"] > avsync.MIN_R and found["confidence"] >= avsync.MIN_CONFIDENCE
    assert len(found["curve"]) == 2 * avsync.MAX_LAG + 1
    applied, _ = avsync.decide(found, "auto")
    assert applied == found["frames"]
    # and the corrected audio is back in sync
    fixed = avsync.shift_audio(heard, applied)
    again = avsync.estimate(frame_mel_windows(fixed, n), opening, np.ones(n, bool))
    assert abs(again["frames"]) <= 1


def test_estimate_on_too_little_face_says_so(talking):
    wav, opening = talking
    n = len(opening)
    valid = np.zeros(n, bool)
    valid[:30] = True
    found = avsync.estimate(frame_mel_windows(wav, n), opening, valid)
    assert found["r"] is None and avsync.decide(found, "auto") == (0, "clip too short to estimate")


def test_resample_records_and_applies_the_offset(demo_video, tmp_path):
    from speech2lip import resample

    base = resample.run(demo_video, tmp_path / "zero", ResampleConfig(size=128, av_offset=0))
    assert base["av_offset"] == {"setting": 0, "applied": 0, "reason": "set by resample.av_offset"}
    moved = resample.run(demo_video, tmp_path / "two", ResampleConfig(size=128, av_offset=2))
    assert moved["av_offset"]["applied"] == 2 and moved["n_frames"] == base["n_frames"]
    wav0, _ = sf.read(tmp_path / "zero/audio.wav", dtype="float32")
    wav2, _ = sf.read(tmp_path / "two/audio.wav", dtype="float32")
    np.testing.assert_array_equal(wav2, avsync.shift_audio(wav0, 2))
    auto = resample.run(demo_video, tmp_path / "auto", ResampleConfig(size=128))
    record = json.loads((tmp_path / "auto/meta.json").read_text())["av_offset"]
    assert record == auto["av_offset"] and record["setting"] == "auto"
    assert {"found", "r", "confidence", "applied", "reason", "curve"} <= record.keys()
    assert abs(record["found"]) <= 1  # the demo subject is in sync by construction
    wav_auto, _ = sf.read(tmp_path / "auto/audio.wav", dtype="float32")
    np.testing.assert_array_equal(wav_auto, avsync.shift_audio(wav0, record["applied"]))
