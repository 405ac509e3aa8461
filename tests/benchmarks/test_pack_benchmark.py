"""Smoke run of benchmarks/pack_throughput.py --quick: it trains real packs and solo runs on the CPU and writes
JSON whose every row names its data (no timing is asserted: speed goals live in benchmarks/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run_benchmark(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HPSEARCH_DATA"} | {
        "HPSEARCH_BENCH_RESULTS": str(tmp_path / "results")} | env
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pack_throughput.py"), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_quick_mode_measures_both_arms_on_named_data(tmp_path):
    r = run_benchmark(["--quick"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads((tmp_path / "results" / "pack_throughput.json").read_text())
    assert data["benchmark"] == "pack_throughput" and data["quick"] and data["device"] == "cpu"
    rows = data["rows"]
    assert [(row["model"], row["k"], row["forward"]) for row in rows] == [
        ("lenet", 1, "fused"), ("lenet", 1, "vmap"), ("lenet", 2, "fused"), ("lenet", 2, "vmap")]
    for row in rows:
        # every row names the data it was measured on: generated 1×28×28 images, 20 steps of 32
        assert row["dataset"] == "synthetic-fmnist" and row["image_shape"] == [1, 28, 28]
        assert row["images"] == 640 and "hpsearch.data.synthetic" in row["source_path"] and row["source"]
        assert row["pack_img_s"] > 0 and row["solo_img_s"] > 0 and row["ratio"] > 0
        assert row["timed_steps"] == 10  # the first 10 of 20 steps lie outside the window
        assert row["pack_startup_s"] > 0 and row["solo_startup_s"] > 0
        assert len(row["solo_runs"][0]) == row["k"]  # one solo fit per member, the pack's own configurations
        assert len(row["lr"]) == row["k"] and len(set(row["lr"])) == row["k"]
        for arm in ("pack_ops", "solo_ops"):
            counts = row[arm]
            assert counts["aten_ops_per_step"] >= counts["aten_leaf_per_step"] >= counts["aten_compute_per_step"] > 0
            assert counts["aten_ops_per_step"] >= counts["aten_top_per_step"] > 0
        assert row["ops_vs_one_solo"] == row["pack_ops"]["aten_ops_per_step"] / row["solo_ops"]["aten_ops_per_step"]
    assert rows[0]["solo_ops"] == rows[2]["solo_ops"]  # one solo step is the denominator for every K
    assert rows[2]["solo_runs"] == rows[3]["solo_runs"], "both forwards are compared with the same solo runs"
    assert rows[2]["pack_ops"] != rows[3]["pack_ops"], "the two forwards launch different operators"


def test_an_absent_dataset_is_refused_with_one_line(tmp_path):
    """A named dataset that is not there stops the run before anything is measured: one line, exit 1, no
    other data swapped in, nothing downloaded, no JSON written."""
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_benchmark(["--dataset", "cifar10", "--data-dir", str(empty)], tmp_path, HOME=str(tmp_path / "home"))
    assert r.returncode == 1, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[0].startswith("pack_throughput: dataset cifar10 not found") and str(empty) in lines[0]
    assert not (tmp_path / "results" / "pack_throughput.json").exists()
    assert not (tmp_path / "home" / ".cache" / "hpsearch" / "cifar-10-batches-py").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--ks", "1,32"], "pack_throughput: `--ks` is 1,32, but each K must be ≤ 16"),
    (["--steps", "12"], "pack_throughput: `--steps` is 12, but must be ≥ 20"),
    (["--models", "lenet,mlp"], "pack_throughput: `--models` is 'lenet,mlp', but must be a comma-separated list"),
])
def test_bad_arguments_are_one_usage_line(tmp_path, args, message):
    r = run_benchmark(args, tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr[-2000:]
