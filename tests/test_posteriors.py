"""Phone posteriors scored with pocketsphinx's acoustic model: the model files read right, the
front end the model expects (checked against pocketsphinx's own decoder), alignment to the mel
windows, silence, a broken install, and warp storing them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from speech2lip.data import phones, posteriors
from speech2lip.data.audio import MEL_WINDOW, SAMPLE_RATE, SAMPLES_PER_FRAME
from speech2lip.errors import Speech2LipError
from tests.conftest import media
from tests.test_phones import BILABIAL_TEXTS, CLOSED, _espeak, closed_over_phonemes


def test_the_bundled_model_reads_as_a_three_state_phone_model():
    model = posteriors.load_model()
    assert len(model.phones) == 42 and "SIL" in model.phones and "M" in model.phones
    assert model.means.shape == (42, 3, 128, 13) == model.precisions.shape
    assert np.isfinite(model.means).all() and (model.precisions > 0).all()
    # each state's weights over its codebook sum to 1, but for the bytes' quantisation
    sums = model.weights.sum(axis=-1)
    assert model.weights.shape == (42, 3, 3, 128) and 0.9 < sums.min() <= sums.max() < 1.01
    assert model.classes.sum(axis=1).tolist() == [1.0] * 42
    assert model.classes[model.phones.index("B"), CLOSED] == 1.0


@pytest.mark.media
def test_frames_agree_with_pocketsphinx_decoding_a_real_recording():
    """The most likely class per 10 ms frame agrees with the class pocketsphinx's decoder (its
    own front end, HMMs and phone language model) puts there on most frames. The front end
    matters: without the lifter 31 % agree, with magnitude instead of power 52 %, without
    pocketsphinx's variance floor 47 %, this 71 %. Phones held over half a second are the
    phone loop sticking (`phones.decode`: 6.6 s of "F" at this cut's end) and are left out."""
    from speech2lip.media import read_audio

    wav = read_audio(media("audio/english_60s.wav"), SAMPLE_RATE)[: SAMPLE_RATE * 20]
    shares = posteriors.class_posteriors(wav)
    assert shares.shape == (2000, phones.N_CLASSES)
    decoded = np.full(len(shares), -1)
    for phone, first, last in phones.decode(wav):
        if phone == "SIL" or last - first < 50:
            decoded[first : last + 1] = phones.CLASS_OF.get(phone, 0)
    known = decoded >= 0
    assert known.mean() > 0.6
    assert np.mean(shares.argmax(axis=1)[known] == decoded[known]) > 0.62


def test_bilabials_score_as_closed_lips():
    """Over espeak-ng's p/b/m the closed classes (lips closed, or silence: a stop's closure is
    silent) hold about half the posterior (0.54, 0.48), over open vowels a fifth (0.26, 0.15):
    posteriors are soft, where decoding picks one class."""
    for text in BILABIAL_TEXTS:
        wav, timed = _espeak(text)
        shares = posteriors.class_posteriors(wav)
        bilabial, vowel = closed_over_phonemes(shares[:, 0] + shares[:, CLOSED], timed, 100)
        assert np.mean(bilabial) > max(0.4, 1.8 * np.mean(vowel)), (vowel, bilabial)


def test_windows_follow_the_audio_frame_for_frame_and_sum_to_one():
    wav, _ = _espeak("Pam may buy a map, maybe.")
    n = len(wav) // SAMPLES_PER_FRAME
    windows = posteriors.frame_ppg_windows(wav[: n * SAMPLES_PER_FRAME], n)
    assert windows.shape == (n, phones.N_CLASSES, MEL_WINDOW) and windows.dtype == np.float32
    np.testing.assert_allclose(windows.sum(axis=1), 1.0, atol=1e-5)
    # 5 frames (16 mel frames) of digital silence in front: the same windows, 5 frames later
    late = posteriors.frame_ppg_windows(
        np.concatenate([np.zeros(5 * SAMPLES_PER_FRAME), wav[: n * SAMPLES_PER_FRAME]]), n + 5
    )
    np.testing.assert_allclose(late[5:], windows, atol=1e-5)
    assert late[0, 0].min() == pytest.approx(1.0)  # silence is silence
    # past the end of the audio: silence
    past = posteriors.frame_ppg_windows(wav[: 4 * SAMPLES_PER_FRAME], 6)
    assert past[5, 0].min() == pytest.approx(1.0)


def test_all_silence_and_empty_audio_are_silence():
    quiet = posteriors.frame_ppg_windows(np.zeros(8 * SAMPLES_PER_FRAME), 8)
    assert quiet[:, 0].min() == pytest.approx(1.0)
    empty = posteriors.frame_ppg_windows(np.zeros(0), 2)
    assert empty.shape == (2, phones.N_CLASSES, MEL_WINDOW) and empty[:, 0].min() == 1.0


@pytest.mark.parametrize("broken", ["missing", "means", "feat.params"])
def test_a_broken_install_names_the_file_and_the_package(broken, tmp_path, monkeypatch):
    import pocketsphinx

    real = posteriors.model_dir()
    root = tmp_path / "en-us" / "en-us"
    if broken != "missing":
        shutil.copytree(real, root)
    if broken == "means":
        (root / "means").write_bytes((root / "means").read_bytes()[:100])
    elif broken == "feat.params":
        (root / "feat.params").write_text("-lowerf 200\n-upperf 6800\n-nfilt 40\n")
    monkeypatch.setattr(pocketsphinx, "get_model_path", lambda *a: str(tmp_path))
    posteriors.load_model.cache_clear()
    try:
        with pytest.raises(Speech2LipError, match="pip install --force-reinstall pocketsphinx"):
            posteriors.frame_ppg_windows(np.zeros(SAMPLES_PER_FRAME), 1)
    finally:
        posteriors.load_model.cache_clear()
    with pytest.raises(Speech2LipError) as info:
        posteriors.read_gaussians(str(tmp_path / "nowhere"))
    assert "nowhere" in str(info.value)


def test_warp_stores_the_posteriors_of_the_clips_audio(demo_warp, demo_geometry):
    from speech2lip.data.shards import WarpData
    from speech2lip.inputs import read_clip_audio

    data = WarpData(demo_warp / "index.json")
    wav = read_clip_audio(demo_geometry / "resample/audio.wav", len(data))
    ids = np.arange(len(data))
    np.testing.assert_allclose(data.read_field("ppg", ids),
                               posteriors.frame_ppg_windows(wav, len(data)), atol=1e-5)  # fmt: skip


def test_a_prior_cepstral_mean_counts_as_its_frames():
    cep = np.arange(12 * 13, dtype=np.float64).reshape(12, 13)
    silent = np.zeros(12, bool)
    silent[:4] = True
    prior = np.full(13, -5.0)
    got = posteriors.cepstral_mean(cep, silent, prior)
    want = (cep[4:].sum(axis=0) + posteriors.PRIOR_FRAMES * prior) / (8 + posteriors.PRIOR_FRAMES)
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(posteriors.cepstral_mean(cep, np.ones(12, bool), prior), prior)
    np.testing.assert_allclose(posteriors.cepstral_mean(cep, silent), cep[4:].mean(axis=0))


def test_driving_audio_starts_its_posteriors_mean_from_the_subjects(demo_warp, demo_geometry):
    """A few seconds of the subject's own speech heard as driving audio: with the subject's
    cepstral mean as the prior (render's and evaluate's path), the posteriors come closer to
    the ones warp scored over the whole clip than with the cut's own mean alone."""
    from speech2lip.config import RenderConfig
    from speech2lip.data.batches import audio_windows
    from speech2lip.data.shards import WarpData
    from speech2lip.inputs import read_clip_audio
    from speech2lip.renderer import SubjectVoice

    data = WarpData(demo_warp / "index.json")
    audio = demo_geometry / "resample/audio.wav"
    wav = read_clip_audio(audio, len(data))
    ids = np.arange(20, 70)  # 2 s of the 3.7 s clip
    cut = wav[ids[0] * SAMPLES_PER_FRAME : (ids[-1] + 1) * SAMPLES_PER_FRAME]
    voice = SubjectVoice(data, audio)
    whole = data.read_field("ppg", ids)
    cfg = RenderConfig(match_level=False)
    heard = voice.heard(cut, None, "ppg", "cut", cfg)
    alone = audio_windows(cut, "ppg")
    inner = slice(3, -3)  # the cut's edges lack their neighbours' audio either way
    near, far = (np.abs(w[inner] - whole[inner]).mean() for w in (heard, alone))
    assert near < far, (near, far)
