"""Audio features: Wav2Lip's log-mel against librosa reference values, alignment, MFCC."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from speech2lip.data import audio

DATA = Path(__file__).parent / "data"


def reference_signal() -> np.ndarray:
    spec = importlib.util.spec_from_file_location("make_ref", DATA / "make_mel_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.signal()


def test_mel_matches_librosa_reference_values():
    ref = np.load(DATA / "mel_reference.npz")
    assert np.abs(audio.mel_filterbank() - ref["basis"]).max() < 1e-6
    mel = audio.melspectrogram(reference_signal())
    assert mel.shape == ref["mel"].shape == (80, 121)
    assert np.abs(mel - ref["mel"]).max() < 1e-4
    assert mel.dtype == np.float32 and mel.min() >= -4 and mel.max() <= 4
    assert (mel[:, -20:] == -4).all()  # the silent tail is the floor


def test_a_tone_lands_in_its_band_and_its_frames():
    n = 40
    t = np.arange(n * 640) / 16000
    wav = np.zeros(n * 640)
    on = (t >= 0.8) & (t < 1.2)  # video frames 20..29
    wav[on] = 0.5 * np.sin(2 * np.pi * 1000 * t[on])
    windows = audio.frame_mel_windows(wav, n)
    assert windows.shape == (n, 80, 16) and windows.dtype == np.float32
    # Frame i's window covers 0.2 s from i / 25 s (+/- 25 ms of STFT support).
    assert (windows[:15] == -4).all()  # ends by 0.8 s - 25 ms
    assert windows[20, :, 0].max() > 0 and windows[19, :, 8].max() > 0
    assert (windows[32:] == -4).all()  # starts after 1.2 s + 25 ms
    centres = audio._mel_to_hz(np.linspace(audio._hz_to_mel(55), audio._hz_to_mel(7600), 82)[1:-1])
    assert abs(centres[windows[22, :, 8].argmax()] - 1000) < 60
    # Away from the clip's end the windows equal Wav2Lip's crop of the plain spectrogram.
    plain = audio.melspectrogram(wav)
    for i in (0, 7, 21, 30):
        s = int(80.0 * (i / 25.0))  # Wav2Lip's crop_audio_window
        assert s + 16 + 2 < plain.shape[1]
        assert np.array_equal(windows[i], plain[:, s : s + 16])
    # The window of frame i starts at mel frame int(80 i / 25) of the whole spectrogram.
    full = audio.melspectrogram(np.concatenate([wav, np.zeros(4000)]))
    for i in (0, 7, 21, n - 1):
        s = int(80 * i / 25)
        assert np.array_equal(windows[i], full[:, s : s + 16])


def test_mfcc_is_python_speech_features_four_per_frame():
    from python_speech_features import mfcc

    rng = np.random.default_rng(0)
    wav = rng.normal(0, 0.1, 25 * 640)
    feats = audio.frame_mfcc(wav, 25)
    assert feats.shape == (25, 4, 13)
    direct = mfcc(wav * 32768.0, 16000)
    assert np.allclose(feats.reshape(-1, 13)[: len(direct) - 1], direct[:-1], atol=1e-3)


def test_context_indices_clamp_at_the_clip_edges():
    assert audio.context_indices(0, 2, 10).tolist() == [0, 0, 0, 1, 2]
    assert audio.context_indices(9, 2, 10).tolist() == [7, 8, 9, 9, 9]
    assert audio.context_indices(np.array([4, 5]), 1, 10).tolist() == [[3, 4, 5], [4, 5, 6]]


def test_audio_length_must_match_the_frames():
    with pytest.raises(ValueError, match="expected 10 frames x 640"):
        audio.frame_mel_windows(np.zeros(6000), 10)
