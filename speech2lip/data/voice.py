"""Voice activity per 25 fps video frame, and the silent spans where the mouth rests.

The speech probability comes from silero-vad's bundled model (its wheel ships it: nothing is
downloaded), run on 16 kHz audio in its 512-sample (32 ms) chunks; a video frame's probability
is the largest of the chunks that overlap its 640 samples. A frame is silent when that is below
`THRESHOLD`; speech frames are widened by `HANGOVER` frames on each side (the lips start moving
before a sound and close after it, and the mel window spans five frames), and only silent runs
of at least `min_frames` count: short gaps between words are speech.

`rest_weights` turns the silent runs into a blend weight per frame, 0 in speech and 1 in
silence with a linear ramp of `ramp` frames at each edge, so the mouth moves smoothly to the
rest mouth and stays there.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from speech2lip.data.audio import SAMPLE_RATE, SAMPLES_PER_FRAME
from speech2lip.errors import Speech2LipError

log = logging.getLogger(__name__)

CHUNK = 512  # silero-vad's window at 16 kHz
THRESHOLD = 0.5
HANGOVER = 2
REINSTALL = "reinstall it: pip install --force-reinstall silero-vad==6.2.3"


@functools.cache
def load_vad():
    """silero-vad's bundled TorchScript model; one clear line when the package is missing or
    its model file cannot be loaded (a broken install)."""
    try:
        from silero_vad import load_silero_vad
    except ImportError as exc:
        raise Speech2LipError(f"voice activity needs the silero-vad package ({exc}); "
                              f"{REINSTALL}") from None  # fmt: skip
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation
            return load_silero_vad()
    except Exception as exc:  # a missing or corrupt model file inside the package
        raise Speech2LipError(f"silero-vad's bundled model could not be loaded ({exc}); "
                              f"{REINSTALL}") from None  # fmt: skip


def chunks_to_frames(chunk_prob: np.ndarray, n_frames: int) -> np.ndarray:
    """Per-chunk probabilities (chunk k covers samples [512 k, 512 (k+1))) -> per video frame
    (frame i covers [640 i, 640 (i+1))): the largest of the chunks that overlap it."""
    out = np.zeros(n_frames, np.float32)
    if len(chunk_prob) == 0:
        return out
    first = np.arange(n_frames) * SAMPLES_PER_FRAME // CHUNK
    last = ((np.arange(n_frames) + 1) * SAMPLES_PER_FRAME - 1) // CHUNK
    first = np.minimum(first, len(chunk_prob) - 1)
    last = np.minimum(last, len(chunk_prob) - 1)
    return np.maximum(chunk_prob[first], chunk_prob[last]).astype(np.float32)


def speech_probability(wav: np.ndarray, n_frames: int | None = None) -> np.ndarray:
    """Speech probability `(n_frames,)` in 0..1 per video frame of 16 kHz mono `wav`."""
    import torch

    n_frames = -(-len(wav) // SAMPLES_PER_FRAME) if n_frames is None else n_frames
    model = load_vad()
    model.reset_states()
    pad = (-len(wav)) % CHUNK
    x = torch.from_numpy(np.pad(np.asarray(wav, np.float32), (0, pad)))
    probs = np.empty(len(x) // CHUNK, np.float32)
    with torch.no_grad():
        for k in range(len(probs)):
            probs[k] = float(model(x[k * CHUNK : (k + 1) * CHUNK], SAMPLE_RATE))
    model.reset_states()
    return chunks_to_frames(probs, n_frames)


def silent_frames(prob: np.ndarray, min_frames: int, threshold: float = THRESHOLD,
                  hangover: int = HANGOVER) -> np.ndarray:  # fmt: skip
    """Boolean `(n,)`: the frames in silent runs of at least `min_frames` frames, after
    widening each speech frame by `hangover` frames on both sides."""
    from scipy.ndimage import binary_dilation, label

    speech = np.asarray(prob) >= threshold
    if hangover > 0 and speech.any():
        speech = binary_dilation(speech, iterations=hangover)
    runs, _ = label(~speech)
    long = np.bincount(runs) >= min_frames
    long[0] = False  # label 0: speech
    return long[runs]


def rest_weights(silent: np.ndarray, ramp: int, margin: int = 0) -> np.ndarray:
    """Blend weight `(n,)` towards the rest mouth: 0 in speech and within `margin` frames of
    it, rising linearly over the next `ramp` frames into each silent run (and falling the same
    way out of it), 1 further inside."""
    silent = np.asarray(silent, bool)
    if not silent.any():
        return np.zeros(len(silent), np.float32)
    if silent.all():
        return np.ones(len(silent), np.float32)
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(silent)  # frames to the nearest speech frame
    return np.clip((distance - margin) / max(1, ramp), 0, 1).astype(np.float32)


def rest_frames(prob: np.ndarray, ids: np.ndarray, min_count: int = 5) -> np.ndarray:
    """The frames among `ids` whose mouth is the subject's rest mouth: those with no speech
    (probability below `THRESHOLD`), or, when fewer than `min_count` are, the quietest 5 % (at
    least `min_count`)."""
    ids = np.asarray(ids)
    quiet = ids[prob[ids] < THRESHOLD]
    if len(quiet) >= min_count:
        return quiet
    k = min(len(ids), max(min_count, len(ids) // 20))
    return ids[np.argsort(prob[ids], kind="stable")[:k]]


def speech_level(wav: np.ndarray, prob: np.ndarray) -> float | None:
    """The level (dBFS, RMS) of `wav`'s speech: its video frames (640 samples) whose speech
    probability `prob` `(n,)` is at least `THRESHOLD`; None when none is."""
    n = min(len(prob), len(wav) // SAMPLES_PER_FRAME)
    frames = np.asarray(wav[: n * SAMPLES_PER_FRAME], np.float64).reshape(n, -1)
    speech = frames[np.asarray(prob[:n]) >= THRESHOLD]
    if len(speech) == 0:
        return None
    return float(10 * np.log10(max(np.mean(speech**2), 1e-12)))


def match_level(
    wav: np.ndarray, prob: np.ndarray, target_db: float | None, limit_db: float = 30.0
) -> tuple[np.ndarray, float]:
    """`wav` scaled so that its speech (`speech_level`) is `target_db` loud, and the gain (dB,
    within +-`limit_db`); unchanged (gain 0) without speech or target. The result may exceed
    1: it feeds the features, never a file."""
    level = speech_level(wav, prob)
    if level is None or target_db is None:
        return wav, 0.0
    gain = float(np.clip(target_db - level, -limit_db, limit_db))
    return (np.asarray(wav, np.float32) * np.float32(10 ** (gain / 20))), gain
