"""Shared fixtures: study files written to a temp folder and the real CLI run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SYNTHETIC_STUDY = """
[study]
name = "{name}"
seed = 0
n_trials = {n_trials}

[data]
dataset = "synthetic"
image_size = 28
channels = 1
num_classes = 4
n_images = 600

[train]
max_epochs = 2
eval_every = 0.5
device = "cpu"

[sampler]
name = "random"

[pruner]
name = "median"
n_startup_trials = 2
n_warmup_steps = 0

[space]
arch = "lenet"
lr = {lr}
batch_size = 64
optimizer = "{optimizer}"
weight_decay = {weight_decay}
"""


TINY_STUDY = """
[study]
name = "{name}"
seed = 0
n_trials = {n_trials}

[data]
dataset = "synthetic"
image_size = 28
channels = 1
num_classes = 2
n_images = {n_images}

[train]
max_epochs = {epochs}
eval_every = 0.5
device = "cpu"
{train_extra}

[sampler]
name = "random"

[pruner]
name = "none"

[space]
arch = "lenet"
lr = {lr}
batch_size = {batch_size}
optimizer = "adamw"
{extra}
"""


def tiny_study(name: str, n_trials: int, n_images: int = 200, epochs: int = 1,
               lr: str = "{ low = 1e-3, high = 0.01, log = true }", batch_size: str = "32", train_extra: str = "",
               extra: str = "") -> str:
    """The text of a study whose trials take well under a second: two-class 28 px synthetic data, LeNet."""
    return TINY_STUDY.format(name=name, n_trials=n_trials, n_images=n_images, epochs=epochs, lr=lr,
                             batch_size=batch_size, train_extra=train_extra, extra=extra)


@pytest.fixture
def write_spec(tmp_path: Path):
    """Writes a study file from text (dedented) and returns its path."""

    def write(text: str, name: str = "study.toml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text))
        return p

    return write


@pytest.fixture
def synthetic_spec(write_spec):
    def make(name: str = "synth", n_trials: int = 6, lr: str = "{ low = 1e-4, high = 0.05, log = true }",
             optimizer: str = "adamw", weight_decay: float = 5e-4) -> Path:
        text = SYNTHETIC_STUDY.format(name=name, n_trials=n_trials, lr=lr, optimizer=optimizer,
                                      weight_decay=weight_decay)
        return write_spec(text, f"{name}.toml")

    return make


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Runs ``hpsearch ARGS`` as a real process; returns the CompletedProcess (text mode)."""
    full_env = os.environ | {"PYTHONWARNINGS": "ignore"} | (env or {})
    full_env.pop("HPSEARCH_STORAGE", None) if env is None or "HPSEARCH_STORAGE" not in env else None
    return subprocess.run([sys.executable, "-m", "hpsearch.cli", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli
