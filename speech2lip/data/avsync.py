"""The source video's audio/video offset: how many frames its sound trails (or leads) its
mouth, found from the clip itself.

For each candidate lag L (frames, within +-`MAX_LAG`), a linear ridge regression predicts the
mouth opening of frame i (less its one-second moving average) from the spectrum of the 25 ms
at the centre of frame i + L (the middle of the mel window the model hears for it),
cross-validated over contiguous folds of the clip. The lag whose
predictions correlate best with the real opening is the offset: L > 0 means the sound of a
mouth movement comes L frames after the picture shows it (the audio trails), L < 0 that it
comes early. A regression, not a raw cross-correlation of loudness and opening, because the
mouth opens before a sound starts and stays open after it: the windows' centring already holds
that relation for an in-sync clip, so an in-sync clip peaks at L = 0.

Confidence: the share of folds whose own best lag lies within one frame of the overall best.
The offset is applied (`resample.av_offset: auto`) only when it is at least one frame, the
confidence is at least `MIN_CONFIDENCE` and the audio predicts the mouth at all (r >=
`MIN_R`); otherwise the audio is left as it is and `meta.json` says why.
"""

from __future__ import annotations

import numpy as np

from speech2lip.data.audio import AUDIO_OFFSET, SAMPLES_PER_FRAME, context_indices

MAX_LAG = 6  # frames: +-0.24 s
MIN_CONFIDENCE = 0.6
MIN_R = 0.3
FOLDS = 5
RADIUS = 0  # the frame's own window (its middle, `_features`): context would absorb a lag
RIDGE = 10.0
COMPONENTS = 20


def detrended(opening: np.ndarray, valid: np.ndarray, window: int = 25) -> np.ndarray:
    """The opening `(n,)` minus its moving average over `window` frames (valid frames only):
    articulation, not slow drifts of head distance or expression."""
    x = np.where(valid, opening, 0.0).astype(np.float64)
    w = valid.astype(np.float64)
    kernel = np.ones(window)
    mean = np.convolve(x, kernel, "same") / np.maximum(np.convolve(w, kernel, "same"), 1e-9)
    return np.where(valid, opening - mean, 0.0)


def _features(mel: np.ndarray) -> np.ndarray:
    """The middle 25 ms (mel frames 8 and 9, centred on the frame) of mel windows `(n, 80,
    16)`, pooled to 20 bands and standardised: `(n, 20)`. Only the middle: with the whole
    0.2 s window (or neighbouring windows) the regression absorbs a lag of a few frames, and
    the curve is a plateau 5 frames wide instead of a peak (obama, macron)."""
    pooled = mel[:, :, 8:10].reshape(len(mel), 20, 4, 2).mean(axis=(2, 3))
    return (pooled - pooled.mean(axis=0)) / (pooled.std(axis=0) + 1e-6)


def lag_curve(
    mel: np.ndarray, opening: np.ndarray, valid: np.ndarray, max_lag: int = MAX_LAG
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated correlation of the predicted with the real (detrended) opening at each
    lag -max_lag..max_lag: overall `(2 max_lag + 1,)` and per fold `(FOLDS, 2 max_lag + 1)`.
    `mel` `(n, 80, 16)`: each frame's mel window; `valid` `(n,)`: frames with a face."""
    n = len(mel)
    feats = _features(np.asarray(mel, np.float64))
    _, _, vt = np.linalg.svd(feats[:: max(1, n // 2000)], full_matrices=False)
    z = feats @ vt[:COMPONENTS].T  # (n, C)
    target = detrended(np.asarray(opening, np.float64), np.asarray(valid, bool))
    rows = np.flatnonzero(valid[max_lag : n - max_lag]) + max_lag  # the same frames every lag
    folds = np.array_split(rows, FOLDS)
    lags = np.arange(-max_lag, max_lag + 1)
    overall, per_fold = np.zeros(len(lags)), np.zeros((FOLDS, len(lags)))
    for j, lag in enumerate(lags):
        ctx = context_indices(rows + AUDIO_OFFSET + lag, RADIUS, n)
        x = z[ctx].reshape(len(rows), -1)
        x = np.hstack([x, np.ones((len(rows), 1))])
        y = target[rows]
        pred = np.zeros(len(rows))
        start = 0
        for k, part in enumerate(folds):
            test = np.arange(start, start + len(part))
            start += len(part)
            train = np.setdiff1d(np.arange(len(rows)), test)
            gram = x[train].T @ x[train] + RIDGE * np.eye(x.shape[1])
            pred[test] = x[test] @ np.linalg.solve(gram, x[train].T @ y[train])
            per_fold[k, j] = _r(pred[test], y[test])
        overall[j] = _r(pred, y)
    return overall, per_fold


def estimate(mel: np.ndarray, opening: np.ndarray, valid: np.ndarray) -> dict:
    """The offset in frames (+: the audio trails the picture), its correlation, the
    correlation at lag 0, the confidence and the whole curve; None figures when the clip is
    too short to tell (fewer than 10 frames per fold)."""
    n_valid = int(np.asarray(valid, bool)[MAX_LAG : len(mel) - MAX_LAG].sum())
    if n_valid < 10 * FOLDS:
        return {"frames": 0, "r": None, "r_at_zero": None, "confidence": 0.0, "curve": []}
    overall, per_fold = lag_curve(mel, opening, valid)
    best = int(np.argmax(overall))
    agree = np.abs(np.argmax(per_fold, axis=1) - best) <= 1
    return {"frames": best - MAX_LAG, "r": float(overall[best]),
            "r_at_zero": float(overall[MAX_LAG]), "confidence": float(agree.mean()),
            "curve": [round(float(v), 4) for v in overall]}  # fmt: skip


def decide(found: dict, setting) -> tuple[int, str]:
    """How many frames to advance the audio by, and why: `setting` is `resample.av_offset`
    ('auto', or a number of frames that overrides the estimate)."""
    if setting != "auto":
        return int(setting), "set by resample.av_offset"
    if found["r"] is None:
        return 0, "clip too short to estimate"
    if found["frames"] == 0:
        return 0, "in sync"
    if found["r"] < MIN_R:
        return 0, f"not applied: the audio predicts the mouth too weakly (r {found['r']:.2f})"
    if found["confidence"] < MIN_CONFIDENCE:
        return 0, f"not applied: low confidence ({found['confidence']:.2f})"
    return int(found["frames"]), "estimated"


def shift_audio(wav: np.ndarray, frames: int) -> np.ndarray:
    """`wav` advanced by `frames` video frames (a trailing sound moves earlier; negative
    delays it), the same length, the gap filled with silence."""
    k = abs(int(frames)) * SAMPLES_PER_FRAME
    if k == 0:
        return wav
    k = min(k, len(wav))
    pad = np.zeros(k, wav.dtype)
    return np.concatenate([wav[k:], pad]) if frames > 0 else np.concatenate([pad, wav[:-k]])


def _r(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
