"""Lip-shape guidance: aligned lip shapes and their codes, the audio -> shape regression, and the
lip model conditioned on them (trained on the ground truth's codes, rendered from the audio's)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from speech2lip.config import ModelSizes, TrainConfig
from speech2lip.data.batches import to_tensors
from speech2lip.data.shards import WarpData
from speech2lip.errors import Speech2LipError
from speech2lip.geometry.lipshape import LipShapeBasis, align
from speech2lip.geometry.topology import FAN68, MEDIAPIPE
from speech2lip.models.assembled import Speech2Lip
from speech2lip.models.shape import ShapeRegressor, fit_ridge, skilled, with_gains

GUIDED = ModelSizes(audio_dim=8, audio_radius=1, uv_freqs=2, time_freqs=0, lips_width=16,
                    lips_layers=2, lips_skip=0, blend_channels=(4, 8), shape_dim=3)  # fmt: skip


def similarity(points: np.ndarray, angle: float, scale: float, shift) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]]) * scale + np.asarray(shift)


def talking_face(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """FAN-68 landmarks of a face whose inner lower lip drops by `opening` px per frame, seen
    under a different similarity transform (head motion) in every frame."""
    rng = np.random.default_rng(seed)
    face = rng.uniform(100, 300, (68, 2))
    face[66] = face[62] + (0, 2)  # a mouth nearly shut in the first frame
    opening = rng.uniform(0, 10, n)
    frames = np.repeat(face[None], n, axis=0)
    frames[:, 56:59, 1] += opening[:, None]  # outer lower lip
    frames[:, 65:68, 1] += opening[:, None]  # inner lower lip (66 is the inner-lip centre)
    moved = np.stack([similarity(f, rng.uniform(-0.3, 0.3), rng.uniform(0.8, 1.2),
                                 rng.uniform(-20, 20, 2)) for f in frames])  # fmt: skip
    return moved, opening


def test_align_undoes_a_similarity_transform_on_the_stable_points():
    ref = np.random.default_rng(1).uniform(0, 500, (478, 2))
    moved = np.stack([similarity(ref, 0.4, 1.3, (10, -5)), similarity(ref, -1.0, 0.7, (0, 50))])
    np.testing.assert_allclose(align(moved, ref, MEDIAPIPE.stable), [ref, ref], atol=1e-6)


def test_lip_shape_codes_see_the_mouth_and_not_the_head():
    points, opening = talking_face(60)
    basis = LipShapeBasis.fit(points[:40], points[0], k=2)
    codes = basis.encode(points)
    assert codes.shape == (60, 2) and codes.dtype == np.float32
    assert abs(np.corrcoef(codes[:, 0], opening)[0, 1]) > 0.999  # the head motion is gone
    assert codes[:40].std(axis=0) == pytest.approx([1, 0], abs=1e-3)  # whitened; one motion
    aligned = align(points, points[0], FAN68.stable)
    want = np.linalg.norm(aligned[:, 62] - aligned[:, 66], axis=-1)
    assert np.ptp(want) > 9  # the opening survives the alignment
    np.testing.assert_allclose(basis.opening(codes), want, atol=1e-3)
    rebuilt = LipShapeBasis(**basis.arrays())
    np.testing.assert_allclose(rebuilt.encode(points), codes, atol=1e-5)
    assert rebuilt.decode(codes).shape == (60, len(FAN68.lips), 2)
    with pytest.raises(Speech2LipError, match="too few"):
        LipShapeBasis.fit(points[:5], points[0], k=4)


def test_kernel_ridge_predicts_and_knows_what_it_cannot_predict():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40))
    signal = np.tanh(x[:, :3] @ np.array([1.0, -0.5, 0.25]))  # not linear: the kernel copes
    y = np.stack([signal + 0.2 * rng.normal(size=300), rng.normal(size=300)], axis=1)
    fitted = fit_ridge(x, y, ridge=0.3)
    assert fitted["cv"].shape == (300, 2)
    assert fitted["cv_r"][0] > 0.6 and abs(fitted["cv_r"][1]) < 0.15
    assert skilled(fitted).tolist() == [True, False]
    regressor = ShapeRegressor(40, 2)
    regressor.load(fitted)
    test = rng.normal(size=(50, 40))
    got = regressor(torch.as_tensor(test, dtype=torch.float32).reshape(50, 1, 5, 8)).numpy()
    want = np.tanh(test[:, :3] @ np.array([1.0, -0.5, 0.25]))
    assert np.corrcoef(got[:, 0], want)[0, 1] > 0.7  # unseen frames
    half = with_gains(fitted, np.array([0.5, 0.0]), centre=np.array([1.0, 0.0]))
    regressor.load(half)
    scaled = regressor(torch.as_tensor(test, dtype=torch.float32).reshape(50, 1, 5, 8)).numpy()
    np.testing.assert_allclose(scaled[:, 0], 1 + 0.5 * (got[:, 0] - 1), atol=1e-4)
    np.testing.assert_allclose(scaled[:, 1], 0, atol=1e-6)
    np.testing.assert_allclose(half["cv"][:, 0], 1 + 0.5 * (fitted["cv"][:, 0] - 1))


def test_kernel_ridge_is_formed_in_chunks_and_exact_below_the_anchor_cap(monkeypatch):
    from speech2lip.models import shape

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12))
    y = np.stack([np.sin(x[:, 0]) + 0.1 * rng.normal(size=300), x[:, 1] ** 2], axis=1)

    def by_hand(fitted, rows, anchors):  # the fit's own standardised, projected features
        z = ((x - fitted["mean"]) / fitted["std"]) @ fitted["projection"]
        k_ra = shape._kernel(z[rows], z[anchors], 12)
        k_aa = shape._kernel(z[anchors], z[anchors], 12)
        target = y[rows] - y.mean(axis=0)
        if len(anchors) == len(rows):
            return np.linalg.solve(k_aa + 0.3 * np.eye(len(rows)), target)
        gram = k_ra.T @ k_ra + 0.3 * k_aa + 1e-8 * np.eye(len(anchors))
        return np.linalg.solve(gram, k_ra.T @ target)

    exact = fit_ridge(x, y, ridge=0.3, folds=0)  # 300 rows, under the cap: every row
    np.testing.assert_allclose(exact["weight"], by_hand(exact, np.arange(300), np.arange(300)),
                               rtol=1e-6, atol=1e-8)  # fmt: skip
    monkeypatch.setattr(shape, "MAX_ANCHORS", 90)
    monkeypatch.setattr(shape, "CHUNK_ROWS", 37)  # 9 chunks, the last one short
    mean, div = shape.standardiser(x.astype(np.float32))  # summed in chunks, in float64
    np.testing.assert_allclose(mean, x.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(div, x.std(axis=0) + 1e-6, rtol=1e-5)
    fitted = fit_ridge(x, y, ridge=0.3, folds=0)
    anchors = np.unique(np.linspace(0, 299, 90).round().astype(int))
    assert len(fitted["anchors"]) == 90
    np.testing.assert_allclose(fitted["weight"], by_hand(fitted, np.arange(300), anchors),
                               rtol=1e-6, atol=1e-8)  # fmt: skip
    fitted = fit_ridge(x, y, ridge=0.3, folds=5)  # a fold's fit: the other 240 rows
    z = ((x - fitted["mean"]) / fitted["std"]) @ fitted["projection"]
    for part in (np.arange(60), np.arange(120, 180)):  # (its sums: every row's less the fold's)
        rows = np.setdiff1d(np.arange(300), part)
        keep = np.intersect1d(anchors, rows)
        want = shape._kernel(z[part], z[keep], 12) @ by_hand(fitted, rows, keep) + y.mean(axis=0)
        np.testing.assert_allclose(fitted["cv"][part], want, rtol=1e-5, atol=1e-6)


def test_principal_axes_from_the_gram_matrix_are_the_svds():
    from speech2lip.models.shape import principal_axes

    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 30)) @ rng.normal(size=(30, 400)) + 0.01 * rng.normal(size=(120, 400))
    axes = principal_axes(x, 20)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    assert axes.shape == (400, 20)
    np.testing.assert_allclose(axes.T @ axes, np.eye(20), atol=1e-9)  # orthonormal
    same = np.abs((axes * vt[:20].T).sum(0))  # each axis the SVD's (up to its sign), in order
    np.testing.assert_allclose(same, 1, atol=1e-9)
    few = principal_axes(x[:8], 20)  # fewer rows than axes asked for: only the rows' span
    assert few.shape == (400, 8)
    np.testing.assert_allclose(x[:8] @ few @ few.T, x[:8], atol=1e-9)


def test_calibration_opens_the_predicted_mouth_as_wide_as_the_real_one():
    from speech2lip.train.guidance import calibrate

    points, opening = talking_face(200, seed=3)
    basis = LipShapeBasis.fit(points, points[0], k=1)
    codes = basis.encode(points)
    rng = np.random.default_rng(4)
    heard = opening[:, None] + rng.normal(scale=3.0, size=(200, 6))  # noisy "audio"
    fitted = fit_ridge(heard, codes, ridge=1.0)
    shrunk = basis.opening(fitted["cv"]).std() / basis.opening(codes).std()
    assert shrunk < 0.95  # regression shrinks towards the mean
    wide = calibrate(fitted, basis, codes, centre=0.5)
    assert wide["gain"][0] > 1
    assert basis.opening(wide["cv"]).std() == pytest.approx(basis.opening(codes).std(), rel=0.05)
    closed = codes[basis.opening(codes) <= np.quantile(basis.opening(codes), 0.1)]
    assert basis.opening(wide["cv"]).min() >= basis.opening(closed).mean() - 3  # not past shut


def test_calibration_does_not_scale_up_codes_that_miss_the_opening(caplog):
    """Where the audio predicts only a lip motion that leaves the opening as it is (here the
    corners spreading), matching the opening's spread would need an unbounded gain: the gain
    stays 1 and the log says why; a skilled opening's gain is capped at `MAX_GAIN`."""
    from speech2lip.models.shape import MAX_GAIN
    from speech2lip.train.guidance import calibrate

    points, opening = talking_face(300, seed=7)
    rng = np.random.default_rng(8)
    spread = rng.uniform(0, 3, 300)
    for i, p in enumerate(points):  # the mouth corners move apart, the opening stays
        centre = p[[48, 54]].mean(axis=0)
        axis = (p[54] - p[48]) / np.linalg.norm(p[54] - p[48])
        for j, side in ((48, -1), (54, 1), (60, -1), (64, 1)):
            p[j] = p[j] + side * spread[i] * axis
        assert np.allclose(p[[48, 54]].mean(axis=0), centre)
    basis = LipShapeBasis.fit(points, points[0], k=2)
    codes = basis.encode(points)
    heard = spread[:, None] + rng.normal(scale=1.0, size=(300, 6))  # hears the corners only
    fitted = fit_ridge(heard, codes, ridge=1.0)
    assert skilled(fitted).any()
    with caplog.at_level("WARNING"):
        got = calibrate(fitted, basis, codes, centre=0.5)
    assert set(got["gain"]) <= {0.0, 1.0} and 1.0 in got["gain"]
    assert "does not predict this clip's mouth opening" in caplog.text
    faint = opening[:, None] + rng.normal(scale=5.0, size=(300, 6))  # a real cue
    weak = fit_ridge(faint, codes, ridge=1.0)
    weak["cv"] = weak["bias"] + 0.05 * (weak["cv"] - weak["bias"])  # shrunk 20-fold
    real = basis.opening(codes)
    assert np.corrcoef(basis.opening(weak["cv"]), real)[0, 1] > 0.5
    assert basis.opening(weak["cv"]).std() < real.std() / (2 * MAX_GAIN)  # needs > MAX_GAIN
    assert calibrate(weak, basis, codes, centre=0.5)["gain"].max() == MAX_GAIN


def test_calibration_centre_sets_how_open_the_mouth_is_on_average():
    """About the mean shape (0) the predicted opening averages the real one; about the closed
    mouth (1) every prediction opens wider, the closed ones stay; 0.5 lies between."""
    from speech2lip.train.guidance import calibrate

    points, opening = talking_face(300, seed=5)
    basis = LipShapeBasis.fit(points, points[0], k=1)
    codes = basis.encode(points)
    rng = np.random.default_rng(6)
    heard = opening[:, None] + rng.normal(scale=3.0, size=(300, 6))
    fitted = fit_ridge(heard, codes, ridge=1.0)
    real = basis.opening(codes)
    got = {c: calibrate(fitted, basis, codes, centre=c) for c in (0.0, 0.5, 1.0)}
    mean_open = {c: basis.opening(f["cv"]).mean() for c, f in got.items()}
    assert mean_open[0.0] == pytest.approx(real.mean(), abs=0.05 * real.std())
    assert mean_open[1.0] > real.mean() + 0.1 * real.std()  # scaled about shut: opens wider
    assert mean_open[0.0] < mean_open[0.5] < mean_open[1.0]
    for f in got.values():  # the same gain and spread whatever the centre
        assert f["gain"][0] == pytest.approx(got[0.0]["gain"][0])
        assert basis.opening(f["cv"]).std() == pytest.approx(real.std(), rel=0.05)
    for c, f in got.items():  # the centre is the point the gain leaves where it is
        centre = c * codes[real <= np.quantile(real, 0.1)].mean() + (1 - c) * codes.mean()
        mapped = f["bias"][0] + f["gain"][0] * (centre - fitted["bias"][0])
        assert mapped == pytest.approx(centre, abs=1e-6)


def test_guided_model_follows_the_codes_it_is_given(demo_warp):
    data = WarpData(demo_warp / "index.json")
    model = Speech2Lip(data.canonical, GUIDED)
    batch = to_tensors(data, np.array([3, 40]), GUIDED.audio_radius, "cpu")
    shape = torch.zeros(2, 3, requires_grad=True)
    cond, used = model.condition(batch["mel_context"], shape)
    assert cond.shape == (2, 8 + 3) and used is shape
    lips = model.canonical_lips(cond, batch["time"])
    lips.mean().backward()
    assert shape.grad.abs().sum() > 0  # the lips depend on the codes
    predicted, codes = model.condition(batch["mel_context"])  # rendering: from the audio
    assert codes.shape == (2, 3) and torch.equal(codes, model.shape(batch["mel_context"]))
    plain = Speech2Lip(data.canonical, dataclasses.replace(GUIDED, shape_dim=0))
    assert plain.shape is None and plain.condition(batch["mel_context"])[1] is None


def test_guided_training_fits_the_regressor_and_rebuilds_from_model_pt(demo_warp, tmp_path):
    from speech2lip.models.checkpoint import load_model
    from speech2lip.train import run
    from speech2lip.train.guidance import lip_shapes

    cfg = TrainConfig(steps=4, batch_frames=2, model=GUIDED, checkpoint_every=2, log_every=2,
                      mouth_start=0, sync_weight=0.0)  # fmt: skip
    run(demo_warp / "index.json", tmp_path, cfg, threads=1, resume="no", device="cpu")
    data = WarpData(demo_warp / "index.json")
    model = load_model(tmp_path / "model.pt")
    assert model.shape is not None and model.shape.weight.abs().sum() > 0  # fitted, saved
    from speech2lip.train.presets import resolve

    codes, fitted = lip_shapes(data, data.split_ids("train"), resolve(cfg))
    assert codes.shape == (len(data), 3)
    batch = to_tensors(data, np.arange(10, 14), GUIDED.audio_radius, "cpu", model.sizes.features)
    assert model.shape.closure_row == 81  # the preset hears mel+ppg: P/B/M's posterior row
    regressor = ShapeRegressor(model.shape.mean.numel(), 3, closure_row=81)
    regressor.load(fitted)  # the same fit, from the data alone: deterministic
    with torch.no_grad():
        torch.testing.assert_close(model.shape(batch["mel_context"]),
                                   regressor(batch["mel_context"]))  # fmt: skip
    # the cross-validated opening figure: the train frames' predicted opening against the real
    train = np.sort(data.split_ids("train"))
    points = data.read_field("landmarks", np.arange(len(data))).astype(np.float64)
    basis = LipShapeBasis.fit(points[train], points[int(data.canonical["canonical_index"])], 3)
    want = np.corrcoef(basis.opening(fitted["cv"][: len(train)]), basis.opening(codes[train]))
    assert fitted["cv_opening_r"] == pytest.approx(want[0, 1])
    summary = json.loads((tmp_path / "train.json").read_text())["lip_shape_guidance"]
    assert summary["cv_opening_r"] == pytest.approx(want[0, 1])
    assert len(summary["cv_r_per_code"]) == 3
    assert summary["gain"] == pytest.approx(float(np.max(fitted["gain"])))  # as calibrated
    # the closed mouth the P/B/M pull aims at: the train frames' least open tenth, saved
    closed = basis.closed(codes[train])
    assert basis.opening(closed[None])[0] <= np.quantile(basis.opening(codes[train]), 0.1)
    torch.testing.assert_close(model.shape.closed, torch.as_tensor(closed, dtype=torch.float32))
    assert float(model.shape.closure) == summary["closure"] == cfg.shape_closure == 0.5


def test_the_regressor_pulls_towards_the_closed_mouth_where_it_hears_p_b_or_m(tmp_path):
    from speech2lip.data.batches import phone_row

    assert phone_row("mel+ppg", "lips_closed") == phone_row("mel+phones", "lips_closed") == 81
    assert phone_row("ppg", "lips_closed") == 1 and phone_row("ppg", "sil") == 0
    assert phone_row("mel", "lips_closed") is None and phone_row(None, "lips_closed") is None
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3 * 94 * 16)).astype(np.float32)
    y = np.stack([x[:, :5].sum(1), x[:, 5:10].sum(1)], axis=1)
    closed = np.array([-2.0, 1.0])
    fitted = {**fit_ridge(x, y, ridge=0.3), "closed": closed, "closure": 0.5}
    plain, pulled = ShapeRegressor(x.shape[1], 2), ShapeRegressor(x.shape[1], 2, closure_row=81)
    plain.load(fitted)  # no phone rows: no pull whatever the weight
    pulled.load(fitted)
    test = torch.as_tensor(rng.normal(size=(4, 3, 94, 16)), dtype=torch.float32)
    test[:, :, 81] = 1.0  # P, B or M heard in every window ...
    test[:, 1, 81] = torch.tensor([0.0, 0.5, 1.0, 2.0])[:, None]  # ... but the centre's varies
    with torch.no_grad():
        base, got = plain(test), pulled(test)
    share = torch.tensor([0.0, 0.5, 1.0, 1.0])  # clamped to 0..1
    want = base + (0.5 * share)[:, None] * (torch.as_tensor(closed, dtype=torch.float32) - base)
    torch.testing.assert_close(got, want)
    assert torch.equal(got[0], base[0])  # neighbours' P/B/M alone: no pull
    # saved and loaded with the model; a model.pt saved before the pull existed has none
    state = pulled.state_dict()
    again = ShapeRegressor(x.shape[1], 2, closure_row=81)
    again.load_state_dict(state)
    torch.testing.assert_close(again(test), got)
    old = {k: v for k, v in state.items() if k not in ("closed", "closure")}
    again.load_state_dict(old)
    assert float(again.closure) == 0.0 and torch.equal(again(test), base)
    bare = ShapeRegressor(x.shape[1], 2, closure_row=81)
    bare.load({k: v for k, v in fitted.items() if k not in ("closed", "closure")})
    torch.testing.assert_close(bare(test), base)  # a fit without them: no pull


def test_below_the_mean_mouth_is_a_warning_only_without_guidance(caplog):
    import logging

    from speech2lip.train import warn_if_behind

    with caplog.at_level(logging.INFO, logger="speech2lip.train"):
        warn_if_behind(26.8, 25.0, 27.5, guided=True)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "opening r and amplitude" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="speech2lip.train"):
        warn_if_behind(26.8, 25.0, 27.5)
    assert "has not yet learned from the audio" in caplog.text
    assert "lip crop" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="speech2lip.train"):
        warn_if_behind(28.0, 25.0, 27.5, coverage=0.8)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "covers 80.0 % of the lip crop" in warned[0]


def test_folds_hold_every_copy_of_their_frames():
    """Rows that repeat frames (the same frames heard in other voices) must not leak into the
    cross-validation: unpredictable codes stay unpredicted."""
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(200, 30))
    codes = rng.normal(size=(200, 2))
    copies = np.concatenate([frames, frames + 0.01 * rng.normal(size=frames.shape)])
    target = np.tile(codes, (2, 1))
    leaky = fit_ridge(copies, target, ridge=0.01)  # copies in other folds: memorised
    fair = fit_ridge(copies, target, ridge=0.01, times=np.tile(np.arange(200), 2))
    assert np.nanmin(leaky["cv_r"]) > 0.5
    assert np.nanmax(np.abs(fair["cv_r"])) < 0.25


def test_voice_shifts_teach_the_regression_other_voices(demo_warp, demo_geometry, caplog):
    import logging

    from speech2lip.data.audio import context_indices
    from speech2lip.data.batches import AUDIO_OFFSET, audio_windows
    from speech2lip.inputs import read_clip_audio
    from speech2lip.media import pitch_shift
    from speech2lip.train.guidance import lip_shapes
    from speech2lip.train.presets import resolve

    data = WarpData(demo_warp / "index.json")
    wav = read_clip_audio(demo_geometry / "resample/audio.wav", len(data))
    train = data.split_ids("train")
    plain = resolve(TrainConfig(model=GUIDED, voice_shifts=(), voice_bands=()))
    shifted = dataclasses.replace(plain, voice_shifts=(-5.0, 5.0))
    errors = []
    for opts, audio in ((plain, None), (plain, wav), (shifted, wav)):
        with caplog.at_level(logging.INFO):
            codes, fitted = lip_shapes(data, train, opts, audio)
        regressor = ShapeRegressor(fitted["mean"].size, 3)
        regressor.load(fitted)
        heard = audio_windows(pitch_shift(wav, 5.0), plain.model.features)
        ctx = context_indices(train + AUDIO_OFFSET, GUIDED.audio_radius, len(data))
        with torch.no_grad():
            pred = regressor(torch.as_tensor(heard[ctx])).numpy()
        errors.append(float(np.mean((pred - codes[train]) ** 2)))
    assert errors[0] == errors[1]  # no shifts: the audio is not used
    assert errors[2] < 0.8 * errors[0]  # the shifted voice is heard as the subject's
    assert "heard 3 ways" in caplog.text


def test_voice_bands_teach_the_regression_narrow_band_speech(demo_warp, demo_geometry):
    """With the subject's voice low-passed among what the regression learns from, narrow-band
    speech (nothing above 3 kHz) predicts the lip shapes better; without audio nothing
    changes."""
    from scipy.signal import butter, sosfiltfilt

    from speech2lip.data.audio import context_indices
    from speech2lip.data.batches import AUDIO_OFFSET, audio_windows
    from speech2lip.inputs import read_clip_audio
    from speech2lip.train.guidance import lip_shapes
    from speech2lip.train.presets import resolve

    data = WarpData(demo_warp / "index.json")
    wav = read_clip_audio(demo_geometry / "resample/audio.wav", len(data))
    train = data.split_ids("train")
    # mel: the features a narrow band changes (phone posteriors of a 3-s clip barely do)
    mel = dataclasses.replace(GUIDED, features="mel")
    full = resolve(TrainConfig(model=mel, voice_shifts=(), voice_bands=()))
    banded = dataclasses.replace(full, voice_bands=(3600.0,))
    narrow = sosfiltfilt(butter(4, 3000, "low", fs=16000, output="sos"), wav)
    heard = audio_windows(narrow.astype(np.float32), full.model.features)
    ctx = context_indices(train + AUDIO_OFFSET, GUIDED.audio_radius, len(data))
    errors = []
    for opts in (full, banded):
        codes, fitted = lip_shapes(data, train, opts, wav)
        regressor = ShapeRegressor(fitted["mean"].size, 3)
        regressor.load(fitted)
        with torch.no_grad():
            pred = regressor(torch.as_tensor(heard[ctx])).numpy()
        errors.append(float(np.mean((pred - codes[train]) ** 2)))
    assert errors[1] < 0.92 * errors[0]  # 0.85 on this short demo; 0.44 on the 60 s one
    _, alone = lip_shapes(data, train, banded, None)
    _, plain = lip_shapes(data, train, full, None)
    assert np.array_equal(alone["weight"], plain["weight"])  # no audio: no band copies


def test_low_pass_keeps_the_band_and_the_timing():
    from speech2lip.data.audio import low_pass

    t = np.arange(16000) / 16000
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 6000 * t)
    out = low_pass((low + high).astype(np.float32), 3600)
    core = slice(2000, 14000)  # away from the edges
    assert np.abs(out[core] - low[core]).max() < 0.01  # 1 kHz kept, in place; 6 kHz gone
    click = np.zeros(4000, np.float32)
    click[2000] = 1
    assert np.argmax(low_pass(click, 3600)) == 2000  # zero phase: nothing moves
