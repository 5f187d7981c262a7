"""Noise benchmark: how well does the mouth follow speech heard through noise or a room?

    python scripts/bench_noise.py results/obama [results/macron ...] [--snr 20 10 5]
        [--rt60 0.3 0.6 1.0] [--noise ../shared/media/audio/noisy_cafeteria_0db.wav | white]

For each finished subject folder (train, warp, resample done), the test split's own audio is
mixed with noise at each `--snr` (dB, against the power of its speech frames): a recording of
real noise (looped, from a random start) or white noise; and played in a synthetic room of each
`--rt60` (s; an exponentially decaying noise tail as loud as the direct sound). The test split
is re-rendered from each over its own frames, as `evaluate` renders its cross-voice rows (level
matched, cropped), with `render.denoise` `never` (the features hear the noise) and `auto`, and
measured against the ground truth: opening r / amplitude / best lag, LMD, mouth PSNR. The first
two rows are the clean audio through the same path, as `auto` leaves it and denoised all the
same (`always`). It also prints DeepFilterNet's speech SNR estimate and the time noise
suppression took per second of audio.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from speech2lip.config import EvaluateConfig, RenderConfig
from speech2lip.data.voice import speech_probability
from speech2lip.evaluate import Evaluation, measure_test
from speech2lip.inputs import read_clip_audio
from speech2lip.media import SAMPLE_RATE, SAMPLES_PER_FRAME, read_audio
from speech2lip.renderer import SubjectVoice, clean_speech, stream_video

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"  # ../shared/media
DEFAULT_NOISE = MEDIA / "audio" / "noisy_cafeteria_0db.wav"


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float, prob: np.ndarray) -> np.ndarray:
    """`speech` plus `noise` (as long) scaled to `snr_db` below the speech frames' power."""
    frames = np.repeat(prob >= 0.5, SAMPLES_PER_FRAME)[: len(speech)]
    power = np.mean(speech[frames] ** 2) if frames.any() else np.mean(speech**2)
    scale = np.sqrt(power / 10 ** (snr_db / 10) / max(np.mean(noise**2), 1e-12))
    return (speech + noise * scale).astype(np.float32)


def reverberant(speech: np.ndarray, rt60: float, seed: int = 0) -> np.ndarray:
    """`speech` in a synthetic room: convolved with a unit direct path followed by Gaussian noise
    decaying by 60 dB over `rt60` seconds, scaled to the direct path's energy (0 dB
    direct-to-reverberant ratio), then brought back to the speech's peak level."""
    from scipy.signal import fftconvolve

    t = np.arange(1, int(SAMPLE_RATE * rt60)) / SAMPLE_RATE
    tail = np.random.default_rng(seed).normal(0, 1, len(t)) * 10 ** (-3 * t / rt60)
    h = np.concatenate([[1.0], tail / np.sqrt(np.sum(tail**2))])
    out = fftconvolve(speech.astype(np.float64), h)[: len(speech)]
    return (out * np.abs(speech).max() / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def noise_for(kind: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "white":
        return rng.normal(0, 1, n).astype(np.float32)
    x = read_audio(kind, SAMPLE_RATE)
    x = np.tile(x, -(-(n + len(x)) // len(x)))
    start = int(rng.integers(0, len(x) - n))
    return x[start : start + n]


def bench(folder: Path, snrs: list[float], rt60s: list[float], kind: str) -> None:
    ev = Evaluation(folder / "train/model.pt", folder / "warp/index.json",
                    folder / "resample/frames.mkv", folder / "resample/meta.json",
                    EvaluateConfig(), "cpu")  # fmt: skip
    test, n = ev.test, len(ev.data)
    wav = read_clip_audio(folder / "resample/audio.wav", n)
    test_wav = wav[test[0] * SAMPLES_PER_FRAME : (test[-1] + 1) * SAMPLES_PER_FRAME]
    prob = speech_probability(test_wav, len(test))
    noise = noise_for(kind, len(test_wav))
    voice = SubjectVoice(ev.data, folder / "resample/audio.wav")
    rows = {"clean": (test_wav, "auto"), "clean, denoise always": (test_wav, "always")}
    for snr in snrs:
        for mode in ("never", "auto"):
            rows[f"{snr:g} dB, denoise {mode}"] = (mix(test_wav, noise, snr, prob), mode)
    for rt60 in rt60s:
        for mode in ("never", "auto"):
            rows[f"RT60 {rt60:g} s, denoise {mode}"] = (reverberant(test_wav, rt60), mode)
    print(f"{folder.name}: {len(test)} test frames, noise: {Path(kind).name}")
    videos, notes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (audio, mode) in rows.items():
            cfg = dataclasses.replace(RenderConfig(), output_size="cropped", denoise=mode)
            t0 = time.monotonic()
            heard, p, done = clean_speech(audio, cfg, name, True)
            took = time.monotonic() - t0
            windows = voice.heard(heard, p, ev.model.sizes.features, name, cfg)
            path = Path(tmp) / f"{len(videos)}.mp4"
            stream_video(ev.renderer, windows, test, audio, path, ev.frames_path, ev.meta, None,
                         desc=name)  # fmt: skip
            videos[name] = path
            snr = done["speech_snr_db"]
            notes[name] = (f"SNR estimate {snr:.1f} dB, " if snr is not None else "") + (
                f"denoised in {took / (len(audio) / SAMPLE_RATE):.3f} s per s"
                if done["denoised"] else "as heard")  # fmt: skip
        _, methods = measure_test(ev, videos, False, None, test_wav, np.array([0]))
    for name in rows:
        m = methods[name]
        print(f"  {name:26s} | r {m['opening_r']:.2f} / {m['opening_amplitude']:.2f}x / lag "
              f"{m['opening_best_lag']:+d} | LMD {m['lmd_px']:.2f} px | mouth PSNR "
              f"{m['psnr_db']:.2f} dB | {notes[name]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="results/<subject> folders")
    parser.add_argument("--snr", nargs="*", type=float, default=[20.0, 10.0, 5.0],
                        help="noise levels, dB SNR against the speech")  # fmt: skip
    parser.add_argument("--rt60", nargs="*", type=float, default=[0.3, 0.6, 1.0],
                        help="reverberation times of the synthetic rooms, s")  # fmt: skip
    parser.add_argument("--noise", default=str(DEFAULT_NOISE),
                        help="a recording of noise, or 'white' (default: the cafeteria "
                             "recording of ../shared/media)")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.noise != "white" and not Path(args.noise).is_file():
        parser.error(f"{args.noise}: no such noise recording (pass a file, or --noise white)")
    for folder in args.folders:
        bench(folder, args.snr, args.rt60, args.noise)


if __name__ == "__main__":
    main()
