"""Phonetic audio features: pocketsphinx phones grouped into lip classes, aligned like the mel
windows, stored by warp, and heard by the model as `train.model.features` says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from speech2lip.config import ModelSizes, TrainConfig
from speech2lip.data import phones
from speech2lip.data.audio import HOP, MEL_WINDOW, SAMPLE_RATE, SAMPLES_PER_FRAME, mel_start
from speech2lip.errors import Speech2LipError
from tests.conftest import TINY_SIZES, media

CLOSED = list(phones.CLASSES).index("lips_closed")


def test_class_track_covers_each_mel_frame_with_the_phones_under_it():
    # 10 ms phone frames: silence 0-99 ms, "m" 100-199 ms, "aa" 200-299 ms, then nothing.
    segments = [("SIL", 0, 9), ("M", 10, 19), ("AA", 20, 29)]
    track = phones.class_track(segments, 40)  # mel frames centred every 12.5 ms
    assert track.shape == (phones.N_CLASSES, 40)
    np.testing.assert_allclose(track.sum(axis=0), 1.0, atol=1e-6)
    assert track[0, 1] == pytest.approx(1.0)  # 6.25-18.75 ms: silence
    # mel frame 8 spans 93.75-106.25 ms: half silence, half "m"
    assert track[0, 8] == pytest.approx(0.5) and track[CLOSED, 8] == pytest.approx(0.5)
    assert track[CLOSED, 12] == pytest.approx(1.0)  # 143.75-156.25 ms
    opened = list(phones.CLASSES).index("open")
    assert track[opened, 20] == pytest.approx(1.0)  # 243.75-256.25 ms
    assert track[0, 30] == pytest.approx(1.0)  # past the last segment: silence
    unknown = phones.class_track([("+NSN+", 0, 9)], 4)
    assert unknown[0].min() == pytest.approx(1.0)  # fillers and noises count as silence


def test_phone_windows_span_exactly_the_mel_windows_frames(monkeypatch):
    n = 12
    segments = [("P", 3 * k, 3 * k + 1) for k in range(20)]
    monkeypatch.setattr(phones, "decode", lambda wav, source="audio": segments)
    windows = phones.frame_phone_windows(np.zeros(n * SAMPLES_PER_FRAME), n)
    track = phones.class_track(segments, int(mel_start(n)) + MEL_WINDOW)
    assert windows.shape == (n, phones.N_CLASSES, MEL_WINDOW) and windows.dtype == np.float32
    for i in range(n):
        start = int(mel_start(i))
        np.testing.assert_array_equal(windows[i], track[:, start : start + MEL_WINDOW])
    assert mel_start(5) == 16 and HOP * 16 == 5 * SAMPLES_PER_FRAME  # 80 mel frames per second


def _espeak(text: str) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """16 kHz float speech and espeak-ng's phonemes with their start times (s)."""
    from scipy.signal import resample_poly

    from speech2lip.sample.speech import Espeak

    speech = Espeak.get().synth(text)
    wav = resample_poly(speech.audio.astype(np.float64) / 32768, SAMPLE_RATE, speech.sample_rate)
    return wav, [(s / speech.sample_rate, p) for s, p in speech.phonemes]


BILABIAL_TEXTS = ("Bob met my mom, a baby maps a bump by a pub.",
                  "My mum may buy a bomb, Pam, maybe.")  # fmt: skip


def closed_over_phonemes(closed: np.ndarray, timed, rate: int) -> tuple[list, list]:
    """The mean of a closed-lips share track (`rate` frames per second) over each of espeak's
    bilabials (p/b/m) and over each of its open vowels."""
    bilabial, vowel = [], []
    for (start, p), (end, _) in zip(timed, timed[1:], strict=False):
        lo, hi = int(start * rate), max(int(start * rate) + 1, int(end * rate))
        if p in ("p", "b", "m"):
            bilabial.append(closed[lo:hi].mean())
        elif p in ("a", "aI", "0", "V", "eI", "E", "aU", "a#"):
            vowel.append(closed[lo:hi].mean())
    assert len(bilabial) >= 8 and len(vowel) >= 5
    return bilabial, vowel


def test_bilabials_decode_as_closed_lips():
    """p/b/m decode as the closed-mouth classes most of the time (lips_closed, or silence: a
    stop's closure is silent), open vowels mostly not."""
    for text in BILABIAL_TEXTS:
        wav, timed = _espeak(text)
        n = len(wav) // SAMPLES_PER_FRAME
        track = phones.class_track(phones.decode(wav[: n * SAMPLES_PER_FRAME]), int(mel_start(n)))
        bilabial, vowel = closed_over_phonemes(track[0] + track[CLOSED], timed, 80)
        assert np.mean(np.array(bilabial) > 0.5) >= 0.7, bilabial
        assert np.mean(vowel) < 0.5 < np.mean(bilabial), (vowel, bilabial)


@pytest.mark.media
def test_phones_of_a_real_recording():
    from speech2lip.media import read_audio

    wav = read_audio(media("audio/jfk_en.flac"), SAMPLE_RATE)
    n = len(wav) // SAMPLES_PER_FRAME
    windows = phones.frame_phone_windows(wav[: n * SAMPLES_PER_FRAME], n)
    shares = windows.mean(axis=(0, 2))
    assert 0.1 < shares[0] < 0.6  # pauses between phrases, but mostly speech
    assert (shares[1:] > 0.005).sum() >= 10  # most classes occur in 11 s of speech
    np.testing.assert_allclose(windows.sum(axis=1), 1.0, atol=1e-5)


def test_undecodable_audio_names_the_file(monkeypatch):
    class Broken:
        def start_utt(self):
            raise RuntimeError("bad utterance")

    monkeypatch.setattr(phones, "load_decoder", lambda: Broken())
    with pytest.raises(Speech2LipError, match=r"^speech\.ogg: pocketsphinx could not decode"):
        noise = np.random.default_rng(0).normal(0, 0.1, 5 * SAMPLES_PER_FRAME)
        phones.frame_phone_windows(noise, 5, source="speech.ogg")


def test_a_broken_install_names_the_package(monkeypatch, tmp_path):
    import pocketsphinx

    monkeypatch.setattr(pocketsphinx, "get_model_path", lambda *a: str(tmp_path))
    with pytest.raises(Speech2LipError, match="pip install --force-reinstall pocketsphinx"):
        phones.load_decoder()


def test_standardiser_weighs_the_parts_alike():
    from speech2lip.models.shape import standardiser

    rng = np.random.default_rng(0)
    mel = rng.normal(0, 3, (200, 60))
    onehot = np.eye(6)[rng.choice(6, 200, p=[0.5, 0.3, 0.1, 0.05, 0.03, 0.02])]
    x = np.hstack([mel, onehot])
    parts = np.repeat([0, 1], [60, 6])
    mean, div = standardiser(x, parts, pooled=(1,))
    z = (x - mean) / div
    var = z.var(axis=0)
    assert var[:60].sum() == pytest.approx(var[60:].sum(), rel=1e-3)  # equal shares
    assert var.sum() == pytest.approx(66, rel=1e-3)  # the total stays D
    assert np.ptp(div[60:]) == 0  # one divisor for the pooled (phone) part
    m1, d1 = standardiser(mel)
    np.testing.assert_allclose(d1, mel.std(axis=0) + 1e-6)


@pytest.mark.parametrize("features", ["mel", "phones", "mel+phones", "mel+ppg"])
def test_each_feature_set_trains_renders_from_the_shards_and_rebuilds(
    features, demo_warp, tmp_path, monkeypatch
):
    from speech2lip.data.batches import audio_rows, to_tensors
    from speech2lip.data.shards import WarpData
    from speech2lip.models.assembled import Speech2Lip
    from speech2lip.models.checkpoint import load_model
    from speech2lip.train import run

    def no_decoding(*args, **kwargs):
        raise AssertionError("the subject's own audio was decoded again")

    from speech2lip.data import posteriors

    monkeypatch.setattr(phones, "decode", no_decoding)  # warp's shards hold the phones
    monkeypatch.setattr(posteriors, "class_posteriors", no_decoding)  # and the posteriors
    sizes = ModelSizes(**TINY_SIZES, features=features)
    cfg = TrainConfig(steps=3, batch_frames=2, model=sizes, checkpoint_every=3, log_every=3,
                      mouth_start=0, sync_weight=0.0)  # fmt: skip
    run(demo_warp / "index.json", tmp_path, cfg, threads=1, resume="no", device="cpu")
    model = load_model(tmp_path / "model.pt")
    assert model.sizes.features == features
    rows = {"mel": (80,), "phones": (14,), "mel+phones": (80, 14), "mel+ppg": (80, 14)}[features]
    assert audio_rows(features) == rows
    data = WarpData(demo_warp / "index.json")
    batch = to_tensors(data, np.array([4, 9]), sizes.audio_radius, "cpu", features)
    assert batch["mel_context"].shape == (2, 2 * sizes.audio_radius + 1, sum(rows), 16)
    if features != "mel":  # phone rows are shares (or posteriors) of the window's frames
        phone_rows = batch["mel_context"][:, :, -14:]
        torch.testing.assert_close(phone_rows.sum(dim=2), torch.ones(2, 3, 16))
    with torch.no_grad():
        cond, shape = model.condition(batch["mel_context"])
    assert cond.shape == (2, sizes.audio_dim + sizes.shape_dim) and shape is not None
    other = Speech2Lip(data.canonical, dataclasses.replace(model.sizes, features="phones" if
                       features == "mel" else "mel"))  # fmt: skip
    with pytest.raises(RuntimeError):  # a model hears only the rows it was built for
        other.load_state_dict(model.state_dict())


def test_driving_audio_is_decoded_once_for_a_phone_model(monkeypatch):
    from speech2lip.data.batches import audio_windows

    calls = []
    real = phones.decode

    def counted(wav, source="audio"):
        calls.append(source)
        return real(wav, source)

    monkeypatch.setattr(phones, "decode", counted)
    wav = np.zeros(10 * SAMPLES_PER_FRAME, np.float32)
    assert audio_windows(wav, "mel").shape == (10, 80, 16) and calls == []
    assert audio_windows(wav, "mel+phones", "drive.wav").shape == (10, 94, 16)
    assert calls == ["drive.wav"]
    silent = audio_windows(wav, "phones")
    assert silent.shape == (10, 14, 16) and silent[:, 0].min() == pytest.approx(1.0)


def test_long_audio_is_decoded_in_utterances_cut_where_it_is_quiet():
    rng = np.random.default_rng(0)
    wav = rng.normal(0, 0.1, SAMPLE_RATE * 25)
    wav[int(SAMPLE_RATE * 10.3) : int(SAMPLE_RATE * 10.35)] = 0  # a pause 0.3 s after 10 s
    cuts = phones.utterances(wav)
    assert cuts[0] == 0 and cuts[-1] == 2500 and cuts[1] in range(1030, 1035)
    assert all(b - a <= 1050 for a, b in zip(cuts, cuts[1:], strict=False))
    assert phones.utterances(wav[: SAMPLE_RATE * 3]) == [0, 300]


def test_decoding_is_the_same_whatever_was_decoded_before():
    wav, _ = _espeak("Pam may buy a map.")
    first = phones.decode(wav)
    phones.decode(_espeak("Other words, spoken before.")[0])
    assert phones.decode(wav) == first


def test_the_audio_code_leaves_the_posteriors_to_the_lip_shape_codes(demo_warp):
    """Beside mel, the phone posteriors reach the lips through the lip-shape codes only: the
    audio code does not change with them; alone, it hears them; decoded phones it hears."""
    from speech2lip.data.shards import WarpData
    from speech2lip.models.assembled import Speech2Lip, encoder_scales
    from speech2lip.train.presets import resolve

    def sizes(features: str) -> ModelSizes:
        return resolve(TrainConfig(model=ModelSizes(**TINY_SIZES, features=features))).model

    assert encoder_scales("mel+ppg") == [0.25, 0.0] and encoder_scales("ppg") == [1.0]
    assert encoder_scales("mel+phones") == [0.25, 1.0]
    canonical = WarpData(demo_warp / "index.json").canonical
    torch.manual_seed(0)
    both = Speech2Lip(canonical, sizes("mel+ppg"))
    x = torch.randn(2, 3, 94, 16)
    y = x.clone()
    y[:, :, 80:] = torch.rand(2, 3, 14, 16)
    with torch.no_grad():
        assert torch.equal(both.audio_code(x), both.audio_code(y))
        y[:, :, :80] += 1.0
        assert not torch.equal(both.audio_code(x), both.audio_code(y))
        alone = Speech2Lip(canonical, sizes("ppg"))
        a, b = torch.rand(2, 3, 14, 16), torch.rand(2, 3, 14, 16)
        assert not torch.equal(alone.audio_code(a), alone.audio_code(b))
