"""The command line: help texts, flags, and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import encode

from speech2lip.cli import main


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

    for key in load_schema()["properties"][stage]["properties"]:
        assert f"--{key.replace('_', '-')}" in proc.stdout
    assert "[default:" in proc.stdout


def test_top_level_help_lists_stages():
    proc = cli("--help")
    assert proc.returncode == 0 and "sample" in proc.stdout and "resample" in proc.stdout


def test_error_is_one_line_and_nonzero(tmp_path):
    proc = cli("resample", str(tmp_path / "missing.mp4"), str(tmp_path / "out"))
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("speech2lip resample: error: file not found")
    )
    assert "Traceback" not in proc.stderr


def test_bad_flag_value_names_the_key(tmp_path, capsys):
    assert main(["resample", "a.mp4", str(tmp_path), "--crop", "atuo"]) == 1
    assert "resample params: crop: 'atuo' is not valid" in capsys.readouterr().err


def test_flags_override_config_and_params(tmp_path):
    frames = np.zeros((60, 40, 60, 3), np.uint8)
    src = encode(tmp_path / "src.mp4", frames)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("resample:\n  crop: none\n  size: 96\n")
    params = json.dumps({"size": 80})
    code = main(["resample", str(src), str(tmp_path / "out"), "--config", str(cfg),
                 "--params", params, "--test-fraction", "0.25"])  # fmt: skip
    assert code == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["width"] == 80 and meta["crop"]["mode"] == "none"
    assert meta["split"]["test"] == [45, 60]


def test_unknown_subject_with_config(tmp_path, capsys):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("subjects:\n  may:\n    video: may.mp4\n")
    assert (
        main(["resample", "x.mp4", str(tmp_path), "--config", str(cfg), "--subject", "obama"]) == 1
    )
    assert "no subject 'obama'" in capsys.readouterr().err
