"""Pipeline benchmark: run the workflow on the demo and the real clips, print per-stage figures.

    python scripts/bench_pipeline.py [--workdir /tmp/s2l-bench] [--media ../shared/media]
                                     [--cores 2] [--demo-seconds 60]

Runs Snakemake (one job at a time, so stage timings do not overlap) in a work folder whose
config lists the demo subject and every clip under --media, then prints, per subject and
stage, wall time, frames/s and peak memory (from each rule's benchmark TSV) and the face fit's
reprojection error and pose jitter (from fit3dmm/fit.json), and the warp stage's bytes per
frame and O2C->C2O round-trip PSNR (from warp/warp.json), the sync expert's check, training's
held-out PSNR, render speed, and the evaluation's metric table (ours, ground truth, baselines)
for every subject. With --media, each real clip is also driven by the English driving audio
file jfk_en.flac under media/audio (`driven/<name>.mp4`, measured without ground truth).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["resample", "landmarks", "fit3dmm", "pose_depth", "warp", "sync_expert", "train",
          "render", "evaluate"]  # fmt: skip
DRIVING = ["jfk_en.flac"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/s2l-bench")
    parser.add_argument("--media", default=str(ROOT.parent / "shared" / "media"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--demo-seconds", type=float, default=60)
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    subjects = {"sample": {"video": "data/sample/video.mp4"}}
    media = Path(args.media)
    if media.is_dir():
        driving = [str((media / "audio" / a).resolve()) for a in DRIVING
                   if (media / "audio" / a).is_file()]  # fmt: skip
        for clip in sorted(media.glob("*.mp4")):
            subjects[clip.stem.split("_")[0]] = {"video": str(clip.resolve()), "driving": driving}
    config = {"subjects": subjects, "sample": {"duration": args.demo_seconds}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                    "--directory", str(work), "--cores", str(args.cores), "--jobs", "1", "-q"],
                   check=True, env=env)  # fmt: skip
    print(f"cores: {args.cores}")
    print("subject | frames | stage | wall s | frames/s | peak RSS MB")
    for name in subjects:
        n = json.loads((work / f"results/{name}/resample/meta.json").read_text())["n_frames"]
        total = 0.0
        for stage in STAGES:
            with open(work / f"benchmarks/{name}/{stage}.tsv") as f:
                row = list(csv.DictReader(f, delimiter="\t"))[-1]
            wall = float(row["s"])
            total += wall if stage in ("landmarks", "fit3dmm", "pose_depth") else 0
            print(f"{name} | {n} | {stage} | {wall:.1f} | {n / wall:.1f} | {row['max_rss']}")
        print(f"{name} | {n} | landmarks+fit3dmm+pose_depth | {total:.1f} | {n / total:.1f} |")
        fit = json.loads((work / f"results/{name}/fit3dmm/fit.json").read_text())
        err, jb, ja = fit["error_px"], fit["jitter_before"], fit["jitter_after"]
        print(f"  fit: reprojection mean {err['mean']:.2f} px (p95 {err['p95']:.2f}, before "
              f"smoothing {err['mean_before_smoothing']:.2f}), focal {fit['focal_px']:.0f} px "
              f"({fit['focal_source']}), jitter {jb['rotation_deg']:.3f} -> "
              f"{ja['rotation_deg']:.3f} deg/frame^2")  # fmt: skip
        w = json.loads((work / f"results/{name}/warp/warp.json").read_text())
        rt = w["roundtrip_psnr_db"]
        print(f"  warp: {w['frames_per_second']:.1f} frames/s in-stage ({w['processes']} "
              f"processes), {w['bytes_per_frame'] / 1024:.0f} KiB/frame, lip box "
              f"{w['lip_box'][2]}x{w['lip_box'][3]}, extended {w['extended_box'][2]}x"
              f"{w['extended_box'][3]}, O2C->C2O round-trip PSNR in the mouth box: median "
              f"{rt['median']:.1f} dB (mean {rt['mean']:.1f}, p5 {rt['p5']:.1f}), valid "
              f"canonical pixels {100 * w['canonical_mask_fraction']:.1f} %")  # fmt: skip
        se = json.loads((work / f"results/{name}/sync_expert/sync_expert.json").read_text())
        print(f"  sync_expert: held-out pair accuracy {100 * se['heldout_pair_accuracy']:.0f} %, "
              f"offset {se['offset']:+d}, confidence {se['confidence']:.3f}, "
              f"{'usable' if se['usable'] else 'NOT usable: ' + se['reason']}")  # fmt: skip
        tr = json.loads((work / f"results/{name}/train/train.json").read_text())
        print(f"  train: {tr['seconds']:.0f} s, held-out lips {tr['heldout_lips_psnr_db']:.2f} dB "
              f"(static {tr['static_mouth_psnr_db']:.2f}, mean mouth "
              f"{tr['mean_mouth_psnr_db']:.2f}), mouth box {tr['heldout_mouth_psnr_db']:.2f} dB, "
              f"L_s {tr['sync_loss']}")  # fmt: skip
        rs = json.loads((work / f"results/{name}/video.json").read_text())
        print(f"  render: {rs['frames_per_second']:.1f} frames/s in-stage at {rs['width']}x"
              f"{rs['height']} (pasted back: {rs['pasted_back']})")  # fmt: skip
        ev = json.loads((work / f"results/{name}/evaluate/metrics.json").read_text())
        print(
            "  evaluate: method | PSNR | SSIM | lip-box PSNR/SSIM | CPBD | LMD | opening r / "
            "amplitude / best lag | sync proxy conf (offset) | LSE-D/C"
        )
        rows = list(ev["methods"].items()) + [(f"driven:{k}", v) for k, v in ev["driven"].items()]
        for method, m in rows:

            def f(key, fmt="{:.3f}", m=m):
                return fmt.format(m[key]) if m.get(key) is not None else "n/a"

            print(f"    {method} | {f('psnr_db', '{:.2f}')} | {f('ssim')} | "
                  f"{f('lip_psnr_db', '{:.2f}')}/{f('lip_ssim')} | {f('cpbd')} | "
                  f"{f('lmd_px', '{:.2f}')} | {f('opening_r', '{:.2f}')} / "
                  f"{f('opening_amplitude', '{:.2f}x')} / {f('opening_best_lag', '{:+d}')} | "
                  f"{f('sync_proxy_confidence')} "
                  f"({f('sync_proxy_offset', '{:+d}')}) | {f('lse_d', '{:.2f}')}/"
                  f"{f('lse_c', '{:.2f}')}")  # fmt: skip
        for line in ev["verdicts"]:
            print(f"    {line}")


if __name__ == "__main__":
    main()
