"""The SLURM profile, for real: a single-node cluster on localhost runs the pipeline's jobs.

Skips with the reason where no cluster can be started (not root, SLURM packages missing, the
executor plugin not installed, or a real cluster's slurm.conf present). CI installs the Debian
packages (see .ci/run) so it runs there.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from slurm_cluster import LocalCluster, unavailable
from test_workflow import write_config

pytestmark = pytest.mark.slow


def test_pipeline_runs_as_slurm_jobs(tmp_path):
    reason = unavailable()
    if reason is None and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        reason = (
            "snakemake-executor-plugin-slurm is not installed (pip install -r requirements.txt)"
        )
    if reason:
        pytest.skip(f"no local SLURM cluster: {reason}")
    write_config(tmp_path)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = ["timeout", "--foreground", "-s", "INT", "400",  # SIGTERM does not stop snakemake
           sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--profile", str(ROOT / "workflow/profiles/slurm"),
           # no slurmdbd here: sacct fails, so poll squeue; poll soon and often
           "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
           "--seconds-between-status-checks", "2", "--slurm-keep-successful-logs",
           "--slurm-no-account", "results/sample/landmarks/landmarks.npz"]  # fmt: skip
    with LocalCluster() as cluster:
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        took = time.monotonic() - start
        daemon_logs = cluster.logs()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{out[-4000:]}\n{daemon_logs}"
    print(f"SLURM run of sample -> resample -> landmarks: {took:.1f} s")
    submitted = dict(re.findall(r"rule (\w+):.*?submitted with SLURM jobid (\d+)", out, re.S))
    assert set(submitted) == {"sample", "resample", "landmarks"}, out[-3000:]
    for rule, job in submitted.items():
        logs = list((tmp_path / "logs" / "slurm").glob(f"rule_{rule}/**/{job}.log"))
        assert logs, f"no SLURM log for {rule} job {job}"
        stage_log = (tmp_path / "logs" / "sample" / f"{rule}.log").read_text()
        assert f"running as SLURM job {job} on " in stage_log
    assert (tmp_path / "results" / "sample" / "landmarks" / "landmarks.npz").is_file()
