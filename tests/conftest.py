"""Shared fixtures: study files written to a temp folder (built by tests/studies.py) and the real CLI run in a
subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from studies import PRUNED, write_study

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_spec(tmp_path: Path):
    """Writes a study file from text (dedented) and returns its path."""

    def write(text: str, name: str = "study.toml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return write


@pytest.fixture
def synthetic_spec(tmp_path: Path):
    """Writes a study the median pruner acts on (studies.PRUNED) as NAME.toml; ``space`` keys override."""

    def make(name: str = "synth", n_trials: int = 6, **space) -> Path:
        return write_study(tmp_path / f"{name}.toml", PRUNED, name=name, n_trials=n_trials, space=space)

    return make


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Runs ``hpsearch ARGS`` as a real process; returns the CompletedProcess (text mode)."""
    full_env = os.environ | {"PYTHONWARNINGS": "ignore"} | (env or {})
    full_env.pop("HPSEARCH_STORAGE", None) if env is None or "HPSEARCH_STORAGE" not in env else None
    return subprocess.run([sys.executable, "-m", "hpsearch.cli", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout)


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """Starts ``hpsearch ARGS`` as a real background process, stdout and stderr merged (text mode)."""
    env = os.environ | {"PYTHONWARNINGS": "ignore", "HPSEARCH_NO_LIVE": "1"}
    return subprocess.Popen([sys.executable, "-m", "hpsearch.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(pred, timeout: float, what: str, poll_s: float = 0.2):
    """Polls ``pred`` until it returns something true (returned) or ``timeout`` seconds pass (AssertionError)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if value := pred():
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cli():
    return run_cli
