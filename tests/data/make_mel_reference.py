"""Regenerate `mel_reference.npz` with librosa (not a project dependency):

    python -m venv /tmp/ref && /tmp/ref/bin/pip install librosa
    /tmp/ref/bin/python tests/data/make_mel_reference.py

Wav2Lip's `audio.melspectrogram` written with librosa calls (reflect padding as in librosa 0.7,
which Wav2Lip pins). The test signal is a formula, so the test rebuilds it without this file.
"""

from pathlib import Path

import numpy as np
from scipy.signal import lfilter


def signal() -> np.ndarray:
    """1.5 s at 16 kHz: a chirp, a vowel-like harmonic stack, a click train and silence."""
    t = np.arange(24000) / 16000.0
    chirp = 0.3 * np.sin(2 * np.pi * (80 * t + 1500 * t**2))
    vowel = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t + k) for k in range(1, 30))
    vowel *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    clicks = (np.arange(24000) % 800 == 0) * 0.9
    wav = chirp + vowel + clicks
    wav[18000:] = 0.0  # the last 0.375 s silent
    return wav


def main() -> None:
    import librosa

    wav = signal()
    emphasised = lfilter([1, -0.97], [1], wav)
    spec = librosa.stft(y=emphasised, n_fft=800, hop_length=200, win_length=800, pad_mode="reflect")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    db = 20 * np.log10(np.maximum(1e-5, basis @ np.abs(spec))) - 20
    mel = np.clip(8 * (db + 100) / 100 - 4, -4, 4).astype(np.float32)
    out = Path(__file__).with_name("mel_reference.npz")
    np.savez_compressed(out, mel=mel, basis=basis.astype(np.float32), librosa=librosa.__version__)
    print(out, mel.shape, mel.min(), mel.max())


if __name__ == "__main__":
    main()
