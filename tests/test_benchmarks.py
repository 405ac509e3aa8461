"""Smoke runs of the benchmarks' --quick modes: they run and write valid JSON (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["loop_throughput", "imagefolder_cache"])
def test_quick_mode_writes_json(name):
    result = ROOT / "benchmarks" / "results" / f"{name}.json"
    result.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(result.read_text())
    assert data["benchmark"] == name and data["machine"]["cores"] >= 1
