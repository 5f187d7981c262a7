"""Held-out evaluation during and after training: canonical-lips and mouth-box PSNR, how much
of the lip crop the composition covers, the audio-blind baselines (static mouth, mean mouth).
The sync expert's view of the generated test split is `evaluate`'s sync proxy (on the rendered
video), not training's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from speech2lip.data.batches import to_tensors
from speech2lip.data.shards import WarpData
from speech2lip.models.assembled import HOLE_ROUNDS, Speech2Lip, fill_holes


def _psnr(err: float, count: float) -> float:
    return 10 * math.log10(1.0 / max(err / max(count, 1), 1e-12))


def generate(
    model: Speech2Lip,
    data: WarpData,
    ids: np.ndarray,
    radius: int,
    device,
    iterations: int = 4,
    batch: int = 16,
) -> Iterator[tuple[np.ndarray, dict, torch.Tensor, torch.Tensor]]:
    """Render frames `ids` from their own audio over their own background: yields (ids, the
    batch's tensors, canonical lips `(b, 3, lh, lw)`, composed mouth boxes `(b, 3, eh, ew)`),
    in chunks of `batch`, with the render-time estimator and C2O from the learned D_c (kept in
    the batch as "learned_c2o", for `lip_coverage`)."""
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            part = ids[start : start + batch]
            b = to_tensors(data, part, radius, device, model.sizes.features)
            b["learned_c2o"] = model.c2o(b["relative_pose"], b["mouth_origin"],
                                         init=b["c2o_grid"], init_valid=b["c2o_mask"],
                                         iterations=iterations)  # fmt: skip
            composed, lips = model.render_mouth(
                b["mel_context"], b["time"], b["mouth"], b["mouth_origin"], b["relative_pose"],
                c2o=b["learned_c2o"],
            )  # fmt: skip
            yield part, b, lips, composed


def lip_coverage(
    model: Speech2Lip, b: dict, iterations: int = 4, fill_rounds: int = HOLE_ROUNDS
) -> tuple[float, float]:
    """How much of the lip crop the composition covers in batch `b`: (pixels of the mouth
    boxes well inside the crop's projection that get the generated lips, all such pixels). The
    rest shows the background frame's own mouth (over the test split: the ground truth's).
    The C2O `generate` drew the batch with is re-used (`b["learned_c2o"]`) where it is there."""
    if "learned_c2o" in b:
        grid, valid = b["learned_c2o"]
    else:
        with torch.no_grad():
            grid, valid = model.c2o(b["relative_pose"], b["mouth_origin"], init=b["c2o_grid"],
                                    init_valid=b["c2o_mask"], iterations=iterations)  # fmt: skip
    inner = (grid.abs() < 0.8).all(dim=-1)  # clear of the crop's feathered edge
    return float((fill_holes(grid, valid, fill_rounds)[1] & inner).sum()), float(inner.sum())


def heldout_scores(
    model: Speech2Lip,
    data: WarpData,
    ids: np.ndarray,
    radius: int,
    device,
) -> dict:
    """PSNR (dB) of the canonical lips (inside their masks) and of the composed mouth boxes
    on frames `ids`, and the share of the lip crop the composition covers."""
    lips_err = lips_count = mouth_err = mouth_count = covered = inside = 0.0
    for _, b, lips, composed in generate(model, data, ids, radius, device):
        c, n = lip_coverage(model, b)
        covered, inside = covered + c, inside + n
        m = b["canonical_mask"][:, None].float()
        lips_err += float((((lips - b["canonical_lips"]) ** 2) * m).sum())
        lips_count += float(m.sum()) * 3
        mouth_err += float(((composed - b["mouth"]) ** 2).sum())
        mouth_count += composed.numel()
    return {"lips_psnr_db": _psnr(lips_err, lips_count),
            "mouth_psnr_db": _psnr(mouth_err, mouth_count),
            "lip_coverage": covered / max(inside, 1.0)}  # fmt: skip


def lips_psnr(model: Speech2Lip, data: WarpData, ids: np.ndarray, radius: int, device) -> float:
    """Held-out PSNR (dB) of the canonical lips inside their valid masks."""
    return heldout_scores(model, data, ids, radius, device)["lips_psnr_db"]


def constant_lips_psnr(data: WarpData, ids: np.ndarray, lips: np.ndarray) -> float:
    """PSNR (dB) of one fixed canonical-lips image `(lh, lw, 3)` (0..255) against frames `ids`
    inside their masks: what a predictor that ignores the audio scores."""
    err, count = 0.0, 0.0
    for _, arrays in data.stream(ids, batch=32):
        m = arrays["canonical_mask"][..., None].astype(bool)
        diff = (arrays["canonical_lips"].astype(np.float64) - lips) / 255
        err += float((diff**2 * m).sum())
        count += float(m.sum()) * 3
    return _psnr(err, count)


def static_psnr(data: WarpData, ids: np.ndarray) -> float:
    """The "static mouth" baseline: the canonical frame's lips for every held-out frame."""
    canon = data[int(data.canonical["canonical_index"])]["canonical_lips"].astype(np.float64)
    return constant_lips_psnr(data, ids, canon)


def mean_mouth_psnr(data: WarpData, train_ids: np.ndarray, ids: np.ndarray) -> float:
    """A second baseline that ignores the audio: the mean canonical lips of the train frames
    for every held-out frame. A model that does not beat it has not learned from the audio."""
    total = None
    for _, arrays in data.stream(train_ids, batch=64):
        part = arrays["canonical_lips"].astype(np.float64).sum(axis=0)
        total = part if total is None else total + part
    return constant_lips_psnr(data, ids, total / len(train_ids))
