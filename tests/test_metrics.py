"""Evaluation metrics: hand-computed answers, agreement with the reference definitions, the
SyncNet checkpoint format and its error messages."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from speech2lip.errors import Speech2LipError
from speech2lip.evaluate.metrics import (
    cpbd,
    distance_curve,
    lse,
    marziliano_widths,
    mouth_landmark_distance,
    psnr,
    psnr_per_frame,
    ssim,
    vertical_edges,
)
from speech2lip.models.syncnet_v2 import (
    SyncNetV2,
    audio_input,
    lip_input,
    load_syncnet_v2,
    syncnet_features,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _image(rng: np.random.Generator, h: int = 64, w: int = 64) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a uint8 image, rounded back to uint8."""
    if sigma == 0:
        return img
    out = ndimage.gaussian_filter(img.astype(np.float64), sigma)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- PSNR and SSIM


def test_psnr_hand_computed(rng):
    gt = _image(rng)
    pred = np.where(gt > 250, gt - 5, gt + 5).astype(np.uint8)  # every value off by 5
    assert psnr(pred, gt) == pytest.approx(10 * np.log10(255**2 / 25))
    assert psnr(gt, gt) == np.inf
    f = np.full((8, 8, 3), 0.5)
    assert psnr(f + 0.1, f) == pytest.approx(20.0)  # float images: peak 1

    mask = np.tile(np.arange(64)[:, None] < 32, (1, 64))  # the top half
    half = np.where(mask[..., None], gt, 0).astype(np.uint8)  # errors outside the mask only
    assert psnr(half, gt, mask) == np.inf
    assert psnr(half, gt, ~mask) == pytest.approx(psnr(half[32:], gt[32:]))


def test_psnr_per_frame_matches_single_frames(rng):
    gt = np.stack([_image(rng) for _ in range(3)])
    pred = np.stack([_blur(g, s) for g, s in zip(gt, [0, 1, 2], strict=True)])
    per_frame = psnr_per_frame(pred, gt)
    assert per_frame.shape == (3,) and per_frame[0] == np.inf
    np.testing.assert_allclose(per_frame[1:], [psnr(pred[1], gt[1]), psnr(pred[2], gt[2])])


def test_psnr_bad_input(rng):
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(_image(rng, 64, 64), _image(rng, 32, 64))
    with pytest.raises(ValueError, match="mixed dtypes"):
        psnr(_image(rng), _image(rng) / 255)
    with pytest.raises(ValueError, match="selects no pixels"):
        psnr(_image(rng), _image(rng), np.zeros((64, 64), bool))


def test_ssim_hand_made_cases(rng):
    gt = _blur(_image(rng, 96, 96), 1)
    assert ssim(gt, gt) == pytest.approx(1.0)
    noisy = np.clip(gt + rng.normal(0, 10, gt.shape), 0, 255).astype(np.uint8)
    blurrier = [ssim(_blur(gt, s), gt) for s in (1, 2, 4)]
    assert ssim(noisy, gt) < 0.99
    assert blurrier == sorted(blurrier, reverse=True) and blurrier[0] < 0.99
    assert ssim(noisy, gt) == pytest.approx(ssim(gt, noisy))  # symmetric
    # uint8 (data range 255) and the same images as float 0..1 (data range 1) agree
    assert ssim(noisy / 255, gt / 255) == pytest.approx(ssim(noisy, gt))


# --------------------------------------------------------------------------------- CPBD


def _ramp(w: int, contrast: float = 255) -> np.ndarray:
    """A raised-cosine rise over `w` steps (w + 1 samples, strictly increasing)."""
    return contrast * (1 - np.cos(np.pi * np.arange(w + 1) / w)) / 2


def _two_ramp_image(w_left: int, w_right: int, contrast: float = 255) -> np.ndarray:
    """128x128, columns only: a rise over `w_left` steps at column 30 and a fall over `w_right`
    steps at column 94, so each 64x64 block column holds one edge."""
    row = np.zeros(128)
    row[30 : 31 + w_left] = _ramp(w_left, contrast)
    row[31 + w_left : 94] = contrast
    row[94 : 95 + w_right] = _ramp(w_right, contrast)[::-1]
    return np.tile(row, (128, 1))


@pytest.mark.parametrize("w", [2, 4, 6])
def test_marziliano_width_of_a_ramp(w):
    img = _two_ramp_image(w, w)
    widths = marziliano_widths(img)
    # one edge pixel per ramp on each row but the border rows, at the steepest (centre) pixel
    assert (widths > 0).sum(axis=1).tolist() == [0] + [2] * 126 + [0]
    assert set(np.nonzero(widths[64])[0]) == {30 + w // 2, 94 + w // 2}
    assert set(widths[widths > 0]) == {w}


def test_marziliano_width_from_a_given_edge_pixel():
    img = _two_ramp_image(6, 6)
    edges = np.zeros(img.shape, bool)
    edges[10, [30, 31, 34]] = True  # the ramp's first (minimum) pixel, inside it, inside it
    widths = marziliano_widths(img, edges)
    assert widths[10, [30, 31, 34]].tolist() == [7, 6, 6]  # w + 1 at the extremum itself


def test_cpbd_hand_computed():
    # contrast 255: w_JNB = 3, so width 2 (P_blur 0.21) is sharp, width 4 (0.94) is not;
    # width 3 has P_blur = 1 - 1/e, in the 63 % bin: sharp
    assert cpbd(_two_ramp_image(2, 2)) == 1.0
    assert cpbd(_two_ramp_image(4, 4)) == 0.0
    assert cpbd(_two_ramp_image(2, 4)) == 0.5  # 126 edges each
    assert cpbd(_two_ramp_image(4, 3)) == 0.5
    # contrast 40 (<= 50): w_JNB = 5, so width 4 (P_blur 0.36) and 5 are sharp, 6 (0.85) is not
    assert cpbd(_two_ramp_image(4, 5, contrast=40)) == 1.0
    assert cpbd(_two_ramp_image(6, 6, contrast=40)) == 0.0
    assert cpbd(_two_ramp_image(4, 4, contrast=40).astype(np.uint8)) == 1.0


def test_cpbd_decreases_with_blur(rng):
    img = np.full((256, 256), 128, np.uint8)
    for _ in range(60):  # random rectangles of random grey levels
        (y, x), (h, w) = rng.integers(0, 240, 2), rng.integers(8, 64, 2)
        img[y : y + h, x : x + w] = rng.integers(0, 256)
    scores = [cpbd(_blur(img, s)) for s in (0, 0.5, 1, 2)]
    assert scores[0] > 0.9
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False))

    from skimage import data  # a natural image, shipped with scikit-image

    scores = [cpbd(_blur(data.camera(), s)) for s in (0, 1, 2, 3)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False))


def test_cpbd_edge_cases():
    assert cpbd(np.full((64, 64), 100, np.uint8)) == 0.0  # no edges: 0.0, as the reference
    with pytest.raises(ValueError, match="at least 64x64 pixels, got 63x100"):
        cpbd(np.zeros((63, 100)))
    with pytest.raises(ValueError, match=r"greyscale image \(H, W\)"):
        cpbd(np.zeros((64, 64, 3)))
    with pytest.raises(ValueError, match="edge rule"):
        cpbd(np.zeros((64, 64)), edges="canny")


def test_vertical_edge_rules_on_a_step():
    step = np.zeros((64, 64))
    step[:, 32:] = 200  # a perfect step: two equal Sobel maxima per row (columns 31, 32)
    matlab = vertical_edges(step)
    assert matlab.sum(axis=1).tolist() == [1] * 64 and matlab[:, 31].all()
    assert not vertical_edges(step, "python-cpbd").any()  # strict maxima drop the tie
    ramp = _two_ramp_image(4, 4)
    assert (vertical_edges(ramp) == vertical_edges(ramp, "python-cpbd")).all()


# ------------------------------------------------------------------------- landmark distance


def test_mouth_landmark_distance(rng):
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    circle = 10 * np.stack([np.cos(angles), np.sin(angles)], axis=-1)  # radius 10 px
    gt = circle[None] + rng.uniform(0, 200, (5, 1, 2))  # 5 frames, each elsewhere
    moved = gt + rng.uniform(-30, 30, (5, 1, 2))  # a different translation per frame
    assert mouth_landmark_distance(moved, gt) == pytest.approx(0.0, abs=1e-9)
    centre = gt.mean(axis=1, keepdims=True)
    scaled = centre + 1.2 * (gt - centre) + 7.0
    assert mouth_landmark_distance(scaled, gt) == pytest.approx(0.2 * 10)
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        mouth_landmark_distance(gt[:, :10], gt)


def _calc_pdist_mean(video: np.ndarray, audio: np.ndarray, vshift: int) -> np.ndarray:
    """syncnet_python's `calc_pdist` and mean over windows, restated with the same torch ops."""
    v, a = torch.from_numpy(video), torch.from_numpy(audio)
    padded = F.pad(a, (0, 0, vshift, vshift))
    win = 2 * vshift + 1
    dists = [F.pairwise_distance(v[[i]].repeat(win, 1), padded[i : i + win]) for i in range(len(v))]
    return torch.stack(dists, 1).mean(1).numpy()


def test_distance_curve_matches_calc_pdist(rng):
    video, audio = rng.normal(size=(40, 16)), rng.normal(size=(40, 16))
    for vshift in (15, 3):
        curve = distance_curve(video, audio, vshift)
        assert curve.shape == (2 * vshift + 1,)
        np.testing.assert_allclose(curve, _calc_pdist_mean(video, audio, vshift), rtol=1e-12)
    longer = np.concatenate([audio, rng.normal(size=(5, 16))])  # M > N: used as there
    np.testing.assert_allclose(distance_curve(video, longer), _calc_pdist_mean(video, longer, 15))
    # M < N (syncnet_python would fail): missing audio features count as zeros
    padded = np.concatenate([audio[:30], np.zeros((10, 16))])
    np.testing.assert_allclose(distance_curve(video, audio[:30]), distance_curve(video, padded))


def test_offset_sign_and_lse_d_of_shifted_features(rng):
    n, d = 50, 8
    seq = rng.normal(size=(n + 3, d))
    video, audio_ahead = seq[:n], seq[3:]  # audio window k = video window k + 3
    curve = distance_curve(video, audio_ahead)
    assert (scores := lse(curve))["offset"] == 3
    # at that offset video windows 0..2 meet the zero padding, the rest their exact match
    eps = 1e-6
    expected = (np.linalg.norm(video[:3] + eps, axis=1).sum() + (n - 3) * eps * np.sqrt(d)) / n
    assert scores["lse_d"] == pytest.approx(expected)
    assert scores["lse_c"] == pytest.approx(np.median(curve) - expected)

    audio_late = np.concatenate([rng.normal(size=(2, d)), video[:-2]])  # audio delayed 2 frames
    assert lse(distance_curve(video, audio_late))["offset"] == -2


def test_lse_of_a_hand_made_curve():
    assert lse([5, 4, 1, 4, 6], vshift=2) == {"lse_d": 1.0, "lse_c": 3.0, "offset": 0}
    assert lse([3, 1, 2, 5, 5], vshift=2) == {"lse_d": 1.0, "lse_c": 2.0, "offset": 1}
    assert lse([1, 1, 2, 5, 5], vshift=2)["offset"] == 2  # the first minimum
    with pytest.raises(ValueError, match=r"2\*15\+1"):
        lse(np.zeros(30))


# ---------------------------------------------------------------------- SyncNet (syncnet_v2)


@pytest.fixture(scope="module")
def syncnet() -> SyncNetV2:
    torch.manual_seed(0)
    return SyncNetV2().eval()


def test_syncnet_state_dict_keys_match_syncnet_python(syncnet):
    # SyncNetModel.S: conv, BN, ReLU(, MaxPool) groups -> convs at 0, 4, 8, 11, 14, 18 and
    # BNs one later, in both conv stacks; fc: Linear 0, BatchNorm1d 1, ReLU, Linear 3
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = set()
    for stack in ("netcnnaud", "netcnnlip"):
        for i in (0, 4, 8, 11, 14, 18):
            expected |= {f"{stack}.{i}.weight", f"{stack}.{i}.bias"}
            expected |= {f"{stack}.{i + 1}.{p}" for p in bn}
    for fc in ("netfcaud", "netfclip"):
        expected |= {f"{fc}.0.weight", f"{fc}.0.bias", f"{fc}.3.weight", f"{fc}.3.bias"}
        expected |= {f"{fc}.1.{p}" for p in bn}
    state = syncnet.state_dict()
    assert set(state) == expected
    shapes = {
        "netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4),
        "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.4.weight": (256, 96, 1, 5, 5),
        "netcnnlip.18.weight": (512, 256, 1, 6, 6), "netfclip.3.weight": (1024, 512),
    }  # fmt: skip
    assert {k: tuple(state[k].shape) for k in shapes} == shapes


def test_syncnet_branch_shapes(syncnet):
    with torch.inference_mode():
        assert syncnet.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert syncnet.forward_lip(255 * torch.rand(1, 3, 5, 224, 224)).shape == (1, 1024)


def test_syncnet_checkpoint_round_trip(syncnet, tmp_path):
    state = syncnet.state_dict()
    torch.save(state, tmp_path / "syncnet_v2.model")
    loaded = load_syncnet_v2(tmp_path / "syncnet_v2.model")
    assert not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    # a DataParallel prefix, and files without num_batches_tracked (PyTorch < 0.4.1), load too
    old = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.model")
    loaded = load_syncnet_v2(tmp_path / "old.model")
    assert torch.equal(loaded.netcnnlip[0].weight, state["netcnnlip.0.weight"])


def test_syncnet_checkpoint_errors(syncnet, tmp_path):
    missing = tmp_path / "nowhere" / "syncnet_v2.model"
    with pytest.raises(Speech2LipError, match="not found") as err:
        load_syncnet_v2(missing)
    for text in (str(missing), "syncnet_v2.model", "evaluate.syncnet", "config.yaml"):
        assert text in str(err.value)
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"\x00 not a checkpoint " * 10)
    with pytest.raises(Speech2LipError, match=re.escape(f"{corrupt}: not a readable PyTorch")):
        load_syncnet_v2(corrupt)
    foreign = tmp_path / "foreign.model"
    state = dict(syncnet.state_dict())
    state["extra.weight"] = state.pop("netfclip.3.weight")
    torch.save(state, foreign)
    with pytest.raises(Speech2LipError, match="1 missing keys.*1 unexpected") as err:
        load_syncnet_v2(foreign)
    assert str(foreign) in str(err.value)
    state = dict(syncnet.state_dict(), **{"netfclip.3.weight": torch.zeros(512, 512)})
    torch.save(state, foreign)
    with pytest.raises(Speech2LipError, match="not a syncnet_python SyncNet checkpoint"):
        load_syncnet_v2(foreign)
    torch.save(torch.zeros(3), foreign)
    with pytest.raises(Speech2LipError, match="expected a state dict"):
        load_syncnet_v2(foreign)


def test_lip_input_windows_are_bgr_0_255(rng):
    crops = rng.integers(0, 256, (7, 224, 224, 3), dtype=np.uint8)
    assert (x := lip_input(crops)).shape == (3, 3, 5, 224, 224) and x.dtype == torch.float32
    for i, k in [(0, 0), (1, 3), (2, 4)]:
        for c in range(3):  # channel 0 is blue (crops[..., 2])
            assert torch.equal(x[i, c, k], torch.from_numpy(crops[i + k, :, :, 2 - c]).float())
    with pytest.raises(ValueError, match="224, 224, 3"):
        lip_input(crops[:, :96, :96])


def test_audio_input_windows(rng):
    import python_speech_features

    t = 9  # frames of 640 samples -> 4t - 1 MFCC frames -> t - 5 windows
    pcm = (rng.normal(0, 3000, t * 640)).astype(np.int16)
    windows = audio_input(pcm)
    assert windows.shape == (t - 5, 1, 13, 20)
    mfcc = python_speech_features.mfcc(pcm, 16000).T  # as syncnet_python calls it
    for i in range(t - 5):
        np.testing.assert_allclose(windows[i, 0], mfcc[:, 4 * i : 4 * i + 20], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(audio_input(pcm / 32768), windows, rtol=1e-5, atol=1e-4)


def test_syncnet_features_and_lse(syncnet, rng):
    crops = rng.integers(0, 256, (8, 224, 224, 3), dtype=np.uint8)
    wav = rng.normal(0, 0.1, 8 * 640 + 100)
    video, audio = syncnet_features(syncnet, crops, wav, batch=2)  # n = 8 - 5 windows
    assert video.shape == audio.shape == (3, 1024)
    whole_video, whole_audio = syncnet_features(syncnet, crops, wav)  # one batch
    np.testing.assert_allclose(video, whole_video, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(audio, whole_audio, rtol=1e-4, atol=1e-4)
    scores = lse(distance_curve(video, audio))
    assert np.isfinite(scores["lse_d"]) and scores["lse_c"] >= 0
    assert -15 <= scores["offset"] <= 15
    with pytest.raises(ValueError, match="need 6 frames"):
        syncnet_features(syncnet, crops, wav[:3000])


def test_articulation_sees_amplitude_correlation_and_lag():
    from speech2lip.evaluate.metrics import articulation

    t = np.arange(200)
    gt = 10 + 5 * np.sin(t / 6.0) + np.sin(t / 1.7)
    half = 10 + 0.25 * (gt - 10)  # follows exactly, a quarter as wide: PSNR would love it
    got = articulation(half, gt)
    assert got["opening_r"] == pytest.approx(1.0) and got["opening_amplitude"] == pytest.approx(
        0.25
    )
    assert got["opening_best_lag"] == 0
    late = np.roll(gt, 3)  # ours 3 frames late
    late[:3] = np.nan  # and no face there
    got = articulation(late, gt)
    assert got["opening_best_lag"] == 3 and got["opening_best_r"] == pytest.approx(1.0)
    assert got["opening_r"] < 0.9
    still = articulation(np.full(200, 10.0), gt)  # a mouth that never moves
    assert still["opening_amplitude"] == 0.0 and still["opening_r"] is None


def test_the_opening_r_interval_holds_the_truth_and_narrows_with_more_frames():
    from speech2lip.evaluate.metrics import articulation, r_interval

    rng = np.random.default_rng(1)

    def pair(n):  # a smooth real opening and a copy with smooth noise: r about 0.6
        def smooth(x):
            return np.convolve(x, np.ones(5) / 5, mode="same")

        gt = smooth(rng.normal(size=n))
        return gt + 1.3 * gt.std() * smooth(rng.normal(size=n)) / 0.45, gt

    short, long = r_interval(*pair(100)), r_interval(*pair(2000))
    assert short[0] < 0.6 < short[1] and long[0] < 0.6 < long[1]
    assert long[1] - long[0] < 0.5 * (short[1] - short[0])  # 20x the frames: much narrower
    gt = pair(200)[1]
    assert r_interval(gt, gt) == pytest.approx([1.0, 1.0])
    assert r_interval(gt[:39], gt[:39]) is None  # under 4 runs of 10 frames
    assert articulation(gt, gt)["opening_r_interval"] == pytest.approx([1.0, 1.0])
    assert r_interval(np.full(200, np.nan), gt) is None  # no face anywhere: nothing to say


def test_the_gap_interval_tells_a_better_mouth_from_a_worse_one_and_not_from_itself():
    from speech2lip.evaluate.metrics import r_gap_interval

    rng = np.random.default_rng(2)
    t = np.arange(400)
    gt = np.sin(t / 4.0) + 0.5 * np.sin(t / 1.9)
    good, bad = gt + 0.3 * rng.normal(size=400), gt + 3.0 * rng.normal(size=400)
    lo, hi = r_gap_interval(good, bad, gt)
    assert lo > 0  # told apart
    lo, hi = r_gap_interval(good, good + 1e-9 * rng.normal(size=400), gt)
    assert lo <= 0 <= hi and hi - lo < 1e-6  # the same mouth: a gap of nothing
