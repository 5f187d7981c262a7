"""Audio features: Wav2Lip's log-mel spectrogram and SyncNet's MFCC, aligned to 25 fps video.

Log-mel, with the settings Wav2Lip's lip-sync expert was trained on (its `hparams.py` and
`audio.py`, librosa 0.7): 16 kHz audio, pre-emphasis 0.97, STFT with n_fft = window = 800 and
hop 200 (80 mel frames per second), periodic Hann window, centred frames with *reflect* padding
(librosa 0.7's default; librosa >= 0.10 pads with zeros), magnitude (not power), 80 Slaney mel
bands from 55 to 7600 Hz with Slaney area normalisation, 20 log10(max(1e-5, x)) - 20 dB, then
normalised symmetrically to [-4, 4] (min level -100 dB). Implemented with numpy/scipy; a test
compares it with librosa's output stored in `tests/data/mel_reference.npz`.

Alignment: audio has exactly 640 samples per video frame (the `resample` stage guarantees it).
Video frame i starts at mel frame int(80 * i / 25) (Wav2Lip's `crop_audio_window`); its window
is the 16 mel frames (0.2 s, five video frames) that start there. Audio past the end of the clip
counts as silence, so the last frames' windows are complete.

MFCC: `python_speech_features.mfcc` defaults (25 ms window, 10 ms step, 13 coefficients), as
syncnet_python computes them: 100 MFCC frames per second, 4 per video frame.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.signal import get_window, lfilter

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
N_FFT = 800
HOP = 200
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS = 4.0
MEL_FPS = SAMPLE_RATE // HOP  # 80
MEL_WINDOW = 16  # mel frames per window: 0.2 s
MFCC_PER_FRAME = 4  # 100 MFCC frames/s at 25 fps
N_MFCC = 13
# Frame i's audio code is built from the mel windows of frames i + AUDIO_OFFSET - r ..
# i + AUDIO_OFFSET + r: with -2 the centre window (0.2 s = 5 frames) is centred on frame i.
AUDIO_OFFSET = -2


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default)."""
    hz = np.asarray(hz, np.float64)
    f_sp = 200.0 / 3
    mel = hz / f_sp
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    log_part = min_log_hz / f_sp + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(
        mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), mel * f_sp
    )


@functools.cache
def mel_filterbank(
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """Triangular Slaney mel filters with area normalisation, `(n_mels, n_fft // 2 + 1) float64`."""
    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def stft_magnitude(wav: np.ndarray) -> np.ndarray:
    """|STFT| of `(S,)` audio: centred, reflect-padded frames; `(n_fft // 2 + 1, 1 + S // hop)`."""
    wav = np.asarray(wav, np.float64)
    padded = np.pad(wav, N_FFT // 2, mode="reflect")
    n = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n]
    window = get_window("hann", N_FFT, fftbins=True)
    return np.abs(np.fft.rfft(frames * window, axis=1)).T


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's normalised log-mel of 16 kHz audio `(S,)` in [-1, 1]: `(80, 1 + S // 200) float32`,
    values in [-4, 4] (-4 = silence)."""
    wav = np.asarray(wav, np.float64)
    if wav.ndim != 1 or len(wav) < N_FFT // 2 + 1:
        raise ValueError(f"need mono audio of at least {N_FFT // 2 + 1} samples, got {wav.shape}")
    emphasised = lfilter([1.0, -PREEMPHASIS], [1.0], wav)
    mel = mel_filterbank() @ stft_magnitude(emphasised)
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    norm = 2 * MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS
    return np.clip(norm, -MAX_ABS, MAX_ABS).astype(np.float32)


def mel_start(frame: np.ndarray | int) -> np.ndarray:
    """First mel frame of video frame(s) `frame` at 25 fps: int(80 * i / 25) (Wav2Lip)."""
    return (np.asarray(frame, np.int64) * MEL_FPS) // FPS


def frame_mel_windows(wav: np.ndarray, n_frames: int) -> np.ndarray:
    """Per video frame i, the 16 mel frames starting at frame i: `(n_frames, 80, 16) float32`.

    `wav` must hold `n_frames * 640` samples; audio past its end is silence.
    """
    _check_length(wav, n_frames)
    tail = np.zeros(MEL_WINDOW * HOP + N_FFT, np.float64)  # whole windows for the last frames
    mel = melspectrogram(np.concatenate([np.asarray(wav, np.float64), tail]))
    starts = mel_start(np.arange(n_frames))
    idx = starts[:, None] + np.arange(MEL_WINDOW)[None]
    return np.ascontiguousarray(np.moveaxis(mel[:, idx], 0, 1))


def frame_mfcc(wav: np.ndarray, n_frames: int) -> np.ndarray:
    """Per video frame, its 4 MFCC frames (10 ms step, 13 coefficients): `(N, 4, 13) float32`.

    Computed with python_speech_features as syncnet_python does, on 16-bit-scaled samples
    (syncnet_python reads WAV files as int16); audio past the end is silence.
    """
    from python_speech_features import mfcc

    _check_length(wav, n_frames)
    padded = np.concatenate([np.asarray(wav, np.float64) * 32768.0, np.zeros(SAMPLES_PER_FRAME)])
    feats = mfcc(padded, SAMPLE_RATE)[: n_frames * MFCC_PER_FRAME]
    return feats.reshape(n_frames, MFCC_PER_FRAME, N_MFCC).astype(np.float32)


def low_pass(wav: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """16 kHz `wav` with what lies above `cutoff_hz` taken out (8th-order Butterworth, run
    forwards and backwards: zero phase, so nothing moves in time); float32."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, cutoff_hz, btype="low", fs=SAMPLE_RATE, output="sos")
    return sosfiltfilt(sos, np.asarray(wav, np.float64)).astype(np.float32)


def context_indices(frame: np.ndarray | int, radius: int, n_frames: int) -> np.ndarray:
    """Frames i - radius .. i + radius (clamped to the clip) for smoothing over neighbouring
    windows: `(..., 2 * radius + 1) int64`."""
    offsets = np.arange(-radius, radius + 1)
    return np.clip(np.asarray(frame, np.int64)[..., None] + offsets, 0, n_frames - 1)


def _check_length(wav: np.ndarray, n_frames: int) -> None:
    if len(wav) != n_frames * SAMPLES_PER_FRAME:
        raise ValueError(
            f"audio has {len(wav)} samples, expected {n_frames} frames x {SAMPLES_PER_FRAME} = "
            f"{n_frames * SAMPLES_PER_FRAME}"
        )
