"""Smoke runs of the benchmarks' --quick modes: they run and write valid JSON (no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

BENCHMARKS = ["loop_throughput", "imagefolder_cache", "overhead", "report_scale", "storage_scale",
              "search_efficiency", "gpu_airbench"]


def test_every_benchmark_script_is_smoke_tested():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")}
    assert scripts - {"handwritten_baseline"} == set(BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_mode_writes_json(name, tmp_path):
    env = os.environ | {"HPSEARCH_BENCH_RESULTS": str(tmp_path)}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick"], capture_output=True,
                       text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["machine"]["cores"] >= 1
