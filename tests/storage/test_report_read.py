"""hpsearch.inspect.collect.read_trials: its direct read of an RDB storage returns exactly what Optuna's get_trials returns,
on SQLite, PostgreSQL and MariaDB, through hpsearch's storage wrappers."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from services import service_url, unique

from hpsearch.inspect.collect import read_trials
from hpsearch.storage import optuna_internals as internals
from hpsearch.storage.urls import open_storage

DISTS = {"arch": CategoricalDistribution(["lenet", "vgg"]), "lr": FloatDistribution(1e-4, 1e-1, log=True),
         "batch_size": CategoricalDistribution([32, 64]), "depth": IntDistribution(2, 8, step=2),
         "flag": CategoricalDistribution([True, False, None])}


def fill(study: optuna.Study) -> None:
    """Trials in every finished state, with every kind of field, plus one RUNNING trial asked through the API."""
    t0 = datetime(2025, 3, 1, 12, 0, 0, 123000)
    for i in range(7):
        state = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL][i % 3]
        curve = {s: 10.0 * s + i for s in range(i % 4)} | ({9: math.inf, 10: -math.inf} if i == 4 else {})
        params = {"arch": ["lenet", "vgg"][i % 2], "lr": 10 ** -(1 + i / 3), "batch_size": [32, 64][i % 2],
                  "depth": 2 * (1 + i % 4), "flag": [True, False, None][i % 3]}
        t = create_trial(state=state, value=50.0 + i if state == TrialState.COMPLETE else None, params=params,
                         distributions=DISTS, user_attrs={"config": params, "wall_s": 1.5 * i, "note": "é ✓"},
                         system_attrs={"hpsearch:retry": i} if i == 2 else {}, intermediate_values=curve)
        t.datetime_start, t.datetime_complete = t0 + timedelta(minutes=i), t0 + timedelta(minutes=i, seconds=30)
        study.add_trial(t)
    running = study.ask({"lr": DISTS["lr"]})
    running.report(12.5, 0)
    running.set_user_attr("device", "cpu")
    study.enqueue_trial({"lr": 0.01})  # a WAITING trial


@pytest.fixture
def non_utc_local_time(monkeypatch):
    """A local time zone off UTC, so the naive-UTC-to-local conversion of stored datetimes is exercised."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else service_url(request.param)


@pytest.mark.slow
def test_read_trials_equals_optuna_get_trials(url, non_utc_local_time):
    name, other = unique("read"), unique("other")
    storage = open_storage(url, heartbeat=None)
    fill(optuna.create_study(storage=storage, study_name=other, direction="maximize"))  # must not leak in
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    fill(study)
    try:
        assert internals.rdb_backend(internals.study_storage(study)) is not None, "the direct read is taken behind hpsearch's wrappers"
        fresh = optuna.load_study(study_name=name, storage=url)  # Optuna's own reader, no cache
        expected = fresh.get_trials(deepcopy=False)
        got = read_trials(study)
        assert [t.state for t in got].count(TrialState.RUNNING) == 1 and len(got) == 9
        assert got == expected, "every field of every trial (number, state, values, params, distributions, " \
                                "user/system attrs, intermediate values with ±inf, datetimes, trial id)"
    finally:
        for n in (name, other):
            optuna.delete_study(study_name=n, storage=url)


def test_read_trials_nan_intermediate_and_other_storages(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    study = optuna.create_study(storage=open_storage(url, heartbeat=None), study_name="nan")
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={0: float("nan"), 1: 3.0}))
    (t,) = read_trials(study)
    assert math.isnan(t.intermediate_values[0]) and t.intermediate_values[1] == 3.0
    mem = optuna.create_study()
    fill(mem)
    assert read_trials(mem) == mem.get_trials(deepcopy=False), "in-memory storage: Optuna's get_trials"
