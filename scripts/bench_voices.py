"""What the audio features predict of the mouth, own voice and other voices, in seconds.

    python scripts/bench_voices.py results/obama/warp/index.json [...] [--shifts 4 -4]
        [--features mel phones mel+phones] [--compare-bands]

For each warp output and each `train.model.features` choice (mel, phones, mel+phones), fits
the lip-shape regression exactly as `train` does (the demo preset's radius, ridge and
calibration) on the train split, then predicts the test split's lip-shape codes from its own
audio, from that audio pitch-shifted (tempo kept), and from it narrow-band: band-passed to
300-3400 Hz (a telephone) and low-passed at 3 kHz. `--compare-bands` also fits without
`train.voice_bands` (the regression hearing the full band only). The audio features are
computed afresh from the clip's audio, so the figures follow the current feature code. It
prints the predicted inner-lip opening's correlation with the real one and its amplitude (std
ratio): the part of the model that decides how the mouth moves, without training the image
model (a full run gives the rendered figures: `evaluate`'s cross-voice rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from speech2lip.config import TrainConfig
from speech2lip.data.audio import frame_mel_windows
from speech2lip.data.batches import audio_windows
from speech2lip.data.phones import frame_phone_windows
from speech2lip.data.shards import WarpData
from speech2lip.geometry.lipshape import LipShapeBasis
from speech2lip.inputs import read_clip_audio
from speech2lip.media import pitch_shift
from speech2lip.models.shape import ShapeRegressor
from speech2lip.renderer import mel_contexts
from speech2lip.train.guidance import lip_shapes
from speech2lip.train.presets import resolve

FEATURES = ("mel", "phones", "mel+phones")


class Fresh:
    """A warp output whose audio fields (`mel`, `phones`) are computed again from the clip's
    audio by this code, so a change to the features is measured without re-running warp."""

    def __init__(self, data: WarpData, wav: np.ndarray) -> None:
        self.data, n = data, len(data)
        self.audio = {"mel": frame_mel_windows(wav, n), "phones": frame_phone_windows(wav, n)}

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


def bench(index: str, shifts: list[float], features_list, compare: bool) -> None:
    warped = WarpData(index)
    root = warped.index_path.parent.parent
    wav = read_clip_audio(root / "resample/audio.wav", len(warped))
    data = Fresh(warped, wav)
    train, test = data.split_ids("train"), data.split_ids("test")
    points = data.read_field("landmarks", np.arange(len(data))).astype(np.float64)
    voices = {f"{s:+g} st": pitch_shift(wav, s) for s in [0.0, *shifts]}
    voices["300-3400 Hz"] = narrow(wav, (300.0, 3400.0))
    voices["< 3 kHz"] = narrow(wav, 3000.0)
    for features, bands in (
        (f, b) for f in features_list for b in ((True, False) if compare else (True,))
    ):
        t0 = time.monotonic()
        opts = resolve(TrainConfig())
        opts = dataclasses.replace(opts, model=dataclasses.replace(opts.model, features=features))
        if not bands:
            opts = dataclasses.replace(opts, voice_bands=())
        codes, fitted = lip_shapes(data, train, opts, wav)
        reference = points[int(data.canonical["canonical_index"])]
        basis = LipShapeBasis.fit(points[train], reference, opts.model.shape_dim)
        regressor = ShapeRegressor(fitted["mean"].size, codes.shape[1])
        regressor.load(fitted)
        real = basis.opening(codes[test])
        cells = []
        for name, audio in voices.items():
            ctx = mel_contexts(audio_windows(audio, features), opts.model.audio_radius)[test]
            with torch.no_grad():
                opening = basis.opening(regressor(torch.as_tensor(ctx)).numpy())
            r = np.corrcoef(opening, real)[0, 1]
            cells.append(f"{name}: r {r:.2f}, {opening.std() / real.std():.2f}x")
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
    args = parser.parse_args()
    for index in args.indexes:
        bench(index, args.shifts, args.features, args.compare_bands)


if __name__ == "__main__":
    main()
