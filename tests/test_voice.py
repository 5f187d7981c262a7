"""Voice activity per video frame (silero-vad) and the rest mouth in silent spans."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
from conftest import MEDIA

from speech2lip.config import RenderConfig
from speech2lip.data import voice
from speech2lip.errors import Speech2LipError


def _espeak(tmp_path, text: str) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    x, sr = sf.read(wav, dtype="float32")
    from scipy.signal import resample_poly

    return resample_poly(x, 16000, sr).astype(np.float32)


def test_chunks_map_to_the_frames_they_overlap():
    # 5 chunks of 512 samples = 2560 samples = 4 frames of 640.
    chunk = np.array([0.0, 0.0, 0.9, 0.0, 0.0], np.float32)
    # frame 0: samples 0..639 -> chunks 0, 1; frame 1: 640..1279 -> 1, 2; frame 2: 1280..1919
    # -> 2, 3; frame 3: 1920..2559 -> 3, 4.
    assert voice.chunks_to_frames(chunk, 4).tolist() == pytest.approx([0, 0.9, 0.9, 0])
    assert voice.chunks_to_frames(np.zeros(0), 3).tolist() == [0, 0, 0]


def test_silent_runs_need_a_minimum_length_after_the_hangover():
    prob = np.array([1] * 5 + [0] * 10 + [1] * 3 + [0] * 3 + [1] * 2, float)
    silent = voice.silent_frames(prob, min_frames=4, hangover=2)
    # The 10-frame gap loses 2 frames at each edge to the hangover: 6 silent frames remain.
    assert np.flatnonzero(silent).tolist() == list(range(7, 13))
    # The 3-frame gap is a pause between words: speech.
    assert not silent[15:].any()
    assert voice.silent_frames(np.zeros(8), min_frames=4).all()
    assert not voice.silent_frames(np.ones(8), min_frames=1).any()


def test_rest_weights_ramp_into_and_out_of_silence():
    silent = np.zeros(20, bool)
    silent[5:15] = True
    w = voice.rest_weights(silent, ramp=3)
    assert w[:5].tolist() == [0] * 5 and w[15:].tolist() == [0] * 5
    assert w[5:8] == pytest.approx([1 / 3, 2 / 3, 1]) and (w[8:12] == 1).all()
    assert w[12:15] == pytest.approx([1, 2 / 3, 1 / 3])  # symmetric on the way out
    assert np.abs(np.diff(w)).max() <= 1 / 3 + 1e-6  # no jump
    assert voice.rest_weights(np.ones(4, bool), 3).tolist() == [1] * 4


def test_rest_weights_leave_a_margin_next_to_speech_to_the_audio():
    silent = np.zeros(30, bool)
    silent[5:25] = True
    w = voice.rest_weights(silent, ramp=2, margin=4)
    assert (w[:9] == 0).all() and (w[21:] == 0).all()  # speech and 4 frames each side
    assert w[9:11] == pytest.approx([0.5, 1]) and (w[11:19] == 1).all()
    assert w[19:21] == pytest.approx([1, 0.5])
    short = np.zeros(20, bool)
    short[5:13] = True  # 8 silent frames: all within 4 of speech
    assert (voice.rest_weights(short, ramp=2, margin=4) == 0).all()
    assert voice.rest_weights(np.ones(6, bool), 2, margin=4).tolist() == [1] * 6  # no speech


def test_rest_frames_prefer_silent_frames_and_fall_back_to_the_quietest():
    prob = np.linspace(0, 1, 100)
    assert (prob[voice.rest_frames(prob, np.arange(100))] < 0.5).all()
    loud = np.full(100, 0.9)
    loud[[3, 7]] = 0.6
    got = voice.rest_frames(loud, np.arange(100), min_count=5)
    assert len(got) == 5 and {3, 7} <= set(got.tolist())


def test_vad_tells_speech_from_silence_and_low_noise(tmp_path):
    speech = _espeak(tmp_path, "Peter picked a peck of pickled peppers, then he went home.")
    rng = np.random.default_rng(0)
    noise = (10 ** (-50 / 20) * rng.standard_normal(2 * 16000)).astype(np.float32)
    wav = np.concatenate([speech, np.zeros(2 * 16000, np.float32), noise, speech])
    prob = voice.speech_probability(wav)
    n_sp = len(speech) // 640
    assert len(prob) == -(-len(wav) // 640)
    assert np.mean(prob[:n_sp] >= 0.5) > 0.6  # espeak's speech is mostly speech
    gap = slice(n_sp + 3, n_sp + 100 - 3)  # the silence and the noise
    assert np.mean(prob[gap] < 0.5) > 0.95
    silent = voice.silent_frames(prob, min_frames=6)
    assert silent[gap].mean() > 0.9 and silent[: n_sp // 2].mean() < 0.3


def test_real_speech_is_mostly_speech():
    path = MEDIA / "audio/jfk_en.flac"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    from speech2lip.media import read_audio

    prob = voice.speech_probability(read_audio(path, 16000))
    assert 0.5 < np.mean(prob >= 0.5) < 1.0  # speech, with the pauses between phrases


def test_a_broken_install_names_the_package(monkeypatch):
    import silero_vad

    def broken():
        raise RuntimeError("PytorchStreamReader failed reading zip archive")

    monkeypatch.setattr(silero_vad, "load_silero_vad", broken)
    voice.load_vad.cache_clear()
    try:
        with pytest.raises(Speech2LipError, match="silero-vad"):
            voice.load_vad()
    finally:
        voice.load_vad.cache_clear()


def test_the_rest_blend_holds_the_mouth_still_whatever_the_audio(demo_model, demo_warp):
    from speech2lip.data.batches import read_audio
    from speech2lip.data.shards import WarpData
    from speech2lip.models.checkpoint import load_model
    from speech2lip.renderer import FIELDS, Renderer, mel_contexts

    model = load_model(demo_model)
    data = WarpData(demo_warp / "index.json", fields=FIELDS + ["mel"])
    n = len(data)
    heard = read_audio(data, np.arange(n), model.sizes.features)
    ctx = mel_contexts(heard, model.sizes.audio_radius)
    renderer = Renderer(model, data, RenderConfig(), "cpu")
    bg = np.array([10, 10, 10])
    speech_ids = np.array([20, 40, 60])  # three different mel windows on one background
    free, _ = renderer.mouths(ctx[speech_ids], bg, out_ids=np.arange(3))
    assert np.abs(free[0].astype(int) - free[1]).max() > 0  # the audio moves the lips
    renderer.set_rest(data.split_ids("train")[:10], np.array([1.0, 1.0, 1.0, 0.0]))
    rest, _ = renderer.mouths(ctx[speech_ids], bg, out_ids=np.arange(3))
    assert np.abs(rest[0].astype(int) - rest[1]).max() <= 1  # at rest: the same mouth
    assert np.abs(rest[1].astype(int) - rest[2]).max() <= 1
    back, _ = renderer.mouths(ctx[speech_ids[:1]], bg[:1], out_ids=np.array([3]))
    assert np.abs(back[0].astype(int) - free[0]).max() <= 1  # weight 0: the audio's lips


def test_silent_driving_audio_renders_a_resting_mouth(demo_model, demo_geometry, demo_warp,
                                                      tmp_path):  # fmt: skip
    from speech2lip.render import run

    r = demo_geometry / "resample"
    drive = tmp_path / "silence.wav"
    sf.write(drive, np.zeros(16000 * 2, np.float32), 16000)
    out = tmp_path / "driven.mp4"
    stats = run(demo_model, demo_warp / "index.json", r / "frames.mkv", r / "meta.json",
                r / "audio.wav", out, RenderConfig(output_size="cropped", silence=True,
                                                   encoder_preset="ultrafast"),
                driving=str(drive), device="cpu")  # fmt: skip
    assert out.is_file() and stats["frames"] == 50 and stats["silent_frames"] == 50
    assert stats["resting_frames"] == 50
    margin = run(demo_model, demo_warp / "index.json", r / "frames.mkv", r / "meta.json",
                 r / "audio.wav", tmp_path / "margin.mp4",
                 RenderConfig(output_size="cropped", silence=True, silence_margin=12,
                              encoder_preset="ultrafast"),
                 driving=str(drive), device="cpu")  # fmt: skip
    assert margin["resting_frames"] == 50  # no speech to leave a margin next to
    off = run(demo_model, demo_warp / "index.json", r / "frames.mkv", r / "meta.json",
              r / "audio.wav", tmp_path / "off.mp4",
              RenderConfig(output_size="cropped", encoder_preset="ultrafast", silence=False),
              driving=str(drive), device="cpu")  # fmt: skip
    assert off["silent_frames"] is None and off["resting_frames"] is None


def test_speech_level_and_matching():
    from speech2lip.data.voice import match_level, speech_level

    rng = np.random.default_rng(0)
    wav = np.concatenate([rng.normal(0, 0.1, 640 * 10), np.zeros(640 * 10)]).astype(np.float32)
    prob = np.r_[np.ones(10), np.zeros(10)]
    assert speech_level(wav, prob) == pytest.approx(-20.0, abs=0.2)  # the speech frames only
    assert speech_level(wav, np.zeros(20)) is None
    louder, gain = match_level(wav, prob, -8.0)
    assert gain == pytest.approx(12.0, abs=0.2) and speech_level(louder, prob) == pytest.approx(-8)
    same, gain = match_level(wav, np.zeros(20), -8.0)  # no speech: nothing to match
    assert same is wav and gain == 0.0
    capped, gain = match_level(wav, prob, 40.0)
    assert gain == 30.0  # at most 30 dB


def _frames(path, meta):
    from speech2lip.media import read_frames

    return np.stack(list(read_frames(path, meta["width"], meta["height"])))


@pytest.mark.parametrize("match", [True, False])
def test_quiet_driving_speech_is_heard_at_the_subjects_level(match, demo_model, demo_geometry,
                                                             demo_warp, tmp_path):  # fmt: skip
    """The subject's own speech 12 dB quieter drives the same mouths as at its own level with
    `render.match_level`, and other mouths without it."""
    import json

    from speech2lip.render import run

    r = demo_geometry / "resample"
    own, rate = sf.read(r / "audio.wav", dtype="float32")
    cfg = RenderConfig(output_size="cropped", encoder_preset="ultrafast", crf=0,
                       match_level=match)  # fmt: skip
    outs = []
    for name, gain in (("own", 1.0), ("quiet", 10 ** (-12 / 20))):
        sf.write(tmp_path / f"{name}.wav", own * gain, rate, subtype="FLOAT")
        out = tmp_path / f"{name}.mp4"
        run(demo_model, demo_warp / "index.json", r / "frames.mkv", r / "meta.json",
            r / "audio.wav", out, cfg, driving=str(tmp_path / f"{name}.wav"),
            device="cpu")  # fmt: skip
        outs.append(out)
    meta = json.loads((r / "meta.json").read_text())
    a, b = (_frames(p, meta).astype(int) for p in outs)
    assert a.shape == b.shape
    diff = np.abs(a - b)
    if match:  # the same mouths, but for the VAD's view of the quieter copy (a dB or less)
        assert diff.max() <= 6 and diff.mean() < 0.01
    else:  # the quieter voice moves the mouth differently
        assert diff.max() > 20 and diff.mean() > 0.05


def test_the_rest_mouth_is_closed_not_the_mean_of_silent_frames(demo_model, demo_warp):
    from speech2lip.data.shards import WarpData
    from speech2lip.geometry.lipshape import LipShapeBasis
    from speech2lip.models.checkpoint import load_model
    from speech2lip.renderer import FIELDS, Renderer, closed_codes

    model = load_model(demo_model)
    data = WarpData(demo_warp / "index.json", fields=FIELDS + ["mel"])
    train = data.split_ids("train")
    points = data.read_field("landmarks", np.arange(len(data))).astype(np.float64)
    basis = LipShapeBasis.fit(points[train], points[int(data.canonical["canonical_index"])], 3)
    opening = basis.opening(basis.encode(points[train]))
    rest = closed_codes(data, train, 3)
    assert basis.opening(rest[None])[0] <= np.quantile(opening, 0.25)  # closed lips
    renderer = Renderer(model, data, RenderConfig(), "cpu")
    renderer.set_rest(train, np.ones(4, np.float32))
    np.testing.assert_allclose(renderer.rest_cond[-3:].numpy(), rest, rtol=1e-5, atol=1e-6)


def test_the_rest_mouth_is_a_real_closed_frame_s_lips(demo_model, demo_warp):
    import torch

    from speech2lip.data.batches import read_audio
    from speech2lip.data.shards import WarpData
    from speech2lip.geometry.topology import inner_lip_opening
    from speech2lip.models.checkpoint import load_model
    from speech2lip.renderer import FIELDS, Renderer, mel_contexts, rest_lips

    model = load_model(demo_model)
    data = WarpData(demo_warp / "index.json", fields=FIELDS + ["mel"])
    train = data.split_ids("train")
    image, valid, frame = rest_lips(data, train)
    opening = inner_lip_opening(data.read_field("landmarks", train)[..., :2])
    assert frame in train
    assert inner_lip_opening(data.read_field("landmarks", [frame])[0, :, :2]) <= np.quantile(
        opening, 0.1
    )  # one of the closed mouths
    np.testing.assert_array_equal(image, data.read_field("canonical_lips", [frame])[0])
    assert valid.dtype == bool and valid.mean() > 0.9
    # at rest the renderer draws those lips (where valid) whatever the audio says
    ctx = mel_contexts(read_audio(data, np.arange(len(data)), model.sizes.features),
                       model.sizes.audio_radius)  # fmt: skip
    renderer = Renderer(model, data, RenderConfig(), "cpu")
    bg = np.array([10, 10])
    renderer.set_rest(train, np.array([1.0, 1.0], np.float32))
    rest, _ = renderer.mouths(ctx[[20, 60]], bg, out_ids=np.arange(2))
    lips = torch.as_tensor(image / 255.0, dtype=torch.float32).permute(2, 0, 1)
    cond = renderer.condition(torch.as_tensor(ctx[[20]]), np.arange(1))
    drawn = renderer.model.canonical_lips(cond, None)
    mask = torch.as_tensor(valid, dtype=torch.float32)
    expected = (lips * mask + drawn[0].detach() * (1 - mask))[None].expand(2, -1, -1, -1)
    real, _ = renderer.mouths(ctx[[20, 60]], bg, lips=expected.numpy())
    assert np.abs(rest.astype(int) - real).max() <= 1
    renderer.clear_rest()
    free, _ = renderer.mouths(ctx[[20, 60]], bg, out_ids=np.arange(2))
    assert np.abs(free.astype(int) - rest).max() > 10  # the drawn lips differ from them
