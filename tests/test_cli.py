"""The real CLI in real processes on a real SQLite file: run, rerun, status, best, validate and errors."""

from __future__ import annotations

import json
import sqlite3

import optuna
import pytest
from optuna.trial import TrialState

pytestmark = pytest.mark.slow


def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_run_persists_a_pruned_study(tmp_path, synthetic_spec, cli):
    spec = synthetic_spec(n_trials=8)
    r = cli("run", str(spec), "--storage", storage(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "best trial" in r.stderr and "Traceback" not in r.stderr

    study = optuna.load_study(study_name="synth", storage=storage(tmp_path))
    trials = study.get_trials()
    assert len(trials) == 8
    assert study.metric_names == ["val_top1"]
    assert json.loads(study.user_attrs["hpsearch.spec"])["study"]["name"] == "synth"
    assert set(study.user_attrs["hpsearch.versions"]) >= {"hpsearch", "optuna", "torch"}
    states = {t.state for t in trials}
    assert TrialState.PRUNED in states, "the median pruner stopped at least one trial"
    for t in trials:
        assert len(t.intermediate_values) >= (4 if t.state == TrialState.COMPLETE else 1)
        for key in ("val_top1", "val_top5", "epochs_completed", "train_images_per_s", "wall_s", "n_params",
                    "device"):
            assert key in t.user_attrs, (t.number, key)
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [1, 2, 3, 4]
            assert t.value == t.intermediate_values[4] == t.user_attrs["val_top1"]
        else:
            assert t.user_attrs["reason"]

    with sqlite3.connect(tmp_path / "study.db") as db:  # the raw rows, as any SQL client sees them
        steps = db.execute("select trial_id, count(*) from trial_intermediate_values group by trial_id").fetchall()
        assert len(steps) == 8 and max(n for _, n in steps) == 4
        assert db.execute("select value_json from study_user_attributes where key = 'hpsearch.spec'").fetchone()

    # the same command again continues the same study: it already holds n_trials, so nothing is added
    r2 = cli("run", str(spec), "--storage", storage(tmp_path), cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert "8 of 8 trials finished" in r2.stderr
    assert len(optuna.load_study(study_name="synth", storage=storage(tmp_path)).trials) == 8

    # a larger target tops the study up to exactly that total
    r3 = cli("run", str(spec), "--storage", storage(tmp_path), "--n-trials", "10", cwd=tmp_path)
    assert r3.returncode == 0, r3.stderr
    with sqlite3.connect(tmp_path / "study.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 10

    best = cli("best", "--storage", storage(tmp_path), "--study", "synth", "--json")
    assert best.returncode == 0, best.stderr
    b = json.loads(best.stdout)
    complete = [t for t in optuna.load_study(study_name="synth", storage=storage(tmp_path)).trials
                if t.state == TrialState.COMPLETE]
    top = max(t.value for t in complete)
    assert b["value"] == top, "the best completed value of all 10 trials, no more"
    assert b["number"] in [t.number for t in complete if t.value == top]
    assert b["params"] == next(t.params for t in complete if t.number == b["number"])
    assert {"number", "value", "params", "user_attrs"} <= set(b)

    status = cli("status", "--storage", storage(tmp_path), "--json")
    s = json.loads(status.stdout)["studies"][0]
    assert s["study"] == "synth" and s["trials"] == 10 and sum(s["states"].values()) == 10


def test_diverging_lr_is_pruned_and_the_study_completes(tmp_path, synthetic_spec, cli):
    # SGD with lr 10 and weight decay 1 multiplies every weight by -9 per step: the loss turns NaN
    spec = synthetic_spec(name="div", n_trials=2, lr=10.0, optimizer="sgd", weight_decay=1.0)
    r = cli("run", str(spec), "--storage", storage(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="div", storage=storage(tmp_path))
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert all(t.user_attrs["reason"] == "diverged" for t in study.trials)


def test_default_storage_is_sqlite_in_the_working_directory(tmp_path, synthetic_spec, cli):
    spec = synthetic_spec(name="dflt", n_trials=1)
    r = cli("run", str(spec), "--timeout", "600", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "hpsearch.db").exists()


def test_validate_prints_the_space(cli):
    r = cli("validate", "studies/quickstart.toml")
    assert r.returncode == 0, r.stderr
    assert "arch" in r.stdout and "resnet.width" in r.stdout and "(when arch = resnet)" in r.stdout


@pytest.mark.parametrize("args,code,needle", [
    (["validate", "nope.toml"], 2, "does not exist"),
    (["run", "nope.toml"], 2, "does not exist"),
    (["run", "studies/quickstart.toml", "--n-trials", "0"], 2, "--n-trials"),
    (["run", "studies/quickstart.toml", "--device", "tpu"], 2, "--device"),
    (["run", "studies/quickstart.toml", "--storage", "notaurl"], 2, "storage URL"),
    (["best", "--storage", "sqlite:///{tmp}/x.db", "--study", "ghost"], 1, "no study named 'ghost'"),
    (["frobnicate"], 2, "No such command"),
])
def test_errors_are_one_line_with_the_right_exit_code(tmp_path, cli, args, code, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = cli(*args)
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr


def test_bad_spec_value_exits_2(write_spec, cli):
    spec = write_spec('[study]\nname = "x"\n[data]\ndataset = "synthetic"\n[space]\nlr = { low = 1, high = 0.1 }\n')
    r = cli("validate", str(spec))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "`space.lr`" in r.stderr


def test_password_is_masked(cli):
    r = cli("status", "--storage", "postgresql+psycopg://alice:s3cret-pw@127.0.0.1:1/none",
            env={"HPSEARCH_CONNECT_RETRY_S": "0"})
    assert r.returncode == 1
    assert "s3cret-pw" not in r.stderr + r.stdout and "alice:***@" in r.stderr
