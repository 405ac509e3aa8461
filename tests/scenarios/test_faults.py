"""Trial faults and storage faults through the real CLI: each failing trial ends with its state and a `reason`,
the worker goes on with the next trial; storage problems are one line (password masked) and lose nothing.

Faults inside training are injected with ``$HPSEARCH_FAULTS`` (hpsearch/training/faults.py) at the points where real ones
happen: the batch allocation (out of memory) and the augmentation (an exception)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from services import service_url

from hpsearch.storage.urls import open_storage
from studies import write_study

pytestmark = pytest.mark.slow


def spec_file(tmp_path: Path, name: str = "f", n_trials: int = 2, space: dict | None = None,
              **sections) -> Path:
    """The tiny default study (studies.DEFAULTS) with batch sizes 32 and 256 to choose from."""
    return write_study(tmp_path / f"{name}.toml", name=name, n_trials=n_trials,
                       space={"batch_size": [32, 256], **(space or {})}, **sections)


def hpsearch(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = os.environ | {"PYTHONWARNINGS": "ignore", "HPSEARCH_NO_LIVE": "1"} | (env or {})
    full.pop("HPSEARCH_STORAGE", None)
    return subprocess.run([sys.executable, "-m", "hpsearch.cli", *args], cwd=cwd, env=full, text=True,
                          capture_output=True, timeout=timeout)


def trials_of(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None)).get_trials()


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# ---- trial faults ------------------------------------------------------------------------------------------


def test_out_of_memory_fails_the_trial_with_its_batch_size_and_the_next_trial_runs(tmp_path):
    spec = spec_file(tmp_path, enqueue=[{"batch_size": 256, "lr": 0.003}, {"batch_size": 32, "lr": 0.003}])
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    r = hpsearch("run", str(spec), "--storage", url, cwd=tmp_path, env={"HPSEARCH_FAULTS": "oom_above_batch=128"})
    assert r.returncode == 0, r.stderr
    first, second = trials_of(url, "f")
    assert first.state == TrialState.FAIL and first.params["batch_size"] == 256
    assert first.user_attrs["reason"] == "out_of_memory at batch_size 256"
    assert second.state == TrialState.COMPLETE and second.params["batch_size"] == 32, "the same worker goes on"
    assert "trial 0 FAIL (out_of_memory at batch_size 256)" in r.stderr and "Traceback" not in r.stderr


def test_an_exception_in_training_fails_the_trial_with_one_line_and_the_traceback_goes_to_the_log(tmp_path):
    spec = spec_file(tmp_path, n_trials=2)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    log = tmp_path / "hpsearch.log"
    r = hpsearch("--log-file", str(log), "run", str(spec), "--storage", url, cwd=tmp_path,
                 env={"HPSEARCH_FAULTS": "error=1.0"})
    assert r.returncode == 0, r.stderr
    trials = trials_of(url, "f")
    assert [t.state for t in trials] == [TrialState.FAIL] * 2, "both trials ran: the study went on after the first"
    for t in trials:
        reason = t.user_attrs["reason"]
        assert reason.startswith("RuntimeError: injected by HPSEARCH_FAULTS: error at training step "), reason
        assert "\n" not in reason
    # the console has one line per failed trial, the progress line; the log file has the full traceback
    assert "Traceback" not in r.stderr + r.stdout
    assert [ln for ln in r.stderr.splitlines() if "injected" in ln] == [
        ln for ln in r.stderr.splitlines() if ln.startswith("trial ") and " FAIL (RuntimeError: injected" in ln]
    assert len([ln for ln in r.stderr.splitlines() if "injected" in ln]) == 2
    text = log.read_text()
    assert text.count("Traceback (most recent call last)") >= 2
    assert "in before" in text and "RuntimeError: injected by HPSEARCH_FAULTS" in text  # raised in the model's forward
    assert r.stderr.splitlines().count("warning: fault injection is on ($HPSEARCH_FAULTS=error=1.0): trials will fail "
                                       "on purpose") == 1, "the worker says once that faults are injected"


def test_time_limit_prunes_the_trial_and_the_study_goes_on(tmp_path):
    # one microsecond: every trial passes it during its first batch, whatever the machine's speed
    spec = spec_file(tmp_path, n_trials=2, train={"max_trial_seconds": 1e-6})
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    r = hpsearch("run", str(spec), "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trials = trials_of(url, "f")
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert [t.user_attrs["reason"] for t in trials] == ["time_limit"] * 2
    assert r.stderr.count("PRUNED (time_limit)") == 2


def test_time_limit_must_be_positive(tmp_path):
    spec = spec_file(tmp_path, train={"max_trial_seconds": 0})
    r = hpsearch("validate", str(spec), cwd=tmp_path)
    assert r.returncode == 2 and error_lines(r.stderr) == [
        "hpsearch: error: `train.max_trial_seconds` is 0, but must be > 0"]


# ---- storage faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "worker"])
def test_unreachable_database_at_start_is_one_line_naming_the_host_without_the_password(tmp_path, command):
    url = "postgresql+psycopg://alice:S3cretPW@127.0.0.1:1/nowhere"
    args = ["run", str(spec_file(tmp_path))] if command == "run" else ["worker", "--study", "f"]
    r = hpsearch(*args, "--storage", url, cwd=tmp_path, env={"HPSEARCH_CONNECT_RETRY_S": "0"})
    assert r.returncode == 1, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("hpsearch: error: cannot open storage postgresql+psycopg://alice:***@127.0.0.1:1/")
    assert "S3cretPW" not in r.stderr + r.stdout


def test_unknown_study_is_one_line_listing_the_existing_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for name in ("alpha", "beta"):
        optuna.create_study(study_name=name, storage=url)
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    commands = {"worker": [], "best": [], "report": [], "export": ["-o", str(tmp_path / "x.csv")], "status": []}
    procs = {c: subprocess.Popen([sys.executable, "-m", "hpsearch.cli", c, "--storage", url, "--study", "ghost", *extra],
                                 cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for c, extra in commands.items()}  # at once: five interpreter starts cost one
    for command, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 1, (command, err)
        assert error_lines(err) == ["hpsearch: error: no study named 'ghost'; the storage holds: alpha, beta"], command
        assert out == ""
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "dashboards").exists()


def test_a_different_spec_for_an_existing_study_is_refused_unless_forced(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = spec_file(tmp_path, name="s", n_trials=1, train={"max_trial_seconds": 1e-6})
    assert hpsearch("run", str(first), "--storage", url, cwd=tmp_path).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    changed = spec_file(other, name="s", n_trials=1, space={"lr": 0.005},
                        train={"max_epochs": 2, "max_trial_seconds": 1e-6})

    r = hpsearch("run", str(changed), "--storage", url, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert error_lines(r.stderr) == [
        "hpsearch: error: study 's' already exists with a different spec (`space.lr`, `train.max_epochs` differ); "
        "the stored spec wins: join it with `hpsearch worker --study s`, choose another --study name, or pass "
        "--force-spec to replace the stored spec"]
    study = optuna.load_study(study_name="s", storage=url)
    assert json.loads(study.user_attrs["hpsearch.spec"])["train"]["max_epochs"] == 1, "the stored spec is kept"

    # a rerun of the same file with other run controls (n_trials on the command line) is not a different spec
    same = hpsearch("run", str(first), "--storage", url, "--n-trials", "2", cwd=tmp_path)
    assert same.returncode == 0, same.stderr

    forced = hpsearch("run", str(changed), "--storage", url, "--force-spec", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert "replacing its stored spec" in forced.stderr
    study = optuna.load_study(study_name="s", storage=url)
    assert json.loads(study.user_attrs["hpsearch.spec"])["train"]["max_epochs"] == 2


@contextlib.contextmanager
def scratch_database():
    """A PostgreSQL database of its own, so that the test can refuse connections to it (and drop it after)."""
    import psycopg

    admin_url = service_url("postgresql")
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    db = f"hps_fault_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')

    def sql(statement: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(statement)

    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + db, db, sql
    finally:
        sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_database_lost_mid_study_fails_clearly_and_keeps_the_finished_trials(tmp_path):
    with scratch_database() as (url, db, sql):
        pw_url = url.replace("postgres@", "postgres:Mid5tudyPW@")  # trust auth: any password is accepted
        # 6 trials: a trial takes about a second, and a loaded machine polls slowly enough to miss the window
        # (one trial done, the next one training) of a shorter study
        spec = spec_file(tmp_path, name="lost", n_trials=6, data={"n_images": 2400}, train={"max_epochs": 2})
        env = os.environ | {"PYTHONWARNINGS": "ignore", "HPSEARCH_NO_LIVE": "1", "HPSEARCH_STORAGE_RETRY_S": "3"}
        hb = ["--heartbeat-interval", "1", "--grace-period", "2"]
        # create Optuna's tables before the run starts: two processes creating them at once on a fresh
        # PostgreSQL database can collide (duplicate pg_type rows), which is not the fault under test
        open_storage(url, heartbeat=None)
        p = subprocess.Popen([sys.executable, "-m", "hpsearch.cli", "run", str(spec), "--storage", pw_url, *hb],
                             cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until one trial is finished and the next is training
            try:
                trials = trials_of(url, "lost")
            except KeyError:  # not created yet
                trials = []
            if any(t.state == TrialState.COMPLETE for t in trials) and any(
                    t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
                break
            assert p.poll() is None, p.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("no trial finished in time")
        # the outage: no new connections, the open ones cut
        sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
        out, err = p.communicate(timeout=240)
        assert p.returncode == 1, err
        last = error_lines(err)[-1]
        assert last.startswith("hpsearch: error: storage postgresql+psycopg://postgres:***@127.0.0.1:5432/"), err
        assert "did not come back within the retry window" in last and "finished trials are kept" in last
        assert "retrying in" in err, "it retried with back-off before giving up"
        assert "Traceback" not in err and "Mid5tudyPW" not in out + err

        sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
        before = [t for t in trials_of(url, "lost") if t.state == TrialState.COMPLETE]
        assert before, "the finished trials are still there"
        assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in before)
        # the same command, once the database is back, fails the orphaned trial (heartbeat) and finishes
        time.sleep(2.5)  # let the orphan's heartbeat go stale (grace period 2 s)
        r = hpsearch("run", str(spec), "--storage", pw_url, *hb, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        trials = trials_of(url, "lost")
        kept = {t.number: t.intermediate_values for t in before}
        assert all(t.intermediate_values == kept[t.number] for t in trials if t.number in kept)
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        counted = [t for t in trials if t.state.is_finished() and t.number not in retried]
        assert len(counted) == 6 and not [t for t in trials if t.state == TrialState.RUNNING]
