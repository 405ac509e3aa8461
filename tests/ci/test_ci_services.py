""".ci/services.sh: a service that is missing, cannot start or does not answer fails CI with one line naming it.

The failing cases put stand-ins for the service's own commands first on PATH (a pg_isready that never answers
and a pg_ctlcluster that cannot start anything; a redis-cli that never answers and a redis-server that
"starts" without serving), so the real services on this machine are never stopped or touched.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "services.sh"


def run_services(tmp_path: Path, stubs: dict[str, int], wait_s: int = 2) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, code in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\nexit {code}\n")
        (bin_dir / name).chmod(0o755)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HPSEARCH_CI_SERVICE_WAIT_S": str(wait_s)}
    return subprocess.run(["bash", str(SCRIPT)], env=env, text=True, capture_output=True, timeout=120)


def test_a_service_that_cannot_start_fails_with_one_line(tmp_path):
    r = run_services(tmp_path, {"pg_isready": 1, "pg_ctlcluster": 1})
    assert r.returncode == 1
    assert r.stdout.strip().splitlines() == ["ci: could not start PostgreSQL"], r.stdout + r.stderr


def test_a_service_that_starts_but_never_answers_fails_after_the_bounded_wait(tmp_path):
    r = run_services(tmp_path, {"redis-cli": 1, "redis-server": 0}, wait_s=2)
    assert r.returncode == 1
    assert r.stdout.strip().splitlines()[-1] == \
        "ci: Redis did not answer on 127.0.0.1 within 2 s (checked with: redis_up)", r.stdout + r.stderr


def test_a_missing_service_fails_with_one_line(tmp_path):
    # a PATH without pg_isready at all: only the stand-in folder and the shell's own tools
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "seq", "sleep", "ls", "head", "mkdir"):
        src = next((Path(d) / tool for d in os.environ["PATH"].split(":") if (Path(d) / tool).exists()), None)
        if src is not None:
            (bin_dir / tool).symlink_to(src)
    r = subprocess.run([str(bin_dir / "bash"), str(SCRIPT)], env={"PATH": str(bin_dir)}, text=True,
                       capture_output=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout.strip().splitlines() == ["ci: PostgreSQL is not installed (pg_isready missing)"], r.stdout


def test_running_services_pass(tmp_path):
    r = run_services(tmp_path, {})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "ci: PostgreSQL, MariaDB and Redis answer"
