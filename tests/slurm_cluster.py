"""A throw-away single-node SLURM cluster on localhost, for testing the SLURM profile for real.

Started by hand (no systemd): munged, slurmctld and slurmd run in the foreground as children of
the test process and are stopped by PID. The config must live at /etc/slurm/slurm.conf, because
the Snakemake SLURM plugin drops SLURM_CONF from the environment of the `srun` inside each job;
an existing slurm.conf that this module did not write is never touched (the cluster is then not
started). Needs root and the Debian packages slurmctld, slurmd, slurm-client and munge.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by speech2lip tests/slurm_cluster.py"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


def unavailable() -> str | None:
    """Why a local cluster cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to start munged/slurmctld/slurmd"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return (f"SLURM tools missing ({', '.join(missing)}): "
                "apt-get install slurmctld slurmd slurm-client munge")  # fmt: skip
    if CONF.exists() and MARK not in CONF.read_text():
        return f"{CONF} exists and belongs to a real cluster; not touching it"
    return None


def _conf(state: Path, host: str, cpus: int, mem_mb: int) -> str:
    return f"""{MARK}
ClusterName=speech2lip-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={state}/munge.socket
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class LocalCluster:
    """`with LocalCluster() as cluster:` starts the daemons; leaving the block stops them."""

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="s2l-slurm-"))
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, *args: str) -> None:
        log = open(self.state / f"{Path(args[0]).name}.out", "wb")  # noqa: SIM115
        self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))

    def __enter__(self) -> LocalCluster:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        host = socket.gethostname().split(".")[0]
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
        (self.state / "ctld").mkdir()
        (self.state / "d").mkdir()
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(_conf(self.state, host, os.cpu_count() or 1, mem_mb))
        try:
            sock = self.state / "munge.socket"
            st = self.state
            self._spawn("munged", "--foreground", "--force", f"--socket={sock}",
                        f"--pid-file={st}/munged.pid", f"--log-file={st}/munged.log",
                        f"--seed-file={st}/munged.seed")  # fmt: skip
            self._spawn("slurmctld", "-D", "-i")
            self._spawn("slurmd", "-D")
            self._wait_idle(host)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_idle(self, host: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{proc.args[0]} exited early:\n{self.logs()}")
            out = subprocess.run(
                ["sinfo", "-h", "-n", host, "-o", "%t"], capture_output=True, text=True
            )
            state = out.stdout.strip()
            if state in ("idle", "mix"):
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"node {host} not idle after {timeout} s (state {state!r}):\n{self.logs()}"
        )

    def logs(self) -> str:
        files = sorted(self.state.glob("*.log")) + sorted(self.state.glob("*.out"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in files)

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if CONF.exists() and MARK in CONF.read_text():
            CONF.unlink()
        shutil.rmtree(self.state, ignore_errors=True)
