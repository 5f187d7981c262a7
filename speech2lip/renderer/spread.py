"""Another voice's mouth as wide as the subject's own (`render.match_spread`).

The audio -> lip-shape regression (`speech2lip.models.shape`) falls back towards its mean for a
voice it finds unfamiliar: obama's mouth driven by a French recording swung 0.59x as widely as
with his own speech, and videos driven by new speech looked almost shut. Over the driving
audio's speech frames, the spread of the opening it predicts is compared with the spread it
predicted from the subject's own speech in training (`ShapeRegressor.spread`), and every
frame's lip-shape codes are scaled about the regression's mean by their ratio, within
`GAIN_RANGE`. One gain per file: when the mouth opens and closes (its correlation with the
speech) is unchanged; only how far.
"""

from __future__ import annotations

import logging

import numpy as np

from speech2lip.models.shape import MIN_SPEECH_FRAMES

log = logging.getLogger(__name__)

GAIN_RANGE = (0.5, 2.0)  # a driving file's lip-shape gain stays within this
BATCH = 1024  # frames whose lip shapes are predicted at once


def shape_basis(data, k: int):
    """The lip-shape basis training conditioned the lips on (`LipShapeBasis`), fitted again
    from the same train-split landmarks."""
    from speech2lip.geometry.lipshape import LipShapeBasis

    points = data.read_field("landmarks", np.arange(len(data))).astype(np.float64)
    reference = points[int(data.canonical["canonical_index"])]
    return LipShapeBasis.fit(points[data.split_ids("train")], reference, k)


def predicted_codes(model, contexts: np.ndarray, device: str) -> np.ndarray:
    """The lip-shape codes `(N, k)` the model's regression predicts from the audio windows
    around each frame `contexts` `(N, 2r+1, rows, 16)` (before any rest blend)."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(contexts), BATCH):
            x = torch.as_tensor(contexts[start : start + BATCH], device=device)
            out.append(model.shape(x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.shape_dim), np.float32)


def spread_gain(model, data, windows: np.ndarray, prob: np.ndarray, device: str) -> dict:
    """How much to scale the lip-shape codes of driving audio (windows `(N, rows, 16)`, speech
    probability `prob` `(N,)`) by: {"gain", "own_px", "driving_px", "speech_frames",
    "reason"}. The gain is 1 (and "reason" says why) without lip-shape guidance, for a model
    trained before the own spread was measured, with under `MIN_SPEECH_FRAMES` speech frames,
    or when the predicted opening does not move."""
    out = {"gain": 1.0, "own_px": None, "driving_px": None, "speech_frames": 0, "reason": None}
    if model.shape is None:
        return {**out, "reason": "no lip-shape guidance"}
    own = float(model.shape.spread)
    if own <= 0:
        return {**out, "reason": "model.pt predates the own spread: re-run train"}
    speech = np.asarray(prob) >= 0.5
    out.update(own_px=own, speech_frames=int(speech.sum()))
    if speech.sum() < MIN_SPEECH_FRAMES:
        return {**out, "reason": f"under {MIN_SPEECH_FRAMES} speech frames"}
    from speech2lip.renderer import mel_contexts

    ctx = mel_contexts(windows, model.sizes.audio_radius)[speech]
    codes = predicted_codes(model, ctx, device)
    driving = float(shape_basis(data, model.shape_dim).opening(codes).std())
    out["driving_px"] = driving
    if driving <= 1e-6:
        return {**out, "reason": "the predicted opening does not move"}
    return {**out, "gain": float(np.clip(own / driving, *GAIN_RANGE))}
