"""hpsearch.inspect.export: CSV and JSON round trips, flattened columns, masked secrets, bad suffixes."""

from __future__ import annotations

import csv
import json

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.errors import SpecError
from hpsearch.inspect.export import export_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)
SECRET_URL = "postgresql+psycopg://alice:hunter2pw@db.example/hp"


@pytest.fixture
def study(tmp_path):
    """Trials 0-2 COMPLETE (values 40, 90, 65), trial 3 PRUNED, trial 4 FAIL whose reason holds a password."""
    s = optuna.create_study(storage=f"sqlite:///{tmp_path}/x.db", study_name="exp", direction="maximize")
    for i, (state, v) in enumerate([(TrialState.COMPLETE, 40.0), (TrialState.COMPLETE, 90.0),
                                    (TrialState.COMPLETE, 65.0), (TrialState.PRUNED, None), (TrialState.FAIL, None)]):
        t = s.ask()
        t.suggest_categorical("arch", ["lenet", "resnet"])
        t.suggest_float("lr", 1e-4, 1e-1, log=True)
        t.set_user_attr("config", {"arch": t.params["arch"], "max_epochs": 4})
        t.report(10.0 + i, 1)
        if state == TrialState.FAIL:
            t.set_user_attr("reason", f"OperationalError: cannot reach {SECRET_URL}")
        s.tell(t, v, state=state) if v is None else s.tell(t, v)
    return s


def test_csv_round_trips_trials_and_best_value(study, tmp_path):
    path = export_trials(study, tmp_path / "out" / "trials.csv", storage_url=SECRET_URL)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 5
    assert max(float(r["value"]) for r in rows if r["value"]) == 90.0
    assert {"number", "state", "value", "param.arch", "param.lr", "attr.config", "datetime_start",
            "datetime_complete", "duration_s"} <= set(rows[0])
    assert json.loads(rows[0]["attr.config"])["max_epochs"] == 4, "dicts are JSON-encoded in CSV"
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 + ["PRUNED", "FAIL"]
    for r, t in zip(rows, study.trials, strict=True):  # the stored times, not just some number
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        assert float(r["duration_s"]) == pytest.approx(seconds), r


def test_json_round_trips_trials_and_best_value(study, tmp_path):
    rows = json.loads(export_trials(study, tmp_path / "trials.json").read_text())
    assert len(rows) == 5 and max(r["value"] for r in rows if r["value"] is not None) == 90.0
    assert rows[1]["attr.config"]["arch"] in ("lenet", "resnet")
    assert rows[0]["datetime_start"].count("T") == 1, "times are ISO 8601"


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_planted_password_is_masked(study, tmp_path, suffix):
    text = export_trials(study, tmp_path / f"t{suffix}").read_text()
    assert "hunter2pw" not in text and "alice:***@" in text


def test_other_suffix_is_a_one_line_spec_error(study, tmp_path):
    with pytest.raises(SpecError) as e:
        export_trials(study, tmp_path / "trials.xlsx")
    assert "'.xlsx'" in str(e.value) and "\n" not in str(e.value)
