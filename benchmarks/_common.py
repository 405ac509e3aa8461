"""Helpers shared by the benchmark scripts: machine description, medians, and the JSON result file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def write_result(name: str, payload: dict) -> Path:
    """Writes ``benchmarks/results/NAME.json`` (``$HPSEARCH_BENCH_RESULTS`` names another folder: the smoke
    tests use it so that a --quick run never overwrites a full run's numbers)."""
    folder = Path(os.environ.get("HPSEARCH_BENCH_RESULTS") or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2))
    return path
