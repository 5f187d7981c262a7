"""`render.match_spread`: driving speech moves the mouth as widely as the own voice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from speech2lip.config import RenderConfig


@pytest.fixture(scope="module")
def demo(demo_model, demo_warp):
    """The tiny demo model, its warp data and every frame's own audio windows."""
    from speech2lip.data.batches import read_audio
    from speech2lip.data.shards import WarpData
    from speech2lip.models.checkpoint import load_model
    from speech2lip.renderer import FIELDS

    model = load_model(demo_model, "cpu")
    data = WarpData(demo_warp / "index.json", fields=FIELDS + ["mel", "landmarks"])
    windows = read_audio(data, np.arange(len(data)), model.sizes.features)
    return model, data, windows


def test_training_records_the_own_spread_and_old_models_load_without_it(demo, demo_model,
                                                                        tmp_path):  # fmt: skip
    from speech2lip.models.checkpoint import load_model
    from speech2lip.renderer.spread import spread_gain

    model, data, windows = demo
    assert float(model.shape.spread) > 0
    state = torch.load(demo_model, weights_only=False)
    del state["model"]["shape.spread"]  # a model.pt written before the spread was measured
    old = tmp_path / "old.pt"
    torch.save(state, old)
    old_model = load_model(old, "cpu")
    assert float(old_model.shape.spread) == 0
    figures = spread_gain(old_model, data, windows, np.ones(len(windows)), "cpu")
    assert figures["gain"] == 1.0 and "re-run train" in figures["reason"]


def test_own_spread_is_measured_over_the_speech_frames(monkeypatch):
    from speech2lip.data import voice
    from speech2lip.train.guidance import own_spread

    rng = np.random.default_rng(0)
    predicted = np.concatenate([rng.normal(0, 3.0, 60), rng.normal(0, 0.5, 60)])
    ids = np.arange(10, 130)
    prob = np.zeros(140)
    prob[10:70] = 0.9  # the first 60 train frames are speech
    monkeypatch.setattr(voice, "speech_probability", lambda wav, n: prob[:n])
    assert own_spread(predicted, ids, np.zeros(10), 140) == pytest.approx(predicted[:60].std())
    assert own_spread(predicted, ids, None, 140) == pytest.approx(predicted.std())
    prob[10:100] = 0.0
    prob[10:40] = 0.9  # 30 speech frames: too few, all frames count
    assert own_spread(predicted, ids, np.zeros(10), 140) == pytest.approx(predicted.std())


def test_the_gain_brings_the_driving_spread_to_the_own_within_bounds(demo):
    from speech2lip.renderer.spread import GAIN_RANGE, spread_gain

    model, data, windows = demo
    speech = np.ones(len(windows))
    own = float(model.shape.spread)
    try:
        driving = spread_gain(model, data, windows, speech, "cpu")["driving_px"]
        assert driving > 0
        for ratio, gain in [(1.5, 1.5), (0.7, 0.7), (5.0, GAIN_RANGE[1]), (0.1, GAIN_RANGE[0])]:
            model.shape.spread.fill_(driving * ratio)
            figures = spread_gain(model, data, windows, speech, "cpu")
            assert figures["gain"] == pytest.approx(gain, rel=1e-4) and figures["reason"] is None
        few = np.zeros(len(windows))
        few[:20] = 1  # 20 speech frames: not enough to measure the spread
        figures = spread_gain(model, data, windows, few, "cpu")
        assert figures["gain"] == 1.0 and figures["speech_frames"] == 20
    finally:
        model.shape.spread.fill_(own)


def test_the_renderer_scales_only_the_lip_shape_codes_about_their_mean(demo):
    from speech2lip.renderer import Renderer, mel_contexts

    model, data, windows = demo
    ctx = torch.as_tensor(mel_contexts(windows, model.sizes.audio_radius))
    renderer = Renderer(model, data, RenderConfig(), "cpu")
    k = model.shape_dim
    with torch.no_grad():
        plain = renderer.condition(ctx)
        renderer.shape_gain = 1.5
        scaled = renderer.condition(ctx)
    torch.testing.assert_close(scaled[:, :-k], plain[:, :-k])
    bias = model.shape.bias
    torch.testing.assert_close(scaled[:, -k:], bias + 1.5 * (plain[:, -k:] - bias))
    assert (scaled[:, -k:] - bias).norm() == pytest.approx(1.5 * (plain[:, -k:] - bias).norm())
    renderer.shape_gain = 1.0
    with torch.no_grad():
        torch.testing.assert_close(renderer.condition(ctx), plain)


def test_a_driven_render_records_and_applies_the_gain(demo_model, demo_geometry, demo_warp,
                                                      tmp_path):  # fmt: skip
    from speech2lip.media import read_frames
    from speech2lip.render import run

    r = demo_geometry / "resample"
    wav, rate = sf.read(r / "audio.wav")
    drive = tmp_path / "speech.wav"
    sf.write(drive, np.concatenate([wav, wav]), rate)  # 6 s of the demo's own speech
    args = (demo_model, demo_warp / "index.json", r / "frames.mkv", r / "meta.json",
            r / "audio.wav")  # fmt: skip
    on = run(*args, tmp_path / "on.mp4", RenderConfig(output_size="cropped", match_spread=True),
             driving=str(drive), device="cpu")  # fmt: skip
    spread = on["lip_shape_spread"]
    assert spread["speech_frames"] >= 50 and spread["reason"] is None
    assert spread["gain"] == pytest.approx(
        np.clip(spread["own_px"] / spread["driving_px"], 0.5, 2.0), rel=1e-4
    )
    off = run(*args, tmp_path / "off.mp4", RenderConfig(output_size="cropped"),
              driving=str(drive), device="cpu")  # fmt: skip
    assert off["lip_shape_spread"] is None
    assert json.loads((tmp_path / "on.json").read_text())["lip_shape_spread"] == spread
    # the gain reached the lips: the mouths differ where the codes were scaled
    assert abs(spread["gain"] - 1) > 0.01
    size = (on["width"], on["height"])
    a = np.stack(list(read_frames(tmp_path / "on.mp4", *size)))
    b = np.stack(list(read_frames(tmp_path / "off.mp4", *size)))
    assert np.abs(a.astype(int) - b).mean() > 0.05


def test_the_report_says_what_gain_each_driven_video_got():
    from speech2lip.evaluate.voices import spread_lines

    driven = {
        "french": {"lip_shape_spread": {"gain": 1.42, "own_px": 1.7, "driving_px": 1.2,
                                        "speech_frames": 300, "reason": None}},
        "short": {"lip_shape_spread": {"gain": 1.0, "own_px": 1.7, "driving_px": None,
                                       "speech_frames": 20,
                                       "reason": "under 50 speech frames"}},
        "off": {"lip_shape_spread": None},
    }  # fmt: skip
    lines = spread_lines(driven)
    assert lines == [
        "french: lip-shape gain 1.42 (the opening predicted from its 300 speech frames spread "
        "1.20 px, from the subject's own speech 1.70 px)",
        "short: lip shapes as predicted (under 50 speech frames)",
    ]
