"""The Snakemake workflow: lint, DAG, a CPU end-to-end run, and what a config edit re-runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

AFTER_WARP = {"sync_expert", "train", "render", "evaluate"}
AFTER_RESAMPLE = {"resample", "landmarks", "fit3dmm", "pose_depth", "warp"} | AFTER_WARP
STAGES = {"sample"} | AFTER_RESAMPLE
TINY = {  # every stage, in seconds: a 3-second clip, a few training steps
    "sample": {"duration": 3, "size": 256, "seed": 1}, "resample": {"size": 192},
    "fit3dmm": {"iterations": 30, "n_expression": 8},
    "sync_expert": {"steps": 3, "batch": 4, "search_offsets": 2},
    "train": {"steps": 12, "batch_frames": 4, "mouth_start": 0, "sync_start": 0,
              "checkpoint_every": 12, "log_every": 6, "lips_pixels": 128, "mouth_frames": 1,
              "model": {"lips_width": 16, "lips_layers": 2, "lips_skip": 0, "uv_freqs": 2,
                        "audio_dim": 8, "audio_radius": 1, "blend_channels": [4, 8]}},
    "render": {"encoder_preset": "ultrafast"}, "evaluate": {"strip_frames": 2},
}  # fmt: skip


def snakemake(
    workdir: Path, *args: str, snakefile: Path = ROOT / "Snakefile", check: bool = True
) -> subprocess.CompletedProcess:
    """Run Snakemake on `snakefile` inside `workdir` (which holds its own config.yaml)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)]
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
    config = {k: dict(v) for k, v in TINY.items()}
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
    assert set(jobs) == STAGES | {"all"}
    jobs = planned(snakemake(tmp_path, "-n", "results/sample/train/model.pt"))
    assert set(jobs) == STAGES - {"render", "evaluate"}  # training needs the sync expert
    jobs = planned(snakemake(tmp_path, "-n", "results/sample/video.mp4"))
    assert set(jobs) == STAGES - {"evaluate"}


def test_unknown_subject_is_a_clear_error(tmp_path):
    write_config(tmp_path)
    proc = snakemake(tmp_path, "-n", "results/nobody/resample/meta.json", check=False)
    assert proc.returncode != 0
    assert "unknown subject 'nobody'" in proc.stdout + proc.stderr


def test_a_failed_job_prints_its_one_line_error_through_the_profiles(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video\n")
    write_config(tmp_path, subjects={"x": {"video": "notes.mp4"}})
    for profile in ("local", "slurm"):
        text = (ROOT / "workflow" / "profiles" / profile / "config.yaml").read_text()
        assert yaml.safe_load(text)["show-failed-logs"] is True, profile
    proc = snakemake(tmp_path, "--profile", str(ROOT / "workflow/profiles/local"),
                     "results/x/resample/meta.json", check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "speech2lip resample: error:" in proc.stdout + proc.stderr  # the log, shown


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


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A private copy of the workflow (so its code can be edited) after a finished CPU run."""
    wf = tmp_path_factory.mktemp("wf")
    for name in ("Snakefile", "rules", "workflow", "speech2lip", "envs"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, wf / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, wf / name)
    work = wf / "run"
    work.mkdir()
    write_config(work)
    snakemake(work, snakefile=wf / "Snakefile")
    return work


def dry(work: Path, *args: str) -> dict[str, str]:
    """Jobs a dry run of the private workflow copy plans (without `all`), with their reasons."""
    jobs = planned(snakemake(work, "-n", *args, snakefile=work.parent / "Snakefile"))
    jobs.pop("all", None)
    return jobs


@pytest.mark.slow
def test_end_to_end_run_leaves_outputs_logs_and_benchmarks(finished):
    for out in ("resample/meta.json", "landmarks/landmarks.npz", "fit3dmm/fit.npz",
                "pose_depth/geometry.h5", "pose_depth/qa_contact_sheet.png", "warp/index.json",
                "warp/shards/shard_00000.h5", "warp/qa_roundtrip.png",
                "sync_expert/expert.pt", "train/model.pt", "train/loss_curve.png", "video.mp4",
                "evaluate/metrics.json", "evaluate/report.html"):  # fmt: skip
        assert (finished / "results" / "sample" / out).is_file(), out
    assert (finished / "data" / "sample" / "video.mp4").is_file()
    for stage in STAGES:
        assert (finished / "logs" / "sample" / f"{stage}.log").is_file()
        assert (finished / "benchmarks" / "sample" / f"{stage}.tsv").is_file()
    assert dry(finished) == {}  # nothing left to do


@pytest.mark.slow
def test_a_param_change_reruns_that_stage_and_what_follows(finished):
    try:
        write_config(finished, resample={"crop_margin": 0.3})
        jobs = dry(finished)
        assert set(jobs) == AFTER_RESAMPLE and "Params have changed" in jobs["resample"]

        write_config(finished, sample={"seed": 2})
        jobs = dry(finished)
        assert set(jobs) == STAGES and "Params have changed" in jobs["sample"]

        write_config(finished, pose_depth={"head_grow": 0.5})
        jobs = dry(finished)
        assert set(jobs) == {"pose_depth", "warp"} | AFTER_WARP
        assert "Params have changed" in jobs["pose_depth"]

        write_config(finished, train={"lr": 0.01})
        jobs = dry(finished)
        assert set(jobs) == {"train", "render", "evaluate"}
        assert "Params have changed" in jobs["train"]

        write_config(finished, evaluate={"strip_frames": 3})  # the last stage: itself only
        jobs = dry(finished)
        assert set(jobs) == {"evaluate"} and "Params have changed" in jobs["evaluate"]

        override = {"sample": {"video": "data/sample/video.mp4", "resample": {"size": 64}}}
        write_config(finished, subjects=override)
        assert set(dry(finished)) == AFTER_RESAMPLE  # a per-subject override is a param too
    finally:
        write_config(finished)
    assert dry(finished) == {}


def edited(module: Path, text: str, when: float) -> None:
    """Write `text` to `module` with mtime `when` (copy2 kept the repo's old mtimes)."""
    module.write_text(text)
    os.utime(module, (when, when))


@pytest.mark.slow
def test_editing_a_stage_module_reruns_it_and_touching_it_does_not(finished):
    module = finished.parent / "speech2lip" / "resample.py"
    original = module.read_text()
    stat = module.stat()
    try:
        later = time.time() + 3600  # newer than every output
        os.utime(module, (later, later))  # touched, same content
        assert dry(finished) == {}  # small inputs are compared by checksum
        edited(module, original + "\n# an edit\n", later + 3600)
        jobs = dry(finished)
        assert set(jobs) == AFTER_RESAMPLE and "resample.py" in jobs["resample"]
    finally:
        edited(module, original, stat.st_mtime)
    assert dry(finished) == {}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("library_module", "first", "expected"),
    [  # a library module re-runs exactly the stages whose import closure holds it, and after
        ("fit3dmm/facemodel.py", "fit3dmm", {"fit3dmm", "pose_depth", "warp"} | AFTER_WARP),
        ("geometry/gamem.py", "warp", {"warp"} | AFTER_WARP),  # warp, train, render import it
        ("models/expert.py", "sync_expert", AFTER_WARP),
        ("renderer/pose.py", "render", {"render", "evaluate"}),  # render-only code
        ("faces/landmarkers.py", "resample", AFTER_RESAMPLE),  # resample finds the A/V offset
    ],
)
def test_editing_a_library_module_reruns_the_stages_that_import_it(
    finished, library_module, first, expected
):
    module = finished.parent / "speech2lip" / library_module
    original, stat = module.read_text(), module.stat()
    try:
        edited(module, original + "\n# an edit\n", time.time() + 7200)
        jobs = dry(finished)
        assert set(jobs) == expected
        assert library_module.split("/")[-1] in jobs[first]  # the reason names the file
    finally:
        edited(module, original, stat.st_mtime)
    assert dry(finished) == {}


@pytest.mark.slow
def test_a_module_no_stage_imports_reruns_nothing(finished):
    package = finished.parent / "speech2lip"
    scratch = package / "scratch_helper.py"
    cli, original = package / "cli.py", (package / "cli.py").read_text()
    mtime = cli.stat().st_mtime
    try:
        edited(scratch, "VALUE = 1\n", time.time() + 7200)
        edited(cli, original + "\n# an edit\n", time.time() + 7200)  # the entry point
        assert dry(finished) == {}
    finally:
        scratch.unlink()
        edited(cli, original, mtime)


@pytest.mark.slow
def test_lowering_train_steps_trains_again_instead_of_reusing_the_checkpoint(finished):
    summary = finished / "results" / "sample" / "train" / "train.json"
    try:
        write_config(finished, train={"steps": 6, "checkpoint_every": 6})
        proc = snakemake(finished, snakefile=finished.parent / "Snakefile")
        said = proc.stdout + proc.stderr  # the run's last words: stage times, the report
        assert re.search(r"sample: wall time per stage: .*train \d+ (s|min)", said)
        assert "sample: open results/sample/evaluate/report.html" in said
        trained = yaml.safe_load(summary.read_text())
        assert trained["steps"] == 6 and trained["final_losses"]
        log = (finished / "logs" / "sample" / "train.log").read_text()
        assert "past train.steps = 6: starting over" in log
    finally:
        write_config(finished)
        snakemake(finished, snakefile=finished.parent / "Snakefile")  # back to 12 steps
    assert yaml.safe_load(summary.read_text())["steps"] == TINY["train"]["steps"]
    assert dry(finished) == {}


@pytest.mark.slow
def test_deleting_a_file_recreates_only_what_is_asked_for(finished):
    stash = finished.parent / "stash"
    stash.mkdir(exist_ok=True)
    results = finished / "results" / "sample"
    target = results / "evaluate" / "report.html"
    for path in (target, results / "resample" / "meta.json", finished / "data/sample/video.mp4"):
        kept = stash / path.name
        shutil.copy2(path, kept)
        path.unlink()
        try:
            jobs = dry(finished)
            if path == target:  # the target: its rule only
                assert set(jobs) == {"evaluate"} and "Missing output" in jobs["evaluate"]
            else:  # an intermediate that no out-of-date job needs is not re-made ...
                assert jobs == {}
                jobs = dry(finished, str(path.relative_to(finished)))  # ... unless asked for
                assert len(jobs) == 1 and "Missing output files" in next(iter(jobs.values()))
        finally:
            shutil.copy2(kept, path)
    assert dry(finished) == {}


@pytest.mark.slow
def test_touching_an_input_reruns_only_when_it_is_too_large_to_checksum(finished):
    video = finished / "data" / "sample" / "video.mp4"
    stat = video.stat()
    assert stat.st_size < 1_000_000  # under Snakemake's default checksum limit (1 MB)
    try:
        later = time.time() + 3600
        os.utime(video, (later, later))
        assert dry(finished) == {}  # newer, but its checksum is unchanged: nothing to do
        jobs = dry(finished, "--max-checksum-file-size", "1000")  # as for a large file
        assert set(jobs) == AFTER_RESAMPLE and "Updated input files" in jobs["resample"]
    finally:
        os.utime(video, (stat.st_atime, stat.st_mtime))


def test_a_video_in_data_is_a_subject_without_a_config_edit(tmp_path):
    write_config(tmp_path)  # no `subjects:` for may
    (tmp_path / "data" / "may" / "driving").mkdir(parents=True)
    (tmp_path / "data" / "may" / "video.mkv").write_bytes(b"not read by a dry run")
    (tmp_path / "data" / "may" / "driving" / "hello.mp3").write_bytes(b"x")
    jobs = planned(snakemake(tmp_path, "-n", "results/may/video.mp4"))
    assert set(jobs) == STAGES - {"sample", "evaluate"}
    jobs = planned(snakemake(tmp_path, "-n"))  # everything: the demo subject and may
    assert "render_driven" in jobs and set(jobs) >= STAGES
    (tmp_path / "data" / "may" / "video.mp4").write_bytes(b"x")
    proc = snakemake(tmp_path, "-n", "results/may/video.mp4", check=False)
    assert proc.returncode != 0 and "2 videos for one subject" in proc.stdout + proc.stderr
    (tmp_path / "data" / "may" / "video.mp4").unlink()
    proc = snakemake(tmp_path, "-n", "results/nobody/video.mp4", check=False)
    assert "Put its video at data/nobody/video.mp4" in proc.stdout + proc.stderr


def planned_jobs(proc: subprocess.CompletedProcess) -> set[tuple[str, str]]:
    """(rule, subject) of each job a dry run plans."""
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout + proc.stderr):
        rule = re.match(r"(?:local)?rule (\w+):", block.strip())
        subject = re.search(r"wildcards: .*?subject=([^,\s]+)", block)
        if rule and subject:
            jobs.add((rule.group(1), subject.group(1)))
    return jobs


@pytest.mark.slow
def test_a_per_subject_override_reruns_that_subject_only(finished):
    snakefile = finished.parent / "Snakefile"
    two = {"sample": {"video": "data/sample/video.mp4"}, "b": {"video": "data/sample/video.mp4"}}
    targets = ("results/sample/evaluate/report.html", "results/b/train/model.pt")
    try:
        write_config(finished, subjects=two)
        snakemake(finished, "results/b/train/model.pt", snakefile=snakefile)
        assert planned_jobs(snakemake(finished, "-n", *targets, snakefile=snakefile)) == set()
        two["sample"]["train"] = {"steps": 13}
        write_config(finished, subjects=two)
        jobs = planned_jobs(snakemake(finished, "-n", *targets, snakefile=snakefile))
        assert jobs == {("train", "sample"), ("render", "sample"), ("evaluate", "sample")}
    finally:
        write_config(finished)
    assert dry(finished) == {}
