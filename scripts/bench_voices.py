"""What the audio features predict of the mouth, own voice and other voices, in seconds.

    python scripts/bench_voices.py results/obama/warp/index.json [...] [--shifts 4 -4]
        [--features mel phones mel+phones] [--compare-bands] [--drivers talk.mp4 ...]

For each warp output and each `train.model.features` choice (mel, phones, mel+phones), fits
the lip-shape regression exactly as `train` does (the demo preset's radius, ridge,
calibration and, with phone features, P/B/M pull) on the train split, then predicts the test
split's lip-shape codes from its own audio, from that audio pitch-shifted (tempo kept), and
from it narrow-band: band-passed to 300-3400 Hz (a telephone) and low-passed at 3 kHz.
`--compare-bands` also fits without
`train.voice_bands` (the regression hearing the full band only). The audio features are
computed afresh from the clip's audio, so the figures follow the current feature code. It
prints the predicted inner-lip opening's correlation with the real one and its amplitude (std
ratio): the part of the model that decides how the mouth moves, without training the image
model (a full run gives the rendered figures: `evaluate`'s cross-voice rows).

`--drivers`: videos of other people talking (not the subject's own clip). Each one's sound,
brought to the subject's speech level as `render` does, goes through the same regression, and
the predicted opening is correlated with the speaker's own inner-lip opening in its picture
(`evaluate`'s driving-video reference), over all frames and over its speech frames (silero-vad):
sync with other real voices, per driver and averaged.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from speech2lip.config import TrainConfig
from speech2lip.data.audio import frame_mel_windows
from speech2lip.data.batches import audio_windows, phone_row
from speech2lip.data.phones import frame_phone_windows
from speech2lip.data.posteriors import frame_ppg_windows
from speech2lip.data.shards import WarpData
from speech2lip.geometry.lipshape import LipShapeBasis
from speech2lip.inputs import read_clip_audio
from speech2lip.media import SAMPLES_PER_FRAME, pitch_shift
from speech2lip.models.shape import ShapeRegressor
from speech2lip.renderer import mel_contexts
from speech2lip.train.guidance import lip_shapes
from speech2lip.train.presets import resolve

FEATURES = ("mel", "phones", "mel+phones", "ppg", "mel+ppg")


class Fresh:
    """A warp output whose audio fields (`mel`, `phones`) are computed again from the clip's
    audio by this code, so a change to the features is measured without re-running warp."""

    def __init__(self, data: WarpData, wav: np.ndarray) -> None:
        self.data, n = data, len(data)
        self.audio = {
            "mel": frame_mel_windows(wav, n),
            "phones": frame_phone_windows(wav, n),
            "ppg": frame_ppg_windows(wav, n),
        }

    def __len__(self) -> int:
        return len(self.data)

    def __getattr__(self, name: str):
        return getattr(self.data, name)

    def read_field(self, name: str, ids: np.ndarray) -> np.ndarray:
        if name in self.audio:
            return self.audio[name][np.asarray(ids)]
        return self.data.read_field(name, ids)


def narrow(wav: np.ndarray, band: tuple[float, float] | float) -> np.ndarray:
    """`wav` band-passed to `band` (Hz, low and high) or low-passed at it (zero phase)."""
    from scipy.signal import butter, sosfiltfilt

    kind = "band" if isinstance(band, tuple) else "low"
    sos = butter(4, band, btype=kind, fs=16000, output="sos")
    return sosfiltfilt(sos, wav.astype(np.float64)).astype(np.float32)


def load_drivers(paths: list[str]) -> dict[str, dict]:
    """Each driving video's sound (16 kHz, whole frames), speech probability and its speaker's
    inner-lip opening per frame (videos without a measurable face are left out, saying so)."""
    from pathlib import Path

    from speech2lip.data.voice import speech_probability
    from speech2lip.evaluate.voices import driver_opening
    from speech2lip.media import read_audio

    out = {}
    for path in map(Path, paths):
        wav = read_audio(path)
        n = len(wav) // SAMPLES_PER_FRAME
        wav = wav[: n * SAMPLES_PER_FRAME]
        mouth = driver_opening(path, n)
        if mouth is None:
            print(f"{path.name}: no face to measure in most frames; left out")
            continue
        out[path.stem] = {"wav": wav, "opening": mouth[0], "prob": speech_probability(wav, n)}
    return out


def follow_drivers(regressor, basis, opts, drivers: dict, level_db, prior) -> list[str]:
    """Cells "name: r all / r speech" of the predicted opening against each driver's mouth,
    and the mean over drivers (heard as `render` hears them: at the subject's speech level
    `level_db`, the posteriors' cepstral mean started from the subject's `prior`)."""
    from speech2lip.data.voice import match_level

    cells, rs = [], []
    for name, d in drivers.items():
        wav, _ = match_level(d["wav"], d["prob"], level_db)
        windows = audio_windows(wav, opts.model.features, name, prior)
        ctx = mel_contexts(windows, opts.model.audio_radius)
        with torch.no_grad():
            opening = basis.opening(regressor(torch.as_tensor(ctx)).numpy())
        ok = np.isfinite(d["opening"])
        speech = ok & (d["prob"] >= 0.5)
        r_all = np.corrcoef(opening[ok], d["opening"][ok])[0, 1]
        r_speech = np.corrcoef(opening[speech], d["opening"][speech])[0, 1]
        rs.append((r_all, r_speech))
        cells.append(f"{name}: r {r_all:.2f} / {r_speech:.2f}")
    if rs:
        mean = np.mean(rs, axis=0)
        cells.append(f"drivers' mean: r {mean[0]:.2f} / {mean[1]:.2f} (all / speech frames)")
    return cells


def bench(
    index: str, shifts: list[float], features_list, compare: bool, drivers: dict | None = None
) -> None:
    warped = WarpData(index)
    root = warped.index_path.parent.parent
    wav = read_clip_audio(root / "resample/audio.wav", len(warped))
    data = Fresh(warped, wav)
    train, test = data.split_ids("train"), data.split_ids("test")
    points = data.read_field("landmarks", np.arange(len(data))).astype(np.float64)
    voices = {f"{s:+g} st": pitch_shift(wav, s) for s in [0.0, *shifts]}
    voices["300-3400 Hz"] = narrow(wav, (300.0, 3400.0))
    voices["< 3 kHz"] = narrow(wav, 3000.0)
    level_db = prior = None
    if drivers:  # the subject's speech level and cepstral mean over its train frames, as render
        from speech2lip.data.posteriors import cepstra, cepstral_mean
        from speech2lip.data.voice import speech_level, speech_probability

        span = wav[train[0] * SAMPLES_PER_FRAME : (train[-1] + 1) * SAMPLES_PER_FRAME]
        level_db = speech_level(span, speech_probability(span))
        prior = cepstral_mean(*cepstra(span))
    for features, bands in (
        (f, b) for f in features_list for b in ((True, False) if compare else (True,))
    ):
        t0 = time.monotonic()
        opts = resolve(TrainConfig())
        opts = dataclasses.replace(opts, model=dataclasses.replace(opts.model, features=features))
        if not bands:
            opts = dataclasses.replace(opts, voice_bands=())
        codes, fitted = lip_shapes(data, train, opts, wav)
        basis = LipShapeBasis.of_subject(points, data.canonical["canonical_index"], train,
                                         opts.model.shape_dim)  # fmt: skip
        closure_row = phone_row(features, "lips_closed")  # as the model applies it
        regressor = ShapeRegressor(fitted["mean"].size, codes.shape[1], closure_row)
        regressor.load(fitted)
        real = basis.opening(codes[test])
        cells = []
        for name, audio in voices.items():
            ctx = mel_contexts(audio_windows(audio, features), opts.model.audio_radius)[test]
            with torch.no_grad():
                opening = basis.opening(regressor(torch.as_tensor(ctx)).numpy())
            r = np.corrcoef(opening, real)[0, 1]
            cells.append(f"{name}: r {r:.2f}, {opening.std() / real.std():.2f}x")
        if drivers:
            cells += follow_drivers(regressor, basis, opts, drivers, level_db, prior)
        heard = f"bands {list(opts.voice_bands)}"
        print(f"{root.name} | {features:10s} | {heard:14s} | " + " | ".join(cells)
              + f" | {time.monotonic() - t0:.0f} s", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("indexes", nargs="+", help="results/<subject>/warp/index.json")
    parser.add_argument("--shifts", nargs="*", type=float, default=[4.0, -4.0])
    parser.add_argument("--features", nargs="+", choices=FEATURES, default=list(FEATURES))
    parser.add_argument("--compare-bands", action="store_true",
                        help="also fit without train.voice_bands")  # fmt: skip
    parser.add_argument("--drivers", nargs="*", default=[], metavar="VIDEO",
                        help="videos of other people talking: the predicted opening against "
                        "each speaker's own")  # fmt: skip
    args = parser.parse_args()
    drivers = load_drivers(args.drivers) if args.drivers else None
    for index in args.indexes:
        bench(index, args.shifts, args.features, args.compare_bands, drivers)


if __name__ == "__main__":
    main()
