"""A study and artifact folder written by the code before the sub-package move (tests/fixtures/old_study, made
by its make_fixture.py with commit f9619c5) is continued, inspected and retrained by today's code: the
re-queued trial (a promotion of trial 7 interrupted as it started) is taken first and continues trial 7's
checkpoint, which the old code wrote (no trial falls back to training from scratch); the run goes on to its
n_trials; status, report, best and retrain read the study."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from conftest import run_cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "old_study"


@pytest.fixture
def old_study(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "old_study"
    shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("make_fixture.py"))
    return folder, f"sqlite:///{folder / 'old.sqlite'}"


def trials_of(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="old", storage=url).get_trials()


def test_the_old_study_continues_reports_and_retrains(old_study):
    folder, url = old_study
    before = trials_of(url)
    assert before[9].state.name == "WAITING" and before[9].system_attrs["retry_history"] == [8]
    assert before[9].user_attrs["promoted_from"] == 7 and before[7].user_attrs["paused_at_step"] == 1

    r = run_cli("run", "study.toml", "--storage", url, "--artifacts", str(folder / "artifacts"),
                "--n-trials", "10", "--keep-best", "2", cwd=folder, env={"HPSEARCH_NO_LIVE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    after = trials_of(url)
    assert after[9].state.name in ("COMPLETE", "PRUNED"), "the re-queued trial was not taken"
    assert after[9].user_attrs["resumed_from_trial"] == 7 and after[9].user_attrs["resumed_at_epoch"] == 1
    # its curve is trial 7's up to the rung, then its own
    assert after[9].intermediate_values[1] == before[7].intermediate_values[1] and 2 in after[9].intermediate_values
    assert not [t.number for t in after if t.user_attrs.get("fallback")], "a trial trained from scratch"
    assert sum(t.state.name == "COMPLETE" for t in after) > sum(t.state.name == "COMPLETE" for t in before)

    status = run_cli("status", "--storage", url, cwd=folder)
    assert status.returncode == 0 and "old:" in status.stdout and "trained from scratch" not in status.stdout
    status_json = json.loads(run_cli("status", "--storage", url, "--json", cwd=folder).stdout)
    assert status_json["studies"][0]["fallbacks"] == []
    assert "trial 9 resumed trial 7 at epoch 1" in status.stdout

    report = run_cli("report", "--storage", url, "--study", "old", "-o", str(folder / "old.html"), cwd=folder)
    assert report.returncode == 0, report.stderr
    html = (folder / "old.html").read_text()
    assert "trained from scratch instead of resuming</dt><dd>0<" in html

    best = run_cli("best", "--storage", url, "--study", "old", "--json", cwd=folder)
    assert best.returncode == 0 and json.loads(best.stdout)["value"] >= 91.0

    # trial 5 completed under the old code: its stored configuration retrains today
    model = folder / "trial5.pt"
    r = run_cli("retrain", "--storage", url, "--study", "old", "--trial", "5", "--epochs", "1", "-o", str(model),
                cwd=folder)
    assert r.returncode == 0, r.stderr[-2000:]
    assert model.stat().st_size > 0
