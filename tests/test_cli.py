"""The command line: help texts, flags, and one-line errors with a non-zero exit."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, encode

from speech2lip.cli import STAGES, main


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "speech2lip", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "stage",
    ["sample", "resample", "pose_depth", "warp", "sync_expert", "train", "render", "evaluate"],
)
def test_help_explains_every_parameter(stage):
    proc = cli(stage, "--help")
    assert proc.returncode == 0
    from speech2lip.config import load_schema

    props = load_schema()["properties"][stage]["properties"]
    for key, spec in props.items():
        for name in spec.get("properties", {key: spec}):  # a nested section: its keys
            assert f"--{name.replace('_', '-')}" in proc.stdout
    assert "[default:" in proc.stdout


def test_top_level_help_lists_stages():
    proc = cli("--help")
    assert proc.returncode == 0 and "sample" in proc.stdout and "resample" in proc.stdout


def test_error_is_one_line_and_nonzero(tmp_path):
    proc = cli(
        "resample", "--video", str(tmp_path / "missing.mp4"), "--out-dir", str(tmp_path / "out")
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("speech2lip resample: error: file not found")
    )
    assert "Traceback" not in proc.stderr


def test_bad_flag_value_names_the_key(tmp_path, capsys):
    assert main(["resample", "--video", "a.mp4", "--out-dir", str(tmp_path), "--crop", "atuo"]) == 1
    assert "resample params: crop: 'atuo' is not valid" in capsys.readouterr().err


def test_flags_override_config_and_params(tmp_path):
    frames = np.zeros((60, 40, 60, 3), np.uint8)
    src = encode(tmp_path / "src.mp4", frames)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("resample:\n  crop: none\n  size: 96\n")
    params = json.dumps({"size": 80})
    code = main(["resample", "--video", str(src), "--out-dir", str(tmp_path / "out"),
                 "--config", str(cfg), "--params", params, "--test-fraction", "0.25"])  # fmt: skip
    assert code == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["width"] == 80 and meta["crop"]["mode"] == "none"
    assert meta["split"]["test"] == [45, 60]


def test_unknown_subject_with_config(tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("subjects:\n  may:\n    video: may.mp4\n")
    assert (
        main(
            [
                "resample",
                "--video",
                "x.mp4",
                "--out-dir",
                str(tmp_path),
                "--config",
                str(cfg),
                "--subject",
                "obama",
            ]
        )
        == 1
    )
    assert "no subject 'obama'" in capsys.readouterr().err


HANDOFF = re.compile(r"--([a-z-]+) \{(input|output|params)\.([a-z_]+)(?::q)?\}")
RUN_OPTIONS = {"cfg", "threads", "resume", "device"}  # not files: not handoffs


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_handoffs_have_one_name_in_the_rule_the_cli_and_run(stage):
    """Each rule passes its files as `--name {input.name}` (or output/params), the CLI declares
    exactly those options, and the stage's `run` takes them as keywords of the same name."""
    shell = (ROOT / "rules" / f"{stage}.smk").read_text().split("shell:")[1]
    passed = {}
    for option, _, name in HANDOFF.findall(shell):
        if option == "params":  # the stage's config section, not a file
            continue
        assert option.replace("-", "_") == name, f"{stage}: --{option} carries {name}"
        passed[name] = True
    declared = {name: required for name, _, required in STAGES[stage][2]}
    assert set(passed) <= set(declared), f"{stage}: the rule passes undeclared {passed}"
    assert {n for n, required in declared.items() if required} <= set(passed)
    run = importlib.import_module(f"speech2lip.{stage}").run
    params = inspect.signature(run).parameters
    assert set(params) - RUN_OPTIONS == set(declared), stage
    for name, parameter in params.items():  # optional handoffs have defaults in run too
        if name in declared and not declared[name]:
            assert parameter.default is not inspect.Parameter.empty, (stage, name)


def test_handoffs_are_keywords_not_positions(tmp_path):
    proc = cli("landmarks", str(tmp_path / "frames.mkv"), str(tmp_path / "meta.json"), "out")
    assert proc.returncode == 2 and "the following arguments are required: --frames" in proc.stderr


def test_nested_flags_merge_into_their_section():
    from speech2lip.cli import _stage_config, build_parser

    argv = ["train", "--index", "i", "--out-dir", "o", "--lips-width", "32",
            "--params", '{"model": {"lips_layers": 3}}']  # fmt: skip
    args = build_parser().parse_args(argv)
    cfg = _stage_config(args, "train")
    assert cfg.model.lips_width == 32 and cfg.model.lips_layers == 3 and cfg.model.lips_skip is None


def nullable_keys():
    from speech2lip.config import load_schema

    def walk(props, prefix=""):
        for key, spec in props.items():
            if "properties" in spec:
                yield from walk(spec["properties"], f"{prefix}{key}.")
                continue
            kinds = spec.get("type") or [s.get("type") for s in spec.get("oneOf", [])]
            if "null" in (kinds if isinstance(kinds, list) else [kinds]):
                yield f"{prefix}{key}"

    for stage, spec in load_schema()["properties"].items():
        if stage in STAGES:
            for key in walk(spec["properties"]):
                yield stage, key


@pytest.mark.parametrize(("stage", "key"), list(nullable_keys()))
def test_every_nullable_flag_accepts_null(stage, key):
    from speech2lip.cli import _stage_config, build_parser

    handoffs = [a for name, _, required in STAGES[stage][2] if required
                for a in (f"--{name.replace('_', '-')}", "x")]  # fmt: skip
    name = key.split(".")[-1].replace("_", "-")
    args = build_parser().parse_args([stage, *handoffs, f"--{name}", "null"])
    cfg = _stage_config(args, stage)
    for part in key.split("."):
        cfg = getattr(cfg, part)
    assert cfg is None, f"{stage}.{key}"
