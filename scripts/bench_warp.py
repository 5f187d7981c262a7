"""Warp-shard reader benchmark: throughput and peak memory while streaming a long clip.

    python scripts/bench_warp.py --index /tmp/s2l-bench/results/sample/warp/index.json \
        [--minutes 5] [--workdir /tmp/s2l-warp-long]

Builds (once) a clip of --minutes at 25 fps by repeating the frames of a real `warp` output
(same fields, sizes and compression, so bytes per frame are real), then measures, each in a
fresh process: sequential streaming of every frame, random-access batches (what training
does), and preloading. Prints frames/s and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from speech2lip.data.shards import Field, WarpData, create_fields, shard_name, shard_ranges


def build(src_index: Path, out: Path, n: int) -> None:
    if (out / "index.json").is_file() and json.loads((out / "index.json").read_text())[
        "n_frames"
    ] == n:
        return
    shutil.rmtree(out, ignore_errors=True)
    (out / "shards").mkdir(parents=True)
    src = WarpData(src_index)
    index = dict(src.index)
    fields = {k: Field(tuple(v["shape"]), v["dtype"], v.get("units", ""), k)
              for k, v in index["fields"].items()}  # fmt: skip
    per = src.shards[0]["stop"] - src.shards[0]["start"]
    shards = []
    for number, (a, b) in enumerate(shard_ranges(n, per)):
        ids = np.arange(a, b) % src.n_frames
        data = src.read(ids)
        path = out / "shards" / shard_name(number)
        with h5py.File(path, "w") as h5:
            for key, dset in create_fields(h5, fields, b - a, index["compression"], 4).items():
                dset[:] = data[key]
            h5.attrs.update({"start": a, "stop": b})
        shards.append({"file": f"shards/{path.name}", "start": a, "stop": b,
                       "bytes": path.stat().st_size})  # fmt: skip
    shutil.copy(src_index.parent / index["canonical"], out / index["canonical"])
    test = max(1, n // 10)
    index.update(n_frames=n, shards=shards, bytes=sum(s["bytes"] for s in shards),
                 split={"train": [0, n - test], "test": [n - test, n]})  # fmt: skip
    (out / "index.json").write_text(json.dumps(index))


def measure(mode: str, index: str) -> None:
    """Child process: read the whole clip in `mode` and print one JSON line."""
    t = time.perf_counter()
    data = WarpData(index, preload=mode == "preload")
    n = len(data)
    if mode == "stream":
        for _ in data.stream(batch=32):
            pass
    elif mode == "random":
        rng = np.random.default_rng(0)
        for _ in range(n // 16):
            data.read(np.sort(rng.choice(data.split_ids("train"), 16, replace=False)))
    elapsed = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "frames": n, "seconds": elapsed, "fps": n / elapsed,
                      "peak_rss_mb": rss}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="index.json of a real warp output")
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--workdir", default="/tmp/s2l-warp-long")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.index)
        return
    out = Path(args.workdir)
    n = int(args.minutes * 60 * 25)
    t = time.perf_counter()
    build(Path(args.index), out, n)
    index = json.loads((out / "index.json").read_text())
    print(
        f"clip: {n} frames ({args.minutes} min), {index['bytes'] / 2**20:.0f} MiB on disk, "
        f"{index['bytes'] / n / 1024:.0f} KiB/frame (built in {time.perf_counter() - t:.0f} s)"
    )
    for mode in ("stream", "random", "preload"):
        line = subprocess.run(
            [sys.executable, __file__, "--index", str(out / "index.json"), "--measure", mode],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(line.stdout.strip().splitlines()[-1])
        print(f"{mode:8s} {r['fps']:8.0f} frames/s  peak RSS {r['peak_rss_mb']:6.0f} MB  "
              f"({r['seconds']:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
