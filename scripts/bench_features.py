"""Audio-feature speed on one core (figures, not assertions).

    python scripts/bench_features.py [AUDIO ...] [--media ../shared/media]

For each audio file (by default every file under --media/audio), prints how many times faster
than real time each audio feature of `train.model.features` is computed on one core: the mel
windows, decoded phones (pocketsphinx's allphone search) and phone posteriors (its acoustic
model scored frame by frame). Numpy and torch are held to one thread (set before they load).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from speech2lip.data.audio import frame_mel_windows  # noqa: E402
from speech2lip.data.phones import frame_phone_windows  # noqa: E402
from speech2lip.data.posteriors import frame_ppg_windows, load_model  # noqa: E402
from speech2lip.media import SAMPLES_PER_FRAME, read_audio  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="*", help="audio or video files")
    parser.add_argument(
        "--media", default=str(Path(__file__).resolve().parents[2] / "shared/media")
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = args.audio or sorted(str(p) for p in (Path(args.media) / "audio").glob("*"))
    load_model()  # read once, as warp and render do
    features = {"mel": lambda w, n: frame_mel_windows(w, n),
                "phones (decoded)": lambda w, n: frame_phone_windows(w, n),
                "ppg (posteriors)": lambda w, n: frame_ppg_windows(w, n)}  # fmt: skip
    for path in paths:
        wav = read_audio(path)
        n = len(wav) // SAMPLES_PER_FRAME
        wav = wav[: n * SAMPLES_PER_FRAME]
        seconds = len(wav) / 16000
        cells = []
        for name, make in features.items():
            t0 = time.perf_counter()
            make(wav, n)
            cells.append(f"{name} {seconds / (time.perf_counter() - t0):.0f}x")
        print(f"{Path(path).name} ({seconds:.0f} s): " + " | ".join(cells) + " real time, 1 core")


if __name__ == "__main__":
    main()
