"""Lip-shape guidance for training: the per-frame lip-shape codes the lips are conditioned on,
and the audio -> lip-shape regressor the rendered lips follow (`speech2lip.models.shape`)."""

from __future__ import annotations

import logging
import time

import numpy as np

from speech2lip.config import TrainConfig
from speech2lip.data.audio import MEL_WINDOW, context_indices, low_pass
from speech2lip.data.batches import (
    AUDIO_OFFSET,
    audio_fields,
    audio_rows,
    audio_windows,
    read_audio,
)
from speech2lip.data.shards import WarpData
from speech2lip.geometry.lipshape import LipShapeBasis
from speech2lip.media import pitch_shift
from speech2lip.models.shape import (
    MAX_GAIN,
    MIN_OPENING_SKILL,
    fit_ridge,
    skilled,
    with_gains,
)

log = logging.getLogger(__name__)


def lip_shapes(
    data: WarpData, train_ids: np.ndarray, opts: TrainConfig, wav: np.ndarray | None = None
) -> tuple[np.ndarray, dict]:
    """Every frame's lip-shape codes `(N, shape_dim)` (basis from the train frames, aligned to
    the canonical frame) and the regressor fitted on the train frames' audio windows (the same
    windows the audio code sees: mel and/or phones, `train.model.features`). With the clip's
    audio `wav` (16 kHz, 640 samples per frame), also on the windows of that audio
    pitch-shifted by each of `opts.voice_shifts` semitones, and low-passed at each of
    `opts.voice_bands` Hz, with the same codes: another voice, or a narrower channel, saying
    the same moves the same lips."""
    t0 = time.monotonic()
    k, radius = opts.model.shape_dim, opts.model.audio_radius
    points = data.read_field("landmarks", np.arange(len(data))).astype(np.float64)
    basis = LipShapeBasis.of_subject(points, data.canonical["canonical_index"], train_ids, k)
    codes = basis.encode(points)
    ids = np.sort(train_ids)
    ctx = context_indices(ids + AUDIO_OFFSET, radius, len(data))
    heard = [read_audio(data, ctx.reshape(-1), opts.model.features).reshape(len(ids), -1)]
    for semitones in opts.voice_shifts if wav is not None else ():
        windows = audio_windows(pitch_shift(wav, semitones), opts.model.features,
                                f"the clip's audio shifted {semitones:+g} semitones")  # fmt: skip
        heard.append(windows[ctx].reshape(len(ids), -1))
    for cutoff in opts.voice_bands if wav is not None else ():
        windows = audio_windows(low_pass(wav, cutoff), opts.model.features,
                                f"the clip's audio below {cutoff:g} Hz")  # fmt: skip
        heard.append(windows[ctx].reshape(len(ids), -1))
    fields, rows = audio_fields(opts.model.features), audio_rows(opts.model.features)
    part = np.repeat(np.arange(len(rows)), np.asarray(rows) * MEL_WINDOW)  # one window's
    pooled = tuple(i for i, f in enumerate(fields) if f in ("phones", "ppg"))
    target = np.tile(codes[ids], (len(heard), 1))
    fitted = fit_ridge(np.concatenate(heard), target, opts.shape_ridge,
                       parts=np.tile(part, ctx.shape[1]), pooled=pooled,
                       times=np.tile(ids, len(heard)))  # fmt: skip
    if opts.shape_calibrate:
        fitted = calibrate(fitted, basis, target, opts.shape_centre)
    # what the prediction is pulled to where P, B or M is heard (`ShapeRegressor`)
    fitted["closed"], fitted["closure"] = basis.closed(codes[ids]), opts.shape_closure
    predicted, real = basis.opening(fitted["cv"][: len(ids)]), basis.opening(codes[ids])
    fitted["cv_opening_r"] = (float(np.corrcoef(predicted, real)[0, 1])
                              if predicted.std() > 0 and real.std() > 0 else None)  # fmt: skip
    log.info("train: lip-shape guidance: %d codes from %d train frames heard %d ways in %.1f s; "
             "cross-validated r per code %s, gains %s; the predicted opening follows the real "
             "one at r = %s over the train frames (cross-validated, own voice: a steadier "
             "figure than the test split's few seconds)", k, len(ids), len(heard),
             time.monotonic() - t0,
             np.round(fitted["cv_r"], 2).tolist(),
             np.round(fitted.get("gain", np.ones(k)), 2).tolist(),
             "n/a" if fitted["cv_opening_r"] is None
             else f"{fitted['cv_opening_r']:.2f}")  # fmt: skip
    return codes, fitted


def calibrate(fitted: dict, basis: LipShapeBasis, codes: np.ndarray, centre: float) -> dict:
    """Undo the regression's shrinkage: the codes the audio does not predict stay at their
    mean; the others are scaled by one common gain, so that the cross-validated predicted
    opening swings as widely as the real one (`codes`), at most `MAX_GAIN`, and not at all
    (gain 1) where that predicted opening follows the real one at r < `MIN_OPENING_SKILL`:
    scaling up what does not follow the mouth only draws noise at full size. The gain scales
    about a point `centre` of the way from the train frames' mean code to their closed mouth
    (the mean code of their least open tenth).

    About the closed mouth (1), a closed prediction stays closed, but every other one opens
    wider, the mean too: the cross-validated predicted opening of obama's and macron's train
    frames averaged 3 px (reference-frame pixels) more than the real one, and a voice the
    kernel finds unfamiliar, which falls back to that constant, opened wider still. About the
    mean (0) the average opening is the real one (the least landmark error on those
    predictions), but rendered, more frames go past what the lips can show shut, which costs
    opening correlation (macron's test split: 0.73 -> 0.61). `train.shape_centre` sets it;
    docs/benchmarks.md has the three measured."""
    mask = skilled(fitted).astype(np.float64)
    real = basis.opening(codes)
    closed = basis.closed(codes) * mask
    mean = codes.mean(axis=0) * mask
    predicted = basis.opening(fitted["cv"] * mask)  # train codes have mean 0
    skill = np.corrcoef(predicted, real)[0, 1] if predicted.std() > 0 else 0.0
    gain = 1.0
    if skill >= MIN_OPENING_SKILL:
        gain = min(real.std() / predicted.std(), MAX_GAIN)
    else:
        log.warning("train: the audio does not predict this clip's mouth opening "
                    "(cross-validated r %.2f, under %.1f): the lip-shape gain stays 1, so "
                    "the rendered mouth will follow new speech only a little. A longer clip "
                    "of the subject talking helps.", skill, MIN_OPENING_SKILL)  # fmt: skip
    return with_gains(fitted, mask * gain, centre=centre * closed + (1 - centre) * mean)
