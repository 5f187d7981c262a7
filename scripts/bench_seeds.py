"""Seed benchmark: how far a variant's rendered figures move with the training seed alone.

    python scripts/bench_seeds.py WORKDIR SUBJECT [--seeds 0 1 2] [--set train.model.lips_grid=4]
                                  [--out /tmp/s2l-seeds] [--cores 2]

WORKDIR is a finished pipeline's work folder (its config.yaml and results/SUBJECT up to
`sync_expert`). For each seed, a copy of SUBJECT's results up to `sync_expert` is trained,
rendered and evaluated again with `train.seed` set to it (and each `--set` key, a dotted config
path = a YAML value, applied to the copy's config), without the driving files, one job at a
time. It prints each run's test-split figures (opening r, amplitude, LMD and the nearest-audio
baseline's, mouth PSNR / SSIM, CPBD over the ground truth's, training seconds) and their mean,
standard deviation and range. On obama's 85-frame test split a seed alone moved LMD by 0.11 px
and PSNR by 0.2 dB (docs/benchmarks.md): compare variants by these spreads, not by one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ["resample", "landmarks", "fit3dmm", "pose_depth", "warp", "sync_expert"]
FIGURES = ["opening_r", "amplitude", "lmd_px", "nearest_lmd_px", "psnr_db", "ssim",
           "cpbd_ratio", "train_s"]  # fmt: skip


def apply(config: dict, dotted: str, value) -> None:
    """Set `config`'s key at the dotted path (sections are made as needed)."""
    *sections, key = dotted.split(".")
    for name in sections:
        config = config.setdefault(name, {})
    config[key] = value


def run_config(base: dict, subject: str, seed: int, settings: list[str]) -> dict:
    """The run's config: `base` with only `subject` (no driving files), `train.seed` = seed and
    each `key=value` of `settings` applied."""
    config = json.loads(json.dumps(base))  # a deep copy
    config["subjects"] = {subject: {**base["subjects"][subject], "driving": []}}
    apply(config, "train.seed", seed)
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value, e.g. train.model.lips_grid=4")
        apply(config, key, yaml.safe_load(value))
    return config


def figures(folder: Path) -> dict:
    """One run's test-split figures from its metrics.json and train.json."""
    metrics = json.loads((folder / "evaluate/metrics.json").read_text())["methods"]
    ours, truth = metrics["speech2lip"], metrics["ground_truth"]
    train = json.loads((folder / "train/train.json").read_text())
    return {"opening_r": ours["opening_r"], "amplitude": ours["opening_amplitude"],
            "lmd_px": ours["lmd_px"], "nearest_lmd_px": metrics["nearest_audio"]["lmd_px"],
            "psnr_db": ours["psnr_db"], "ssim": ours["ssim"],
            "cpbd_ratio": ours["cpbd"] / truth["cpbd"] if truth.get("cpbd") else None,
            "train_s": train["seconds"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, help="a finished pipeline's work folder")
    parser.add_argument("subject")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a config change, e.g. train.steps=2000 (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("/tmp/s2l-seeds"))
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    source = args.workdir / "results" / args.subject
    missing = [s for s in UPSTREAM if not (source / s).is_dir()]
    if missing or not (args.workdir / "config.yaml").is_file():
        raise SystemExit(f"{args.workdir}: no config.yaml or no results/{args.subject}/"
                         f"{', '.join(missing) or 'config'}: run the pipeline there to "
                         "sync_expert first")  # fmt: skip
    base = yaml.safe_load((args.workdir / "config.yaml").read_text())
    if args.subject not in base.get("subjects", {}):
        raise SystemExit(f"{args.workdir}/config.yaml has no subject {args.subject!r}")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    rows = []
    for seed in args.seeds:
        work = args.out / f"{args.subject}-seed{seed}"
        shutil.rmtree(work, ignore_errors=True)
        for stage in UPSTREAM:
            shutil.copytree(source / stage, work / "results" / args.subject / stage)
        video = Path(base["subjects"][args.subject]["video"])
        if not video.is_absolute():  # inside the work folder (the demo's data/sample/...)
            (work / video).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(args.workdir / video, work / video)
        config = run_config(base, args.subject, seed, args.settings)
        (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        target = f"results/{args.subject}/evaluate/metrics.json"
        snakemake = [sys.executable, "-m", "snakemake", target, "--snakefile",
                     str(ROOT / "Snakefile"), "--directory", str(work), "--cores",
                     str(args.cores), "--jobs", "1"]  # fmt: skip
        # the copied results count as done; only train, render and evaluate run
        subprocess.run([*snakemake, "--touch", "--until", "sync_expert", "-q"], check=True,
                       env=env)  # fmt: skip
        print(f"seed {seed}: training, rendering and evaluating {args.subject} in {work}",
              flush=True)  # fmt: skip
        subprocess.run([*snakemake, "-q"], check=True, env=env)
        rows.append(figures(work / "results" / args.subject))
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()
                                           if v is not None), flush=True)  # fmt: skip
    print(f"{args.subject}, seeds {args.seeds}, settings {args.settings or 'none'}:")
    print("figure | mean | sd | min | max")
    for key in FIGURES:
        values = np.array([r[key] for r in rows if r[key] is not None], np.float64)
        if len(values):
            sd = values.std(ddof=1) if len(values) > 1 else 0.0
            print(f"{key} | {values.mean():.3f} | {sd:.3f} | {values.min():.3f} | "
                  f"{values.max():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
