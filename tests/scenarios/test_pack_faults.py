"""A pack worker killed with SIGKILL on PostgreSQL: every member's heartbeat stops, the next worker fails and
re-queues them all, and each member resumes (solo) from its own checkpoint at epoch ≥ 1; the total stays exact."""

from __future__ import annotations

import contextlib
import os
import signal

import optuna
import pytest
from conftest import start_cli, wait_for
from optuna.trial import TrialState
from services import service_url, unique

from hpsearch.storage.urls import open_storage
from studies import write_study

pytestmark = pytest.mark.slow


def test_a_killed_pack_worker_s_members_each_resume_from_their_own_checkpoint(tmp_path):
    url = service_url("postgresql")
    name = unique("packkill")
    spec = write_study(tmp_path / "s.toml", name=name, n_trials=3, data={"num_classes": 4, "n_images": 2400},
                       train={"max_epochs": 3, "eval_every": 1.0, "pack": 3},
                       space={"lr": {"low": 1e-3, "high": 0.02, "log": True}, "batch_size": 64})
    hb = ["--heartbeat-interval", "1", "--grace-period", "3", "--artifacts", str(tmp_path / "art")]
    try:
        a = start_cli("run", str(spec), "--storage", url, *hb, cwd=tmp_path)

        def all_checkpointed():
            with contextlib.suppress(KeyError):
                trials = optuna.load_study(study_name=name, storage=url).get_trials(states=(TrialState.RUNNING,))
                return len(trials) == 3 and all("checkpoint" in t.user_attrs for t in trials) and trials
            return None

        packed = wait_for(all_checkpointed, 240, "three pack members with a checkpoint each")
        assert len({t.user_attrs["pack_id"] for t in packed}) == 1
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
        b = start_cli("worker", "--storage", url, "--study", name, *hb, cwd=tmp_path)
        out, _ = b.communicate(timeout=300)
        assert b.returncode == 0, out
        trials = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None)).get_trials()
        killed = {t.number: t for t in packed}
        assert {t.number for t in trials if t.state == TrialState.FAIL} == set(killed), "the members died as one"
        retries = [t for t in trials if "resumed_from_trial" in t.user_attrs]
        assert sorted(t.user_attrs["resumed_from_trial"] for t in retries) == sorted(killed), out
        for r in retries:
            dead = killed[r.user_attrs["resumed_from_trial"]]
            assert r.state == TrialState.COMPLETE and r.params == dead.params
            assert r.user_attrs["resumed_at_epoch"] >= 1, "each member resumed from its own checkpoint"
            assert sorted(r.intermediate_values) == [1, 2, 3]
        assert len(trials) == 6 and len([t for t in trials if t.state == TrialState.COMPLETE]) == 3, \
            "the total stays exact: 3 finished trials counted, the 3 dead ones re-queued"
    finally:
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=None))


def test_ctrl_c_re_queues_every_member_and_the_next_run_resumes_them(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    spec = write_study(tmp_path / "s.toml", name="packint", n_trials=3, data={"num_classes": 4, "n_images": 2400},
                       train={"max_epochs": 3, "eval_every": 1.0, "pack": 3},
                       space={"lr": {"low": 1e-3, "high": 0.02, "log": True}, "batch_size": 64})
    art = ["--artifacts", str(tmp_path / "art")]
    a = start_cli("run", str(spec), "--storage", url, *art, cwd=tmp_path)

    def all_checkpointed():
        with contextlib.suppress(KeyError):
            trials = optuna.load_study(study_name="packint", storage=url).get_trials(states=(TrialState.RUNNING,))
            return len(trials) == 3 and all("checkpoint" in t.user_attrs for t in trials)
        return False

    wait_for(all_checkpointed, 240, "three pack members with a checkpoint each")
    a.send_signal(signal.SIGINT)
    out, _ = a.communicate(timeout=120)
    assert a.returncode == 130, out
    trials = optuna.load_study(study_name="packint", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.WAITING] * 3, out
    assert all("interrupted" in t.user_attrs["reason"] for t in trials[:3])
    b = start_cli("run", str(spec), "--storage", url, *art, cwd=tmp_path)
    out, _ = b.communicate(timeout=300)
    assert b.returncode == 0, out
    retries = optuna.load_study(study_name="packint", storage=url).get_trials()[3:]
    assert [t.state for t in retries] == [TrialState.COMPLETE] * 3
    assert sorted(t.user_attrs["resumed_from_trial"] for t in retries) == [0, 1, 2]
    assert all(t.user_attrs["resumed_at_epoch"] >= 1 for t in retries)
