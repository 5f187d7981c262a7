"""Evaluation metrics of talking-head videos: pure functions, arrays in, numbers out.

- Image fidelity against ground truth: `psnr` / `psnr_per_frame`, `ssim` (scikit-image, with
  Wang et al.'s settings).
- No-reference sharpness: `cpbd` (Narvekar & Karam 2011), our implementation of the authors'
  reference MATLAB code (`CPBD_compute.m`, 2009); see its docstring for what it matches.
- Mouth shape: `mouth_landmark_distance` (LMD) on a layout's lip points
  (`speech2lip.geometry.topology`).
- Lip sync: `distance_curve` and `lse` (LSE-D, LSE-C and the AV offset), exactly as
  syncnet_python's `SyncNetInstance.evaluate` and `calc_pdist` compute them; the SyncNet
  features themselves come from `speech2lip.evaluate.syncnet_v2`.

Images are `(H, W, 3)` RGB (uint8, peak 255, or float, peak 1); greyscale images `(H, W)`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage
from skimage.feature import canny
from skimage.metrics import structural_similarity

# --------------------------------------------------------------------------- PSNR and SSIM


def _peak(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"prediction {a.shape} and ground truth {b.shape} differ in shape")
    if (a.dtype == np.uint8) != (b.dtype == np.uint8):
        raise ValueError(f"mixed dtypes {a.dtype} and {b.dtype}: give both uint8 or both float")
    return 255.0 if a.dtype == np.uint8 else 1.0


def psnr_per_frame(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> NDArray:
    """PSNR in dB of each frame `(N,)`: frames `(N, H, W, 3)`, uint8 (peak 255) or float
    (peak 1), over all pixels or those of a boolean `mask` `(H, W)` (all 3 channels of each).
    A frame identical to its ground truth gives inf."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    peak = _peak(pred, gt)
    if pred.ndim != 4:
        raise ValueError(f"expected frames (N, H, W, C), got shape {pred.shape}")
    err = (pred.astype(np.float64) - gt.astype(np.float64)) ** 2
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != pred.shape[1:3]:
            raise ValueError(f"mask {mask.shape} does not match frames {pred.shape[1:3]}")
        if not mask.any():
            raise ValueError("mask selects no pixels")
        err = err[:, mask]  # (N, P, C)
    mse = err.reshape(len(err), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(peak**2 / mse)


def psnr(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> float:
    """PSNR in dB of one image `(H, W, 3)` (see `psnr_per_frame`); inf when identical."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 3:
        raise ValueError(f"expected an image (H, W, C), got shape {pred.shape}")
    return float(psnr_per_frame(pred[None], gt[None], mask)[0])


def ssim(pred: ArrayLike, gt: ArrayLike) -> float:
    """Mean SSIM of two images `(H, W, 3)` (uint8: data range 255; float: data range 1).

    scikit-image's `structural_similarity` with the settings of Wang et al. (2004): an 11x11
    Gaussian window of sigma 1.5, population covariances, K1 0.01, K2 0.03, averaged over the
    channels.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    peak = _peak(pred, gt)
    return float(
        structural_similarity(
            pred, gt, channel_axis=-1, data_range=peak, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
    )  # fmt: skip


# --------------------------------------------------------------------------------- CPBD

CPBD_BLOCK = 64  # block side, pixels
CPBD_EDGE_FRACTION = 0.002  # a block with more Canny edge pixels than this is an edge block
CPBD_BETA = 3.6  # slope of the probability of blur detection
CPBD_JNB_BIN = 63  # P_JNB = 63 %: the histogram bin of P_blur at w = w_JNB (1 - 1/e)
SOBEL_THRESHOLD = 2.0  # MATLAB `edge(I, 'sobel', 2, 'vertical')`: grey levels per pixel


def _runs(steps: np.ndarray, leftward: bool = False) -> np.ndarray:
    """`(H, W-1)` bool steps (step j: column j to j+1) -> `(H, W+1)` the number of consecutive
    True steps from each step on, going right (or left), with step s at column s + 1 and a zero
    column at each end (steps -1 and W-1, outside the image)."""
    if leftward:
        return _runs(steps[:, ::-1])[:, ::-1]
    run = np.zeros((steps.shape[0], steps.shape[1] + 2), np.int64)
    for j in range(steps.shape[1] - 1, -1, -1):
        run[:, j + 1] = np.where(steps[:, j], run[:, j + 2] + 1, 0)
    return run


def vertical_edges(gray: ArrayLike, rule: str = "matlab") -> NDArray:
    """Vertical edge pixels `(H, W)` bool, from the squared x-derivative `s` of the
    1/8-normalised Sobel kernel (replicated border), as CPBD's edge widths use them.

    `rule="matlab"`: the reference code's `edge(I, 'sobel', 2, 'vertical')`: s above 2^2
    (2 grey levels per pixel), thinned to horizontal local maxima; a tie of two equal maxima
    goes to the left one (MATLAB's tie rule is not documented). `rule="python-cpbd"`: the
    Python port's Octave-style edges: s above 2 sqrt(mean(s)), thinned to strict local maxima
    along x or y of the thresholded s (zero outside the image), so equal neighbours drop out.
    """
    img = np.asarray(gray, np.float64)
    s = (ndimage.sobel(img, axis=1, mode="nearest") / 8) ** 2
    if rule == "matlab":
        left = np.pad(s, ((0, 0), (1, 0)), mode="edge")[:, :-1]
        right = np.pad(s, ((0, 0), (0, 1)), mode="edge")[:, 1:]
        return (s > SOBEL_THRESHOLD**2) & (s > left) & (s >= right)
    if rule == "python-cpbd":
        t = np.pad(np.where(s > 2 * np.sqrt(s.mean()), s, 0), 1)
        c = t[1:-1, 1:-1]
        x_max = (c > t[1:-1, :-2]) & (c > t[1:-1, 2:])
        y_max = (c > t[:-2, 1:-1]) & (c > t[2:, 1:-1])
        return x_max | y_max
    raise ValueError(f"edge rule must be 'matlab' or 'python-cpbd', got {rule!r}")


def marziliano_widths(gray: ArrayLike, edges: ArrayLike | None = None) -> NDArray:
    """Edge widths `(H, W)` float64 in pixels (0 where there is no measured edge), Marziliano
    et al.'s method as CPBD's reference code (`marziliano_method` in `CPBD_compute.m`) runs it.

    Of the edge pixels (`edges`, default `vertical_edges(gray)`; the image border is never
    measured), only those whose gradient angle (`np.gradient`, as MATLAB's `gradient`; where
    the x-gradient is 0 the reference takes 0 degrees, and so do we) quantises to 0 or 180
    degrees in 45-degree steps (within 22.5 degrees of horizontal) are measured, along their
    row: from the edge pixel, walk left and right while the intensity keeps changing strictly
    in the edge's direction (at least 1, at most 101 pixels each side); the width is the
    distance between the two pixels where the walks stop. An edge pixel inside a monotone ramp
    rising over `w` steps gets `w`, one at the ramp's first or last pixel `w + 1`. As in the
    reference code (and python-cpbd), the row width is not corrected for the edge angle.
    """
    img = np.asarray(gray, np.float64)
    h, w = img.shape
    edges = vertical_edges(img) if edges is None else np.array(edges, bool)
    edges[[0, -1], :] = edges[:, [0, -1]] = False

    gy, gx = np.gradient(img)
    angle = np.where(gx != 0, np.degrees(np.arctan2(gy, gx)), 0.0)  # the reference's rule
    rising = edges & (np.abs(angle) < 22.5)  # intensity increases to the right
    falling = edges & (np.abs(angle) > 157.5)

    step = np.diff(img, axis=1)
    rows, cols = np.nonzero(rising | falling)
    up = rising[rows, cols]
    inc, dec = step > 0, step < 0
    # the walk right starts with step col + 1 (at column col + 2), the walk left with col - 2
    right_run = np.where(up, _runs(inc)[rows, cols + 2], _runs(dec)[rows, cols + 2])
    left_run = np.where(up, _runs(inc, True)[rows, cols - 1], _runs(dec, True)[rows, cols - 1])
    widths = np.zeros((h, w))
    widths[rows, cols] = 2 + np.minimum(right_run, 100) + np.minimum(left_run, 100)
    return widths


def cpbd(gray: ArrayLike, edges: str = "matlab") -> float:
    """CPBD sharpness in 0..1 (higher is sharper) of a greyscale image `(H, W)`, uint8 or
    float 0..255, H and W at least 64 (Narvekar & Karam, IEEE TIP 20(9), 2011).

    Follows the authors' reference MATLAB code (`CPBD_compute.m`): a Canny edge map
    (scikit-image `canny`, default settings, on the 0..255 image, as the Python port
    python-cpbd) marks the 64x64 blocks (whole blocks only, from the top-left) with more than
    0.2 % edge pixels as edge blocks; in each, the contrast (max - min, truncated to an integer)
    gives the just-noticeable-blur width w_JNB = 5 when <= 50 else 3, and each measured edge
    width w (`marziliano_widths`) a probability of blur detection
    P_blur = 1 - exp(-|w / w_JNB|^3.6). CPBD is the fraction of these edges in the 1 % histogram
    bins of P_blur up to P_JNB = 63 % (`round(100 P_blur) <= 63`), which takes in w = w_JNB,
    where P_blur = 1 - 1/e = 63.2 %.

    `edges` picks the edge pixels whose widths are measured (`vertical_edges`): "matlab", the
    reference code's Sobel call, or "python-cpbd", the pip package `cpbd` (1.0.7), which
    talking-head evaluation scripts commonly call; with the latter this function reproduced
    `cpbd.compute` to 1e-15 on 5 scikit-image sample images, 3 blurs each (checked by hand: the
    package is not a dependency). An image with no measured edge in an edge block (e.g. a
    constant image) gives 0.0, as both reference codes do. Not matched: MATLAB's own Canny
    (other smoothing, automatic thresholds) and its undocumented Sobel tie rule.
    """
    img = np.asarray(gray)
    if img.ndim != 2:
        raise ValueError(f"cpbd takes a greyscale image (H, W), got shape {img.shape}")
    h, w = img.shape
    if h < CPBD_BLOCK or w < CPBD_BLOCK:
        raise ValueError(f"cpbd needs an image of at least 64x64 pixels, got {h}x{w}")
    img = img.astype(np.float64)
    edge_map = canny(img)
    widths = marziliano_widths(img, vertical_edges(img, edges))
    n_edges = n_sharp = 0
    for r in range(0, h - CPBD_BLOCK + 1, CPBD_BLOCK):
        for c in range(0, w - CPBD_BLOCK + 1, CPBD_BLOCK):
            block = (slice(r, r + CPBD_BLOCK), slice(c, c + CPBD_BLOCK))
            if edge_map[block].sum() <= CPBD_EDGE_FRACTION * CPBD_BLOCK**2:
                continue
            contrast = int(img[block].max() - img[block].min())
            w_jnb = 5.0 if contrast <= 50 else 3.0
            bw = widths[block][widths[block] > 0]
            p_blur = 1 - np.exp(-(np.abs(bw / w_jnb) ** CPBD_BETA))
            n_edges += bw.size
            n_sharp += int((np.floor(100 * p_blur + 0.5) <= CPBD_JNB_BIN).sum())
    return n_sharp / n_edges if n_edges else 0.0


# ------------------------------------------------------------------------- landmark distance


def mouth_landmark_distance(pred_pts: ArrayLike, gt_pts: ArrayLike) -> float:
    """LMD: the mean Euclidean distance in pixels between predicted and ground-truth mouth
    landmarks `(N, K, 2)` (x, y pixels), after centring each frame's K points on their own mean
    (so a translation of the mouth costs nothing; scale and shape do), over points and frames."""
    pred, gt = np.asarray(pred_pts, np.float64), np.asarray(gt_pts, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"expected two (N, K, 2) arrays, got {pred.shape} and {gt.shape}")
    pred = pred - pred.mean(axis=1, keepdims=True)
    gt = gt - gt.mean(axis=1, keepdims=True)
    return float(np.linalg.norm(pred - gt, axis=-1).mean())


# ------------------------------------------------------------------------------ LSE-D, LSE-C

VSHIFT = 15  # syncnet_python's default search range, in video frames either way
PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance adds this to the difference


def distance_curve(video_feats: ArrayLike, audio_feats: ArrayLike, vshift: int = VSHIFT) -> NDArray:
    """Mean audio-visual distance at each offset, `(2 vshift + 1,)`, syncnet_python's
    `calc_pdist` followed by `evaluate`'s mean over windows.

    `video_feats` `(N, D)`: SyncNet lip features of the 5-frame windows starting at frames
    0..N-1; `audio_feats` `(M, D)`: audio features of the matching 0.2 s MFCC windows (in
    syncnet_python M = N). Entry j is the mean over windows i of
    `||v_i - a_(i + j - vshift) + 1e-6||` (the eps of torch's `pairwise_distance`), with a_k a
    zero vector outside 0..M-1: syncnet_python pads the audio features with vshift zero rows at
    each end (which gives the same thing when M >= N; for M < N we pad further with zeros,
    where syncnet_python would fail).
    """
    v, a = np.asarray(video_feats, np.float64), np.asarray(audio_feats, np.float64)
    if v.ndim != 2 or a.ndim != 2 or v.shape[1] != a.shape[1]:
        raise ValueError(f"expected features (N, D) and (M, D), got {v.shape} and {a.shape}")
    n, m = len(v), min(len(a), len(v) + vshift)
    padded = np.zeros((n + 2 * vshift, v.shape[1]))
    padded[vshift : vshift + m] = a[:m]
    return np.array(
        [np.linalg.norm(v - padded[j : j + n] + PAIRWISE_EPS, axis=1).mean()
         for j in range(2 * vshift + 1)]
    )  # fmt: skip


def lse(curve: ArrayLike, vshift: int = VSHIFT) -> dict[str, float | int]:
    """LSE-D, LSE-C and the AV offset from a `distance_curve` `(2 vshift + 1,)`, as
    syncnet_python's `evaluate` (`minval`, `conf`, `offset`) and Wav2Lip's LRS2 tables use them.

    `lse_d` = min(curve) (lower is better); `lse_c` = median(curve) - min(curve) (higher is
    better; the curve has an odd length, so the median is its middle value, as torch's);
    `offset` = vshift - argmin(curve) (first minimum) in video frames. Sign: a positive offset
    means the audio matching video window i is audio window i - offset, i.e. the audio runs
    ahead of the video; audio delayed by d frames gives offset -d.
    """
    curve = np.asarray(curve, np.float64)
    if curve.shape != (2 * vshift + 1,):
        raise ValueError(f"expected a curve of 2*{vshift}+1 distances, got shape {curve.shape}")
    k = int(np.argmin(curve))
    return {
        "lse_d": float(curve[k]),
        "lse_c": float(np.median(curve) - curve[k]),
        "offset": vshift - k,
    }


# ------------------------------------------------------------------------- articulation
def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


BLOCK_FRAMES = 10  # the bootstrap's runs of frames: 0.4 s, about where the real opening's
# autocorrelation has faded (0.14 / 0.03 / 0.02 at 10 frames on obama / macron / the demo)
DRAWS = 1000


def _blocks(n: int, block: int, draws: int, seed: int) -> np.ndarray | None:
    """Moving-block bootstrap indices `(draws, n // block * block)`: `n // block` runs of
    `block` consecutive frames per draw, drawn with replacement; None under 4 blocks."""
    if n < 4 * block:
        return None
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block + 1, size=(draws, n // block))
    return (starts[..., None] + np.arange(block)).reshape(draws, -1)


def _interval(values: np.ndarray, level: float, draws: int) -> list[float] | None:
    values = values[np.isfinite(values)]
    if len(values) < draws // 2:
        return None
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def r_interval(
    a: ArrayLike, b: ArrayLike, level: float = 0.95, block: int = BLOCK_FRAMES,
    draws: int = DRAWS, seed: int = 0,
) -> list[float] | None:  # fmt: skip
    """A `level` confidence interval of the Pearson r of two series `(n,)` (nan: missing), by a
    moving-block bootstrap: each resampled series is `n // block` runs of `block` consecutive
    frames drawn with replacement, so neighbouring frames, which move together, are never
    counted as independent evidence. None when the series span fewer than 4 blocks."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    idx = _blocks(min(len(a), len(b)), block, draws, seed)
    if idx is None:
        return None
    return _interval(np.array([_pearson(a[i], b[i]) for i in idx]), level, draws)


def r_gap_interval(
    ours: ArrayLike, theirs: ArrayLike, reference: ArrayLike, level: float = 0.95,
    block: int = BLOCK_FRAMES, draws: int = DRAWS, seed: int = 0,
) -> list[float] | None:  # fmt: skip
    """A `level` interval of r(ours, reference) - r(theirs, reference), the two correlations
    taken on the same resampled frames (`r_interval`'s bootstrap): when it spans 0, the
    frames measured do not tell the two apart."""
    a, b, c = (np.asarray(v, np.float64) for v in (ours, theirs, reference))
    idx = _blocks(min(len(a), len(b), len(c)), block, draws, seed)
    if idx is None:
        return None
    gaps = np.array([_pearson(a[i], c[i]) - _pearson(b[i], c[i]) for i in idx])
    return _interval(gaps, level, draws)


def articulation(opening: ArrayLike, reference: ArrayLike, max_lag: int = 5) -> dict:
    """How a mouth's opening over time `(n,)` (inner-lip distance, px; nan without a face)
    follows the reference's: Pearson r at lag 0 with its 95 % interval (`r_interval`), the
    amplitude (std over the reference's std: 1 opens as wide, 0.25 a quarter as wide) and the
    lag within +-`max_lag` frames where r is highest (positive: ours comes later). PSNR and SSIM
    barely see either."""
    ours, ref = np.asarray(opening, np.float64), np.asarray(reference, np.float64)
    n = min(len(ours), len(ref))
    ours, ref = ours[:n], ref[:n]
    ok = np.isfinite(ours) & np.isfinite(ref)
    spread = float(np.std(ref[ok])) if ok.sum() >= 3 else 0.0
    amplitude = float(np.std(ours[ok]) / spread) if spread > 0 else float("nan")
    by_lag = {}
    for lag in range(-max_lag, max_lag + 1):
        a = ours[lag:] if lag >= 0 else ours[:lag]
        b = ref[: n - lag] if lag >= 0 else ref[-lag:]
        by_lag[lag] = _pearson(a, b)
    finite = {k: v for k, v in by_lag.items() if np.isfinite(v)}
    best = max(finite, key=finite.get) if finite else 0

    def number(value: float) -> float | None:  # JSON has no nan
        return float(value) if np.isfinite(value) else None

    return {
        "opening_r": number(by_lag[0]),
        "opening_r_interval": r_interval(ours, ref),
        "opening_amplitude": number(amplitude),
        "opening_best_lag": int(best) if finite else None,
        "opening_best_r": number(finite.get(best, float("nan"))),
    }
