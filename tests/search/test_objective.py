"""hpsearch.search.objective with Optuna's FixedTrial: one configuration trained for real, the attributes every trial
records, and the way each kind of ending (pruned, diverged, out of memory, an exception) is reported."""

from __future__ import annotations

import math

import optuna
import pytest
import torch

from hpsearch.data import load_dataset
from hpsearch.search.objective import Objective
from hpsearch.spec import parse_spec
from studies import study_doc

CONFIG = {"lr": 0.005}  # the one searched parameter of the default test study; the rest is fixed


@pytest.fixture(scope="module")
def setup():
    spec = parse_spec(study_doc(train={"max_epochs": 1, "eval_every": 0.5}))
    return spec, load_dataset(spec.data, spec.study.seed)


def test_a_fixed_trial_trains_and_records_its_attributes(setup):
    spec, ds = setup
    trial = optuna.trial.FixedTrial(CONFIG, number=3)
    value = Objective(spec, ds, torch.device("cpu"), "fp32")(trial)
    a = trial.user_attrs
    assert 0.0 <= value <= 100.0 and value == a["val_top1"], "the objective value is the final val Top-1"
    assert a["config"] == {"arch": "lenet", "lr": 0.005, "batch_size": 32, "weight_decay": 5e-4, "optimizer": "adamw",
                           "label_smoothing": 0.0, "aug_strength": 0.0, "fraction": 1.0, "image_size": 0,
                           "lenet.width": 1}
    assert a["device"] == "cpu" and a["epochs_completed"] == 1 and a["n_params"] > 1000
    assert a["train_images_per_s"] > 0 and a["wall_s"] > 0 and "reason" not in a
    assert a["val_top5"] == 100.0, "two classes: the true class is always among the top 5"


def test_the_same_trial_number_trains_the_same_model(setup):
    """Trial t trains with seed study.seed + t: the same number gives the same eval curve, bit for bit."""
    spec, ds = setup
    curves = []
    for _ in range(2):
        trial = optuna.trial.FixedTrial(CONFIG, number=5)
        Objective(spec, ds, torch.device("cpu"), "fp32")(trial)
        curves.append((trial.user_attrs["val_top1"], trial.user_attrs["val_top5"], trial.user_attrs["n_params"]))
    assert curves[0] == curves[1]


@pytest.mark.parametrize("faults, error, reason", [
    ("error=1.0", RuntimeError, "RuntimeError: injected by HPSEARCH_FAULTS: error at training step "),
    ("oom_above_batch=16", torch.OutOfMemoryError, "out_of_memory at batch_size 32"),
    ("diverge=1.0", optuna.TrialPruned, "diverged"),
])
def test_injected_faults_end_the_trial_with_their_reason(setup, monkeypatch, faults, error, reason):
    spec, ds = setup
    monkeypatch.setenv("HPSEARCH_FAULTS", faults)
    trial = optuna.trial.FixedTrial(CONFIG, number=0)
    objective = Objective(spec, ds, torch.device("cpu"), "fp32")
    with pytest.raises(error):
        objective(trial)
    assert trial.user_attrs["reason"].startswith(reason), trial.user_attrs["reason"]
    assert objective.last_failed == (error is not optuna.TrialPruned), "only failures need their memory released"


def test_without_the_variable_no_hook_is_installed(setup, monkeypatch):
    monkeypatch.delenv("HPSEARCH_FAULTS", raising=False)
    from hpsearch.training import faults

    model = torch.nn.Linear(2, 2)
    assert faults.install(model, 0, 10).empty
    assert not model._forward_pre_hooks and not model._forward_hooks


def test_a_time_limit_prunes_with_its_reason(setup):
    spec, ds = setup
    limited = parse_spec(study_doc(train={"max_epochs": 50, "max_trial_seconds": 0.2}))
    trial = optuna.trial.FixedTrial(CONFIG, number=0)
    with pytest.raises(optuna.TrialPruned):
        Objective(limited, ds, torch.device("cpu"), "fp32")(trial)
    assert trial.user_attrs["reason"] == "time_limit"
    assert trial.user_attrs["epochs_completed"] < 50 and not math.isnan(trial.user_attrs["wall_s"])
