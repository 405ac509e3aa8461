"""hpsearch.search.objective with Optuna's FixedTrial: one configuration trained for real, the attributes every trial
records, and the way each kind of ending (pruned, diverged, out of memory, an exception) is reported."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpsearch.data import load_dataset
from hpsearch.inspect.collect import collect_header, study_info
from hpsearch.inspect.status import format_status, study_status
from hpsearch.search.asha import enqueue_promotion
from hpsearch.search.objective import Objective
from hpsearch.spec import parse_spec
from hpsearch.storage.artifacts import open_artifact_store
from hpsearch.storage.attrs import CHECKPOINT, FALLBACK, PAUSED_AT, RESUMED_AT, RESUMED_FROM
from hpsearch.storage.checkpoints import Checkpoints
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
                           "label_smoothing": 0.0, "aug_strength": 0.0, "backbone_lr_mult": 1.0, "freeze_epochs": 0,
                           "fraction": 1.0, "image_size": 0, "lenet.width": 1}
    assert a["weights"] == "random", "where the initial weights came from"
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


def _paused_then_promoted(checkpoint: str | None) -> optuna.Study:
    """An in-memory study: trial 0 paused at a rung (its checkpoint id ``checkpoint``), trial 1 its promotion."""
    study = optuna.create_study(direction="maximize")
    attrs = {PAUSED_AT: 1} | ({CHECKPOINT: checkpoint} if checkpoint else {})
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.PRUNED, params=CONFIG, distributions={"lr": FloatDistribution(1e-4, 1.0, log=True)},
        user_attrs=attrs, intermediate_values={1: 50.0}))
    enqueue_promotion(study, study.trials[0])
    return study


@pytest.mark.parametrize("checkpoint, why", [
    ("broken", "cannot resume from trial 0: checkpoint broken cannot be loaded safely"),
    (None, "promoted from trial 0, which has no checkpoint left"),
])
def test_a_promotion_that_cannot_resume_says_so_on_the_trial_and_in_status_and_report(setup, tmp_path, checkpoint,
                                                                                      why):
    """No silent fallback: the promoted trial trains from scratch (it completes) with attribute ``fallback``, which
    status and the report count."""
    spec, ds = setup
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "broken").write_bytes(b"not a checkpoint")
    study = _paused_then_promoted(checkpoint)
    checkpoints = Checkpoints(open_artifact_store(str(tmp_path / "art")))
    study.optimize(Objective(spec, ds, torch.device("cpu"), "fp32", checkpoints=checkpoints), n_trials=1)
    promoted = study.trials[1]
    assert promoted.state == TrialState.COMPLETE and promoted.user_attrs[FALLBACK].startswith(why)
    assert promoted.user_attrs.get(RESUMED_FROM) is None
    assert sorted(promoted.intermediate_values) == [1, 2], "its own curve, from the first eval point"
    status = study_status(study)
    assert status["fallbacks"] == [{"trial": 1, "reason": promoted.user_attrs[FALLBACK]}]
    text = format_status({"storage": "memory", "artifact_bytes": 0, "studies": [status]})
    assert f"1 trained from scratch instead of resuming: trial 1 ({why}" in text
    assert collect_header(study.trials, study_info(study))["fallbacks"] == 1


def test_a_retry_that_resumes_nothing_drops_what_its_predecessor_recorded(setup, tmp_path):
    """Optuna copies a failed trial's user attributes to its retry: a retry with no checkpoint to continue must not
    claim its predecessor's resume (or fallback)."""
    spec, ds = setup
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, params=CONFIG, distributions={"lr": FloatDistribution(1e-4, 1.0, log=True)},
        user_attrs={RESUMED_FROM: 7, RESUMED_AT: 1, FALLBACK: "old"}))
    study.enqueue_trial(CONFIG, user_attrs=dict(study.trials[0].user_attrs))
    checkpoints = Checkpoints(open_artifact_store(str(tmp_path / "art")))
    study.optimize(Objective(spec, ds, torch.device("cpu"), "fp32", checkpoints=checkpoints), n_trials=1)
    retry = study.trials[1]
    assert retry.state == TrialState.COMPLETE
    assert {k: retry.user_attrs.get(k) for k in (RESUMED_FROM, RESUMED_AT, FALLBACK)} == dict.fromkeys(
        (RESUMED_FROM, RESUMED_AT, FALLBACK))
