"""A real single-node SLURM cluster for the tests: munged, slurmctld and slurmd from Debian's ``munge`` and
``slurm-wlm``, configured and run inside one temporary folder.

Everything the cluster uses is its own: a fresh munge key and socket (``AuthInfo=socket=``), free TCP ports,
state, spool, pid and log files under the folder, so a leftover cluster (or the system's munged) does not
interfere. SLURM's own record of every job is the job completion log (``JobCompType=jobcomp/filetxt``, one
line per finished array task), read by :meth:`Cluster.records`; ``sacct`` would need slurmdbd. The daemons run
as root (``SlurmUser=root``), so jobs run as root too. Missing packages or a non-root user skip the tests, or
fail them under ``CI=true`` (tests/services.py). ``.ci/run`` installs the packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from services import unavailable

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue", "sinfo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str) -> str | None:
    """The daemon or command's path: on PATH, else in /usr/sbin (which a non-login PATH may lack)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


def check_prerequisites() -> None:
    missing = [b for b in BINARIES if binary(b) is None]
    if missing:
        unavailable(f"SLURM is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        unavailable("the test SLURM cluster runs its daemons as root (SlurmUser=root); run the tests as root")


class Cluster:
    """One controller and one compute node on this host, ``cpus`` CPUs, partition ``debug``."""

    def __init__(self, root: Path, cpus: int = 2):
        self.root, self.cpus = root, cpus
        self.host = socket.gethostname()
        self.conf = root / "slurm.conf"
        self.jobcomp = root / "jobcomp.txt"
        self.env = os.environ | {"SLURM_CONF": str(self.conf)}

    # -- configuration --------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        lines = {
            "ClusterName": "hpsearch-test",
            "SlurmctldHost": f"{self.host}(127.0.0.1)",
            "SlurmUser": "root", "SlurmdUser": "root",
            "SlurmctldPort": free_port(), "SlurmdPort": free_port(),
            "AuthType": "auth/munge", "CredType": "cred/munge", "AuthInfo": f"socket={r / 'munge.sock'}",
            "StateSaveLocation": r / "state", "SlurmdSpoolDir": r / "spool",
            "SlurmctldPidFile": r / "slurmctld.pid", "SlurmdPidFile": r / "slurmd.pid",
            "SlurmctldLogFile": r / "log/slurmctld.log", "SlurmdLogFile": r / "log/slurmd.log",
            "ProctrackType": "proctrack/linuxproc", "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres", "SelectTypeParameters": "CR_CPU",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/filetxt", "JobCompLoc": self.jobcomp,
            "JobAcctGatherType": "jobacct_gather/none", "MpiDefault": "none", "ReturnToService": 2,
            "KillWait": 20,  # seconds between SIGTERM and SIGKILL when SLURM ends a job (scancel, requeue)
            "SchedulerParameters": "sched_interval=2",
            "MinJobAge": 600,  # keep finished jobs in scontrol's view while a test runs
        }
        text = "".join(f"{k}={v}\n" for k, v in lines.items())
        text += (f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN\n"
                 f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP "
                 "OverSubscribe=FORCE:4\n")
        self.conf.write_text(text)

    # -- daemons ----------------------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> Cluster:
        self._write_config()
        r = self.root
        self._daemon(["munged", "--force", f"--socket={r / 'munge.sock'}", f"--key-file={r / 'munge.key'}",
                      f"--pid-file={r / 'munged.pid'}", f"--log-file={r / 'log/munged.log'}",
                      f"--seed-file={r / 'munged.seed'}"])
        self._daemon(["slurmctld", "-f", str(self.conf)])
        self._daemon(["slurmd", "-f", str(self.conf)])
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            state = self.run("sinfo", "-h", "-n", self.host, "-o", "%T", check=False).stdout.strip()
            if state.rstrip("*") in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((r / "log").glob("*.log")))
        self.stop()
        raise RuntimeError(f"the SLURM node did not come up within {timeout:.0f} s (sinfo: {state!r})\n{logs}")

    def _daemon(self, cmd: list[str]) -> None:
        p = subprocess.run([binary(cmd[0]) or cmd[0], *cmd[1:]], env=self.env, capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0:
            self.stop()
            raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {(p.stderr or p.stdout).strip()}")

    def stop(self) -> None:
        """Kills every running job (SIGKILL) and cancels the pending ones, then stops slurmctld, slurmd and munged by their pid files."""
        with contextlib.suppress(Exception):
            # --batch: SIGKILL itself to each batch shell (without it, SIGKILL means a cancel: SIGTERM first)
            self.run("scancel", "--batch", "--signal=KILL", "--user=root", "--state=RUNNING", check=False)
            self.run("scancel", "--user=root", check=False)
            t0 = time.monotonic()
            while self.run("squeue", "-h", check=False).stdout.strip() and time.monotonic() - t0 < 30:
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self.root / f"{name}.pid"
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                t0 = time.monotonic()
                while time.monotonic() - t0 < 10 and _alive(pid):
                    time.sleep(0.1)
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)

    # -- commands and records ----------------------------------------------------------------------------------

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
        return p

    def records(self, array_job_id: str) -> list[dict[str, str]]:
        """SLURM's completion record of each finished task of the array job (one dict per jobcomp line)."""
        if not self.jobcomp.exists():
            return []
        out = []
        for line in self.jobcomp.read_text().splitlines():
            rec = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if rec.get("ArrayJobId") == array_job_id or rec.get("JobId") == array_job_id:
                out.append(rec)
        return out

    def queued(self, array_job_id: str) -> list[str]:
        """``JOBID STATE`` lines of the array's tasks that squeue still shows (pending or running)."""
        out = self.run("squeue", "-h", "-r", "-j", array_job_id, "-o", "%i %T", check=False).stdout
        return [ln for ln in out.splitlines() if ln.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):  # a zombie (not reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False
