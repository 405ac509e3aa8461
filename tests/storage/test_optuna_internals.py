"""hpsearch.storage.optuna_internals: each use of Optuna's private API, exercised against real studies, so that an Optuna
release that renames or reshapes one fails here by name (and not in a trial somewhere else)."""

from __future__ import annotations

import time

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hpsearch.storage import optuna_internals as internals
from hpsearch.storage.retry import LOST_WORKER
from hpsearch.storage.urls import Heartbeat, open_storage


def _study(url: str, heartbeat: Heartbeat | None = None, name: str = "s") -> optuna.Study:
    return optuna.create_study(storage=open_storage(url, heartbeat=heartbeat), study_name=name, direction="maximize")


def test_study_storage_study_id_and_trial_id_name_the_storage_rows(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _study(url, name="other").optimize(lambda t: 0.0, n_trials=1)  # its trial takes id 1: ids and numbers differ
    study = _study(url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage = internals.study_storage(study)
    assert storage.get_study_id_from_name("s") == internals.study_id(study)
    for t in study.get_trials():
        assert internals.trial_id(t) == storage.get_trial_id_from_study_id_trial_number(internals.study_id(study),
                                                                                        t.number)
    assert internals.trial_id(study.trials[0]) != study.trials[0].number, \
        "the other study's trial came first: ids and numbers differ, so a mix-up would show"


def test_heartbeat_enabled_and_the_heartbeat_mixin(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert internals.heartbeat_enabled(open_storage(url, heartbeat=Heartbeat(1, 2)))
    assert not internals.heartbeat_enabled(open_storage(url, heartbeat=None))
    assert not internals.heartbeat_enabled(open_storage(f"journal:///{tmp_path / 'j.log'}"))
    rdb = internals.rdb_backend(open_storage(url, heartbeat=Heartbeat(1, 2)))
    assert isinstance(rdb, internals.BaseHeartbeat)


def test_fail_stale_trials_asks_the_named_method(tmp_path):
    """The wrapper of STALE_TRIAL_IDS records why a trial died: if Optuna stopped calling that method, the
    failed trial would have no reason."""
    assert hasattr(RDBStorage, internals.STALE_TRIAL_IDS)
    study = _study(f"sqlite:///{tmp_path / 'st.db'}", heartbeat=Heartbeat(1, 2))
    trial = study.ask()
    internals.study_storage(study).record_heartbeat(internals.trial_id(trial))
    time.sleep(3.5)  # past the grace period of 2 s (heartbeats are stored to the second): the trial is stale
    optuna.storages.fail_stale_trials(study)
    dead, retry = study.get_trials()  # the heartbeat callback re-queued a copy (max_retry 1)
    assert dead.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert dead.user_attrs["reason"] == LOST_WORKER


def test_rdb_backend_and_the_fast_reader_equal_get_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = _study(url)

    def objective(t: optuna.Trial) -> float:
        t.set_user_attr("note", "x")
        t.report(0.5, 1)
        return t.suggest_float("x", 0, 1)

    study.optimize(objective, n_trials=3)
    rdb = internals.rdb_backend(internals.study_storage(study))
    assert isinstance(rdb, RDBStorage)
    assert internals.rdb_backend(internals.study_storage(_study(f"journal:///{tmp_path / 'j.log'}"))) is None
    fast = internals.read_rdb_trials(rdb, internals.study_id(study))
    slow = study.get_trials()
    assert [(t.number, t.state, t.values, t.params, t.user_attrs, t.intermediate_values, t.datetime_start)
            for t in fast] == [(t.number, t.state, t.values, t.params, t.user_attrs, t.intermediate_values,
                                t.datetime_start) for t in slow]


def test_no_other_module_touches_optuna_privates():
    """The rule this module exists for: Optuna's private modules and attributes appear nowhere else in hpsearch."""
    import re
    from pathlib import Path

    pattern = re.compile(r"optuna\.(storages|samplers|trial|study)\._|\._storage\b|\._study_id\b|\._trial_id\b|"
                         r"\._backend\b|_get_stale_trial_ids")
    package = Path(internals.__file__).parents[1]  # hpsearch/
    offenders = [f"{p.relative_to(package)}:{i}" for p in sorted(package.rglob("*.py"))
                 if p.name != "optuna_internals.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
