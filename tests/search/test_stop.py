"""Plateau and target stops: `study.patience` / `--patience` and `study.target` / `--target`, computed by every
worker from the storage before each trial, so that all workers of a study stop together."""

from __future__ import annotations

import optuna
import pytest
from conftest import run_cli
from optuna.trial import TrialState
from services import service_url, unique

from hpsearch.search.scheduler import stop_reason
from hpsearch.storage.urls import open_storage
from studies import write_study


def _study(values: list[float | None]) -> list:
    """A real in-memory study whose trials finished in this order with these values (None: pruned)."""
    study = optuna.create_study(direction="maximize")
    for v in values:
        t = study.ask()
        if v is None:
            study.tell(t, state=TrialState.PRUNED)
        else:
            study.tell(t, v)
    return study.get_trials()


def test_plateau_counts_finished_trials_since_the_last_improvement():
    assert stop_reason(_study([50, 60, 59, None]), patience=3) is None
    reason = stop_reason(_study([50, 60, 59, None, 60]), patience=3)
    assert reason == ("plateau: the last 3 finished trials did not beat the best (60.00%, trial 1) by at least 0 "
                      "points (patience 3)"), "pruned trials and ties count as no improvement"
    assert stop_reason(_study([50, 60, 60.4, 60.3, 60.45]), patience=3, min_delta=0.5) is not None, \
        "gains smaller than min_delta are no improvement"
    assert stop_reason(_study([50, 60, 60.4, 61, 61.2]), patience=3, min_delta=0.5) is None
    assert stop_reason(_study([None, None, None]), patience=2) is None, "no best yet: nothing to wait for"


def test_target():
    assert stop_reason(_study([80, 92.5]), patience=None, target=92.5) == \
        "target reached: trial 1 has val Top-1 92.50% ≥ 92.5%"
    assert stop_reason(_study([80, 92.4]), patience=None, target=92.5) is None


@pytest.mark.slow
def test_a_study_stops_on_its_plateau_before_n_trials(tmp_path):
    spec = write_study(tmp_path / "s.toml", name="plateau", n_trials=30, study={"patience": 3})
    url = f"sqlite:///{tmp_path / 's.db'}"
    r = run_cli("run", str(spec), "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="plateau", storage=url).get_trials()
    assert len(trials) < 30 and "study stopped: plateau: the last 3 finished trials" in r.stderr
    assert stop_reason(trials, patience=3) is not None
    # --target on the command line overrides the spec for this run: the study is already past it
    r = run_cli("run", str(spec), "--storage", url, "--target", "1", cwd=tmp_path)
    assert r.returncode == 0 and "study stopped: target reached" in r.stderr
    assert len(optuna.load_study(study_name="plateau", storage=url).get_trials()) == len(trials)


@pytest.mark.slow
def test_two_workers_on_postgresql_stop_together(tmp_path):
    url = service_url("postgresql")
    name = unique("stop")
    spec = write_study(tmp_path / "s.toml", name=name, n_trials=60, study={"patience": 4},
                       data={"n_images": 300})
    try:
        r = run_cli("run", str(spec), "--storage", url, "--workers", "2", cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr
        assert r.stderr.count("study stopped: plateau") == 2, "each worker stopped on the shared rule"
        trials = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None)).get_trials()
        assert len(trials) < 60 and all(t.state.is_finished() for t in trials)
        assert stop_reason(trials, patience=4) is not None
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=None))
