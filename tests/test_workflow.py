"""The Snakemake workflow: lint, DAG, a CPU end-to-end run, and what a config edit re-runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

STAGES_SO_FAR = {"sample", "resample"}


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake on the repository's Snakefile inside `workdir` (its own config.yaml)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
    cmd += ["--directory", str(workdir), "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned(proc: subprocess.CompletedProcess) -> dict[str, str]:
    """rule -> reason, from a dry run's output."""
    text = proc.stdout + proc.stderr
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if m:
            reason = re.search(r"reason: (.*)", block)
            jobs[m.group(1)] = reason.group(1) if reason else ""
    return jobs


def write_config(workdir: Path, **sections) -> Path:
    config = {"sample": {"duration": 3, "size": 256, "seed": 1}, "resample": {"size": 128}}
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_lint_is_clean():
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_plans_every_stage(tmp_path):
    write_config(tmp_path)
    jobs = planned(snakemake(tmp_path, "-n"))
    assert set(jobs) >= STAGES_SO_FAR


def test_unknown_subject_is_a_clear_error(tmp_path):
    write_config(tmp_path)
    proc = snakemake(tmp_path, "-n", "results/nobody/resample/meta.json", check=False)
    assert proc.returncode != 0
    assert "unknown subject 'nobody'" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resampel:\n  size: 128\n", "unknown key 'resampel'"),
        ("resample:\n  size: big\n", "resample.size: 'big' is not of type"),
        ("resample: [1, 2\n", "config.yaml: not valid YAML at line 2"),
    ],
)
def test_bad_config_fails_before_anything_runs(tmp_path, text, message):
    (tmp_path / "config.yaml").write_text(text)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_end_to_end_and_what_a_param_change_reruns(tmp_path):
    write_config(tmp_path)
    snakemake(tmp_path)
    meta = tmp_path / "results" / "sample" / "resample" / "meta.json"
    assert meta.is_file() and (tmp_path / "logs" / "sample" / "resample.log").is_file()
    assert (tmp_path / "benchmarks" / "sample" / "resample.tsv").is_file()
    assert planned(snakemake(tmp_path, "-n")) == {}  # nothing left to do

    write_config(tmp_path, resample={"crop_margin": 0.3})  # a resample param: resample only
    jobs = planned(snakemake(tmp_path, "-n"))
    assert set(jobs) - {"all"} == {"resample"}
    assert "Params have changed" in jobs["resample"]

    write_config(tmp_path, sample={"seed": 2})  # a sample param: sample and what follows
    jobs = planned(snakemake(tmp_path, "-n"))
    assert set(jobs) - {"all"} == {"sample", "resample"}
    assert "Params have changed" in jobs["sample"]

    # per-subject overrides are params of that subject's resample job
    write_config(tmp_path)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    config["subjects"] = {"sample": {"video": "data/sample/video.mp4", "resample": {"size": 64}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    jobs = planned(snakemake(tmp_path, "-n"))
    assert set(jobs) - {"all"} == {"resample"}
