"""hpsearch.search.study on real SQLite studies: sampler and pruner from the spec, what a new study records, the
stored spec that wins over a different one, warm-start trials, and loading by name."""

from __future__ import annotations

import json

import optuna
import pytest

from hpsearch.errors import HpsearchError, SpecError, StudyNotFound
from hpsearch.search.study import (
    build_pruner,
    build_sampler,
    open_existing,
    open_study,
    stored_spec,
)
from hpsearch.spec import parse_spec
from hpsearch.storage.attrs import SPEC as SPEC_ATTR
from hpsearch.storage.urls import open_storage
from studies import study_doc


@pytest.mark.parametrize("sampler, cls", [
    ({"name": "tpe"}, optuna.samplers.TPESampler), ({"name": "random"}, optuna.samplers.RandomSampler),
    ({"name": "cmaes"}, optuna.samplers.CmaEsSampler), ({"name": "gp"}, optuna.samplers.GPSampler),
    ({"name": "qmc", "qmc_type": "halton"}, optuna.samplers.QMCSampler)])
def test_every_sampler_of_the_spec_is_built(sampler, cls):
    assert type(build_sampler(parse_spec(study_doc(sampler=sampler)))) is cls


def test_the_sampler_seed_moves_with_the_trials_already_in_the_study():
    """A resumed study does not replay its first run's random draws."""
    spec = parse_spec(study_doc(sampler={"name": "random", "seed": 7}))
    def first_draws(offset: int) -> list[float]:
        study = optuna.create_study(sampler=build_sampler(spec, offset))
        return [study.ask().suggest_float("x", 0, 1) for _ in range(2)]

    draws = [first_draws(offset) for offset in (0, 0, 5)]
    assert draws[0] == draws[1] != draws[2]


@pytest.mark.parametrize("pruner, cls", [
    ({"name": "median"}, optuna.pruners.MedianPruner), ({"name": "none"}, optuna.pruners.NopPruner),
    ({"name": "percentile", "percentile": 25.0}, optuna.pruners.PercentilePruner),
    ({"name": "successive_halving"}, optuna.pruners.SuccessiveHalvingPruner),
    ({"name": "hyperband"}, optuna.pruners.HyperbandPruner),
    ({"name": "patient", "patience": 2, "wrapped": "median"}, optuna.pruners.PatientPruner)])
def test_every_pruner_of_the_spec_is_built(pruner, cls):
    assert type(build_pruner(parse_spec(study_doc(pruner=pruner)))) is cls


def test_a_new_study_records_spec_versions_and_metric(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    spec = parse_spec(study_doc(name="rec"))
    study = open_study(spec, open_storage(url, heartbeat=None), "rec")
    assert json.loads(study.user_attrs[SPEC_ATTR]) == json.loads(json.dumps(spec.raw))
    assert {"hpsearch", "optuna", "torch", "torchvision", "python"} == set(study.user_attrs["hpsearch.versions"])
    assert study.metric_names == ["val_top1"] and study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert stored_spec(open_existing(url, "rec")) == spec


def test_the_stored_spec_wins_unless_forced(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=None)
    open_study(parse_spec(study_doc(name="w")), storage, "w")
    changed = parse_spec(study_doc(name="w", train={"max_epochs": 3}))
    with pytest.raises(SpecError, match=r"already exists with a different spec \(`train.max_epochs` differ\)"):
        open_study(changed, storage, "w")
    # run controls (n_trials, timeout, device) may change between runs
    open_study(parse_spec(study_doc(name="w", n_trials=9, train={"device": "auto"})), storage, "w")
    study = open_study(changed, storage, "w", force_spec=True)
    assert json.loads(study.user_attrs[SPEC_ATTR])["train"]["max_epochs"] == 3


def test_enqueued_configurations_are_queued_once(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=None)
    spec = parse_spec(study_doc(name="q", enqueue=[{"lr": 0.002}, {"lr": 0.004}]))
    for _ in range(2):  # a second run of the same spec does not queue them again
        study = open_study(spec, storage, "q")
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"lr": 0.002}, {"lr": 0.004}]


def test_unknown_and_foreign_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(storage=url, study_name="plain")
    with pytest.raises(StudyNotFound, match=r"^no study named 'ghost'; the storage holds: plain$"):
        open_existing(url, "ghost")
    with pytest.raises(HpsearchError, match="was not created by hpsearch"):
        stored_spec(open_existing(url, "plain"))
