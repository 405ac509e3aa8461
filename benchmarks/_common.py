"""Helpers shared by the benchmark scripts: machine description, medians, argument parsing, arms side by side,
and the JSON result file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line with exit status 2: ``PROG: `--flag` is X, but must be Y``."""

    def __init__(self, prog: str, **kwargs):
        super().__init__(prog=prog, **kwargs)

    def error(self, message: str):
        # argparse words a bad value as "argument --flag: <the type's message>"; the types below say "is …"
        message = re.sub(r"^argument ([^:]+): (?=is )", lambda m: f"`{m.group(1)}` ", message)
        self.exit(2, f"{self.prog}: {message}\n")


def csv_list(kind, allowed: tuple | None = None, what: str | None = None):
    """An argparse type: a comma-separated list of ``kind``, each in ``allowed`` when given."""
    what = what or (f"of {', '.join(map(str, allowed))}" if allowed else f"of {kind.__name__}s")

    def parse(text: str) -> list:
        try:
            items = [kind(x.strip()) for x in text.split(",") if x.strip()]
        except (ValueError, argparse.ArgumentTypeError):
            items = []
        if not items or (allowed is not None and any(x not in allowed for x in items)):
            raise argparse.ArgumentTypeError(f"is {text!r}, but must be a comma-separated list {what}")
        return items
    return parse


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is {text!r}, but must be an integer ≥ 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"is {value}, but must be ≥ 1")
    return value


def threads_per_arm(n: int) -> int | None:
    """Torch threads for each of ``n`` arms run side by side: the cores split evenly (None for one arm at a time:
    hpsearch's own setting)."""
    return max(1, (os.cpu_count() or 1) // n) if n > 1 else None


def how_run(n: int, threads: int | None) -> str:
    """The words for how the arms share the machine, for a benchmark's first line."""
    return "one after another" if n == 1 else f"{n} side by side, {threads} thread(s) each"


def side_by_side(jobs: Iterable, n: int, run: Callable) -> Iterator[tuple]:
    """``(job, run(job))`` for every job, in order, running the jobs ``n`` at a time: a group starts when the one
    before has finished, so the arms of a group share the machine alike (``run`` waits on its arm's own process;
    the threads only wait)."""
    jobs = list(jobs)
    for i in range(0, len(jobs), n):
        group = jobs[i:i + n]
        with ThreadPoolExecutor(len(group)) as pool:
            yield from zip(group, list(pool.map(run, group)), strict=True)


def results_dir() -> Path:
    """``benchmarks/results/``, or ``$HPSEARCH_BENCH_RESULTS``: the smoke tests use it so that a --quick run
    never overwrites a full run's numbers, and the runs quoted in RESULTS.md write to results/cpu or gpu."""
    folder = Path(os.environ.get("HPSEARCH_BENCH_RESULTS") or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def commit() -> str | None:
    """The checkout's commit (with "+changes" when tracked files differ from it), or None outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def write_result(name: str, payload: dict) -> Path:
    """Writes ``NAME.json`` in :func:`results_dir`, with the machine's description and the commit it ran at."""
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), "commit": commit(), **payload}, indent=2))
    return path
