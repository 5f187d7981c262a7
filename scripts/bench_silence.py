"""Silence benchmark: does the mouth rest, and stay still, where the driving audio is silent?

    python scripts/bench_silence.py results/obama [results/macron ...] [--seconds 2]

For each finished subject folder (train, warp, resample, landmarks done), the test split's own
audio gets `--seconds` of digital silence spliced in a third of the way through and as much
white noise at -50 dBFS two thirds of the way through. The subject is rendered driven by it
(cropped frames, `render.silence` on, then off for comparison), MediaPipe finds the lips in
every rendered frame, and inside each spliced span (less 5 frames at each edge: the voice
detector's hangover and the ramp) it prints:

- the inner-lip opening (median and 90th percentile, px) against the subject's own
  10th-percentile opening over its train frames (goal: at or below it);
- the mean frame-to-frame change of the opening (px) against the ground truth's in its own
  pauses (the silent runs of its own audio; goal: at or below it).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from speech2lip.config import RenderConfig
from speech2lip.data.voice import silent_frames, speech_probability
from speech2lip.faces.landmarkers import landmark_frames, open_landmarker
from speech2lip.geometry.topology import inner_lip_opening
from speech2lip.inputs import read_clip_audio, read_meta
from speech2lip.media import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, read_frames
from speech2lip.render import run as render

EDGE = 5  # frames left out at each end of a span


def spliced(test_wav: np.ndarray, frames: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """The test audio with `frames` of silence and of -50 dBFS noise spliced in, and where."""
    n = len(test_wav) // SAMPLES_PER_FRAME
    gap = frames * SAMPLES_PER_FRAME
    p1, p2 = n // 3, 2 * n // 3
    noise = np.random.default_rng(seed).normal(0, 10 ** (-50 / 20), gap).astype(np.float32)
    cut = [test_wav[: p1 * SAMPLES_PER_FRAME], np.zeros(gap, np.float32),
           test_wav[p1 * SAMPLES_PER_FRAME : p2 * SAMPLES_PER_FRAME], noise,
           test_wav[p2 * SAMPLES_PER_FRAME :]]  # fmt: skip
    spans = {"silence": (p1, p1 + frames), "noise -50 dBFS": (p2 + frames, p2 + 2 * frames)}
    return np.concatenate(cut).astype(np.float32), spans


def openings(video: Path, width: int, height: int, n: int) -> np.ndarray:
    """The inner-lip opening (px) of every frame of `video` (nan where no face)."""
    with open_landmarker("mediapipe") as marker:
        points, found, _ = landmark_frames(read_frames(video, width, height), n, marker)
    return np.where(found, inner_lip_opening(points), np.nan)


def ground_truth(folder: Path, n: int, train: np.ndarray) -> tuple[float, float]:
    """The subject's 10th-percentile opening over its train frames, and the mean frame-to-frame
    change of its opening inside the silent runs of its own audio."""
    marks = np.load(folder / "landmarks/landmarks.npz")
    opening = np.where(marks["found"], inner_lip_opening(marks["points"]), np.nan)
    p10 = float(np.nanpercentile(opening[train], 10))
    quiet = silent_frames(
        speech_probability(read_clip_audio(folder / "resample/audio.wav", n), n), 6
    )
    both = quiet[1:] & quiet[:-1]
    step = np.abs(np.diff(opening))[both]
    return p10, float(np.nanmean(step)) if np.isfinite(step).any() else float("nan")


def bench(folder: Path, seconds: float) -> None:
    meta = read_meta(folder / "resample/meta.json")
    n = meta["n_frames"]
    test = np.arange(*meta["split"]["test"])
    train = np.arange(*meta["split"]["train"])
    wav = read_clip_audio(folder / "resample/audio.wav", n)
    test_wav = wav[test[0] * SAMPLES_PER_FRAME : (test[-1] + 1) * SAMPLES_PER_FRAME]
    audio, spans = spliced(test_wav, int(round(seconds * FPS)))
    p10, gt_step = ground_truth(folder, n, train)
    print(f"{folder.name}: {len(test)} test frames + 2 x {seconds:g} s spliced; own p10 "
          f"opening {p10:.2f} px, ground truth's frame-to-frame change in its pauses "
          f"{gt_step:.3f} px")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        driving = Path(tmp) / "spliced.wav"
        sf.write(driving, audio, SAMPLE_RATE, subtype="FLOAT")
        for silence in (True, False):
            video = Path(tmp) / f"silence_{silence}.mp4"
            cfg = dataclasses.replace(RenderConfig(), output_size="cropped", silence=silence)
            stats = render(model=folder / "train/model.pt", index=folder / "warp/index.json",
                           frames=folder / "resample/frames.mkv",
                           meta=folder / "resample/meta.json", audio=folder / "resample/audio.wav",
                           video=video, cfg=cfg, driving=str(driving), threads=2)  # fmt: skip
            opening = openings(video, stats["width"], stats["height"], stats["frames"])
            for name, (a, b) in spans.items():
                inside = opening[a + EDGE : b - EDGE]
                step = np.nanmean(np.abs(np.diff(inside)))
                verdict = ", ".join(
                    f"{goal} goal {'met' if ok else 'missed'}"
                    for goal, ok in (("opening", np.nanpercentile(inside, 90) <= p10),
                                     ("motion", step <= gt_step))
                )  # fmt: skip
                print(f"  render.silence {str(silence).lower():5s} | {name:15s} | opening median "
                      f"{np.nanmedian(inside):.2f} px, p90 {np.nanpercentile(inside, 90):.2f} px "
                      f"(own p10 {p10:.2f}) | change {step:.3f} px/frame (ground truth's pauses "
                      f"{gt_step:.3f}) | {verdict}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="results/<subject> folders")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    for folder in args.folders:
        bench(folder, args.seconds)


if __name__ == "__main__":
    main()
