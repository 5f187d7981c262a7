"""Stage throughput benchmarks (figures, not assertions).

    python scripts/benchmark.py [--seconds 20] [--media ../shared/media]

Prints, for this machine: `sample` generation time per second of video, and `resample`
frames/s on the demo clip and on each real clip found under --media.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

from speech2lip.config import ResampleConfig, SampleConfig
from speech2lip.resample import run as resample
from speech2lip.sample import run as sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="length of the demo clip")
    parser.add_argument(
        "--media", default=str(Path(__file__).resolve().parents[2] / "shared/media")
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo.mp4"
        t0 = time.perf_counter()
        script = sample(SampleConfig(duration=args.seconds), demo)
        dt = time.perf_counter() - t0
        video_s = script.n_frames / 25
        rows.append(("sample", f"{video_s:.1f} s demo", f"{dt / video_s:.2f} s per video second",
                     f"{script.n_frames / dt:.1f} frames/s"))  # fmt: skip
        clips = [("demo", demo)]
        media = Path(args.media)
        if media.is_dir():
            clips += [(p.name, p) for p in sorted(media.glob("*.mp4"))]
        for name, path in clips:
            t0 = time.perf_counter()
            meta = resample(path, Path(tmp) / name, ResampleConfig())
            dt = time.perf_counter() - t0
            n = meta["n_frames"]
            src = meta["source"]
            rows.append((
                "resample", f"{name} ({src['width']}x{src['height']}, {n} frames)",
                f"{dt:.1f} s", f"{n / dt:.1f} frames/s",
            ))  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for row in rows:
        print(" | ".join(row))
    print(f"peak RSS of this process: {peak:.0f} MB (ffmpeg children not counted)")


if __name__ == "__main__":
    main()
