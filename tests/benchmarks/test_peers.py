"""The peer arms of search_value.py (benchmarks/peers.py) train a configuration exactly as hpsearch trains it, so
that only the search policy differs between the arms: the same data split, model, seed, training settings and
eval points give the same learning curve, value for value."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import peers  # noqa: E402

# a configuration of the shipped space on the embedded sample, one epoch with two eval points; the data learns
# (57% val Top-1 after the epoch), so that a wrong seed, split or hyperparameter moves the curve
STUDY = """\
[study]
name = "peer_equivalence"
seed = {seed}
n_trials = 1

[data]
dataset = "fashion-mnist-sample"
val_size = 500

[train]
max_epochs = 1
eval_every = 0.5
device = "cpu"

[sampler]
name = "random"

[pruner]
name = "none"

[space]
arch = ["vgg", "resnet"]
lr = {{ low = 0.02, high = 0.3, log = true }}
batch_size = [128, 256]
weight_decay = {{ low = 1e-5, high = 2e-3, log = true }}
optimizer = "sgd"
label_smoothing = {{ low = 0.0, high = 0.15 }}
aug_strength = {{ low = 0.0, high = 0.15 }}

[space.vgg]
stages = [2, 3]
width = [16, 24]

[space.resnet]
depth = [8]
width = [12, 16]

[[enqueue]]
arch = "vgg"
lr = 0.08
batch_size = 128
weight_decay = 1e-3
label_smoothing = 0.1
aug_strength = 0.12
vgg = {{ stages = 2, width = 16 }}
"""
# the same configuration as a peer tuner hands it over: flat, every arch's parameters sampled (Syne Tune's space)
PEER_CONFIG = {"arch": "vgg", "lr": 0.08, "batch_size": 128, "weight_decay": 1e-3, "label_smoothing": 0.1,
               "aug_strength": 0.12, "vgg.stages": 2, "vgg.width": 16, "resnet.width": 12, "resnet.depth": 8}


@pytest.fixture
def one_thread(monkeypatch):
    """Both sides train with one torch thread (float sums in one order)."""
    monkeypatch.setenv("HPSEARCH_THREADS", "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_peer_trial_equals_the_hpsearch_trial_of_the_same_configuration(tmp_path, one_thread, cli):
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(seed=3))
    r = cli("run", str(study), "--storage", f"sqlite:///{tmp_path / 's.db'}", "--artifacts", str(tmp_path / "a"),
            cwd=tmp_path, env={"HPSEARCH_THREADS": "1", "OMP_NUM_THREADS": "1", "HPSEARCH_NO_LIVE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    trial = optuna.load_study(study_name="peer_equivalence", storage=f"sqlite:///{tmp_path / 's.db'}").trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.number == 0
    assert trial.value > 40.0, "the sample must learn (10 classes: chance is 10%), or equal curves prove nothing"

    curve: list[tuple[int, float]] = []
    trainer = peers.Trainer(str(study), "cpu")
    assert trainer.max_points() == 2
    top1 = trainer.train(PEER_CONFIG, trial.number, lambda step, t: curve.append((step, t)) or True)

    assert curve == sorted(trial.intermediate_values.items()), "the same eval points, value for value"
    assert top1 == trial.value


def test_a_peer_stops_a_trial_when_its_scheduler_says_so(tmp_path, one_thread):
    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(seed=3))
    seen: list[int] = []
    with pytest.raises(peers.Stopped):
        peers.Trainer(str(study), "cpu").train(PEER_CONFIG, 0, lambda step, t: seen.append(step) or False)
    assert seen == [1]
