"""Audio -> lip shape: kernel ridge regression from the mel windows around a frame to its
lip-shape codes (`speech2lip.geometry.lipshape`), fitted in closed form on the train frames.

With a minute of one voice, a network trained on this target overfits within a few hundred
steps (on obama its held-out opening correlation fell from 0.62 to 0.47 between steps 500 and
1500). Closed-form regression on the standardised mel windows does not: cross-validated over
contiguous fifths of the train frames, the inner-lip opening it predicts correlated with the
real one at r = 0.57 (obama), 0.58 (macron), 0.85 (demo) for linear ridge and 0.64, 0.61, 0.88
for ridge with a Gaussian kernel (`GAMMA`; the penalty is `train.shape_ridge`), the default.
The features are reduced to their first `N_COMPONENTS` principal components, and at most
`MAX_ANCHORS` rows (train frames, each heard in several voices; evenly spread) carry the
kernel, so `model.pt` stays small and a frame costs one small matrix product.

Regression shrinks its predictions towards the mean (about 0.6x the real spread), the very thing
that leaves the mouth half shut. `calibrate` undoes it with gains measured without the frames
they are applied to (cross-validated predictions): a code the audio does not predict
(cross-validated r below `MIN_SKILL`: on obama a slow drift that went the other way on the test
split) is left at its mean, and the others are scaled by one common gain, so the predicted
opening swings as widely as the real one (`speech2lip.train.guidance`). One common gain leaves
the opening's correlation as it is; a gain per code that matched each code's spread scaled the
weakly predicted codes' noise up with them (macron, test split: r 0.69 -> 0.49).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

GAMMA = 0.5  # kernel exp(-GAMMA * |x - y|^2 / D) on D standardised features
N_COMPONENTS = 256  # principal components of the features the kernel sees
MAX_ANCHORS = 4000  # rows that carry the kernel (evenly spread when there are more). A
# minute heard in six voices is about 8000 rows; against the exact fit, 2000 anchors cost the
# cross-validated opening r 0.005-0.013 on obama, macron and the demo, 4000 at most 0.005
CHUNK_ROWS = 4000  # rows whose kernel against the anchors is formed at once (memory)
SVD_ROWS = 2000  # rows (evenly spread) the principal components are found from: their
# cost grows with the square of the rows (6810 rows, a minute heard in five voices: minutes)
MIN_SKILL = 0.1  # cross-validated r below which a code is predicted as its train mean
# The calibration's gain (`speech2lip.train.guidance.calibrate`): applied only where the
# cross-validated predicted opening follows the real one at least this well (an 8 s clip,
# hdtf, 180 train frames: r 0.01, and a gain of 3.3 on two weakly predicted codes drew doubled
# and vanishing lips) ...
MIN_OPENING_SKILL = 0.3
# ... and never above this (the real clips' gains: 1.2-1.5; a spread matched by 1 / r).
MAX_GAIN = 2.0


def _kernel(a: np.ndarray, b: np.ndarray, n_features: int) -> np.ndarray:
    d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    return np.exp(-GAMMA * np.maximum(d, 0) / n_features)


def _chunks(n: int) -> list[np.ndarray]:
    """Row indices `0..n-1` in runs of at most `CHUNK_ROWS`."""
    return np.array_split(np.arange(n), max(1, -(-n // CHUNK_ROWS)))


def standardiser(
    x: np.ndarray, parts: np.ndarray | None = None, pooled: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """The mean `(D,)` and divisor `(D,)` that standardise features `x` `(N, D)`.

    Each feature is divided by its own std, except those of a part (`parts` `(D,)`: each
    feature's part) listed in `pooled`, which share one std (one-hot phone shares: a rare class
    would otherwise weigh as much as a common one). Then each part is weighted so that the
    parts contribute equal shares of the total variance, which stays D: mel and phones count
    alike in the kernel's distance, and the kernel keeps its width."""
    mean = x.mean(axis=0, dtype=np.float64)  # summed in float64 without a float64 copy of x
    std = np.zeros(x.shape[1])
    for rows in _chunks(len(x)):  # x - mean at once would be that copy
        std += ((x[rows] - mean) ** 2).sum(axis=0)
    std = np.sqrt(std / len(x))
    if parts is None:
        return mean, std + 1e-6
    parts = np.asarray(parts)
    labels = np.unique(parts)
    for p in labels:
        mine = parts == p
        if p in pooled:
            std[mine] = np.sqrt(np.mean(std[mine] ** 2))
        std[mine] = (std[mine] + 1e-6) / np.sqrt(len(parts) / len(labels) / mine.sum())
    return mean, std


def principal_axes(sample: np.ndarray, count: int) -> np.ndarray:
    """The first `count` principal axes `(D, <= count)` of the rows of `sample` `(R, D)`: the
    right singular vectors of its largest singular values, found from the R x R Gram matrix
    (one matrix product and the top of its eigenvalues, instead of a full SVD of R x D; D is
    thousands of features). Axes of singular values near zero (fewer rows than `count`) are
    left out: they carry none of the sample's spread."""
    sample = np.asarray(sample, np.float64)
    top = [max(0, len(sample) - count), len(sample) - 1]  # the largest eigenvalues' indices
    values, vectors = scipy.linalg.eigh(sample @ sample.T, subset_by_index=top)
    values, vectors = values[::-1], vectors[:, ::-1]  # largest first
    keep = values > max(values[0], 0.0) * 1e-10
    return (sample.T @ vectors[:, keep]) / np.sqrt(values[keep])


def fit_ridge(
    features: np.ndarray,
    codes: np.ndarray,
    ridge: float,
    folds: int = 5,
    parts: np.ndarray | None = None,
    pooled: tuple[int, ...] = (),
    times: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The regressor of `codes` `(N, k)` on `features` `(N, ...)` (train frames, in time
    order): the feature mean and divisor `(D,)` (`standardiser` with `parts` and `pooled`),
    projection `(D, C)`, anchors `(M, C)`, weights `(M, k)`, code means `(k,)`, and the
    cross-validated predictions `cv` `(N, k)` (each fold predicted by a fit without it;
    contiguous folds in time) and each code's correlation with them. `ridge`: the penalty
    (kernel units). `times` `(N,)`: each row's frame, when rows repeat frames (the same frames
    heard in other voices): a fold then holds every copy of its frames, so no copy of a
    predicted frame is in its fit."""
    # the features stay as given (float32 from `train`) and are standardised a chunk at a
    # time: a few minutes of audio heard six ways is gigabytes of them
    x = np.asarray(features).reshape(len(features), -1)
    y = np.asarray(codes, np.float64)
    n_features = x.shape[1]
    mean, std = standardiser(x, parts, pooled)
    projection = principal_axes((x[:: -(-len(x) // SVD_ROWS)] - mean) / std, N_COMPONENTS)
    z = np.concatenate([((x[rows] - mean) / std) @ projection for rows in _chunks(len(x))])
    bias = y.mean(axis=0)
    y = y - bias
    anchors = np.unique(np.linspace(0, len(z) - 1, min(len(z), MAX_ANCHORS)).round().astype(int))

    totals = None  # every row's kernel sums against every anchor (`sums`), once

    def sums(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Over `rows`: sum of k_ra^T k_ra `(M, M)` and of k_ra^T y `(M, k)`, every anchor."""
        gram, rhs = np.zeros((len(anchors), len(anchors))), np.zeros((len(anchors), y.shape[1]))
        for chunk in _chunks(len(rows)):
            k_ra = _kernel(z[rows[chunk]], z[anchors], n_features)
            gram += k_ra.T @ k_ra
            rhs += k_ra.T @ y[rows[chunk]]
        return gram, rhs

    def solve(rows: np.ndarray, left_out: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Weights over the anchors among `rows` (subset of regressors when they are fewer);
        `left_out`: the rows that are not in `rows` (a fold): its sums are taken off every
        row's, so a fold's fit costs its own rows' kernels, not the other folds' again."""
        nonlocal totals
        keep = np.intersect1d(anchors, rows)
        k_aa = _kernel(z[keep], z[keep], n_features)
        if len(keep) == len(rows):  # exact kernel ridge
            return keep, np.linalg.solve(k_aa + ridge * np.eye(len(rows)), y[rows])
        if totals is None:
            totals = sums(np.arange(len(z)))
        gram, rhs = totals
        if left_out is not None:
            gram, rhs = (
                np.subtract(t, p, out=p) for t, p in zip(totals, sums(left_out), strict=True)
            )
        at = np.searchsorted(anchors, keep)
        gram = ridge * k_aa + gram[np.ix_(at, at)]
        return keep, np.linalg.solve(gram + 1e-8 * np.eye(len(keep)), rhs[at])

    keep, weight = solve(np.arange(len(z)))
    k = y.shape[1]
    cv, r = np.zeros_like(y), np.full(k, np.nan)
    times = np.arange(len(z)) if times is None else np.asarray(times)
    frames = np.unique(times)
    if folds >= 2 and len(frames) >= 4 * folds:
        for block in np.array_split(frames, folds):
            part = np.flatnonzero(np.isin(times, block))
            fold_keep, fold_weight = solve(np.setdiff1d(np.arange(len(z)), part), part)
            cv[part] = _kernel(z[part], z[fold_keep], n_features) @ fold_weight
        spread = cv.std(axis=0)
        r = np.array([np.corrcoef(cv[:, j], y[:, j])[0, 1] if spread[j] > 0 else np.nan
                      for j in range(k)])  # fmt: skip
    return {"mean": mean, "std": std, "projection": projection, "anchors": z[keep],
            "weight": weight, "bias": bias, "cv": cv + bias, "cv_r": r}  # fmt: skip


def skilled(fitted: dict[str, np.ndarray]) -> np.ndarray:
    """Which codes `(k,)` the audio predicts (cross-validated r >= `MIN_SKILL`)."""
    return np.nan_to_num(fitted["cv_r"], nan=-1.0) >= MIN_SKILL


def with_gains(
    fitted: dict[str, np.ndarray], gains: np.ndarray, centre: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """`fitted` with each code's prediction scaled by `gains` about `centre` `(k,)` (default:
    the codes' mean): prediction -> centre + gains * (prediction - centre)."""
    gains = np.asarray(gains, np.float64)
    centre = fitted["bias"] if centre is None else np.asarray(centre, np.float64)
    bias = centre + gains * (fitted["bias"] - centre)
    cv = centre + gains * (fitted["cv"] - centre)
    return {**fitted, "weight": fitted["weight"] * gains, "bias": bias, "cv": cv, "gain": gains}


class ShapeRegressor(nn.Module):
    """Audio windows `(B, n, rows, 16)` (mel and/or phone rows) -> lip-shape codes `(B, k)`: a
    fixed kernel regression (buffers, saved with the model; set by `load`, never trained by
    gradients).

    With phone rows (`closure_row`: the P/B/M class's row, `speech2lip.data.batches.phone_row`)
    each prediction is also pulled towards the subject's closed mouth `closed` by `closure`
    (`train.shape_closure`) times how surely the centre window hears P, B or M (its mean over
    the window's columns): the kernel hears five windows at once and smooths a closure one or
    two frames long away, where the real lips shut."""

    def __init__(self, n_features: int, k: int, closure_row: int | None = None) -> None:
        super().__init__()
        self.n_features, self.closure_row = n_features, closure_row
        c = min(N_COMPONENTS, n_features)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.register_buffer("projection", torch.zeros(n_features, c))
        self.register_buffer("anchors", torch.zeros(1, c))
        self.register_buffer("weight", torch.zeros(1, k))
        self.register_buffer("bias", torch.zeros(k))
        self.register_buffer("closed", torch.zeros(k))
        self.register_buffer("closure", torch.zeros(()))  # 0: no pull

    def load(self, fitted: dict[str, np.ndarray]) -> None:
        """Take a `fit_ridge` result (its anchor count may differ from the current one), and
        its `closed` code and `closure` weight where it has them (else no pull)."""
        fitted = {"closed": np.zeros(self.bias.shape), "closure": 0.0, **fitted}
        names = ("mean", "std", "projection", "anchors", "weight", "bias", "closed", "closure")
        for name in names:
            value = torch.as_tensor(np.asarray(fitted[name]), dtype=torch.float32)
            setattr(self, name, value.to(getattr(self, name).device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("projection", "anchors", "weight"):  # sized by the fit: take its shape
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        if prefix + "closure" not in state_dict:  # saved before the pull existed: none
            state_dict[prefix + "closed"] = torch.zeros_like(self.closed)
            state_dict[prefix + "closure"] = torch.zeros(())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, mel_context: Tensor) -> Tensor:
        z = ((mel_context.flatten(1).float() - self.mean) / self.std) @ self.projection
        d = (z**2).sum(1, keepdim=True) + (self.anchors**2).sum(1)[None] - 2 * z @ self.anchors.T
        out = torch.exp(-GAMMA * d.clamp(min=0) / self.n_features) @ self.weight + self.bias
        if self.closure_row is None:
            return out
        centre = mel_context[:, mel_context.shape[1] // 2, self.closure_row]
        heard = centre.float().mean(-1).clamp(0, 1)  # (B,): P, B or M in the centre window
        return torch.lerp(out, self.closed.expand_as(out), (self.closure * heard)[:, None])
