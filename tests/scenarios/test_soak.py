"""Soak: 4 worker processes on PostgreSQL run 200 tiny trials with injected faults (random divergence, random
exceptions, $HPSEARCH_FAULTS) while one worker is killed with SIGKILL mid-trial and started again. At the end the
study holds exactly 200 finished trials, every trial that is not COMPLETE says why, and every COMPLETE trial has
all its eval points."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from services import service_url, unique

from hpsearch.search.study import open_study
from hpsearch.spec import load_spec
from hpsearch.storage.retry import LOST_WORKER
from hpsearch.storage.urls import open_storage
from studies import write_study

pytestmark = pytest.mark.slow

N_TRIALS, N_WORKERS = 200, 4
# 80 train images in batches of 32: 3 steps per epoch, eval points 1 and 2 (epochs 0.5 and 1)
EVAL_STEPS = [1, 2]


def test_soak_four_workers_faults_and_a_killed_worker_lose_nothing(tmp_path):
    url = service_url("postgresql")
    name = unique("soak")
    spec = write_study(tmp_path / "soak.toml", name=name, n_trials=N_TRIALS, data={"n_images": 96})
    open_study(load_spec(spec), open_storage(url, heartbeat=None), name)
    env = os.environ | {"PYTHONWARNINGS": "ignore", "HPSEARCH_NO_LIVE": "1", "HPSEARCH_THREADS": "1",
                        "HPSEARCH_FAULTS": "diverge=0.1,error=0.1,seed=7"}
    args = [sys.executable, "-m", "hpsearch.cli", "worker", "--storage", url, "--study", name, "--artifacts",
            str(tmp_path / "art"), "--heartbeat-interval", "1", "--grace-period", "3"]
    logs: list[Path] = []

    def start() -> subprocess.Popen:
        logs.append(tmp_path / f"worker-{len(logs)}.log")
        with open(logs[-1], "w") as out:
            return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)

    procs = [start() for _ in range(N_WORKERS)]
    study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None))
    try:
        victim = procs[0]
        deadline = time.monotonic() + 150
        killed = None
        while killed is None:  # once 40 trials are done: freeze the victim inside a trial, then kill it
            assert time.monotonic() < deadline and victim.poll() is None, "the victim never ran a trial"
            trials = study.get_trials(deepcopy=False)
            if sum(t.state.is_finished() for t in trials) >= 40:
                victim.send_signal(signal.SIGSTOP)
                mine = [t for t in study.get_trials(states=(TrialState.RUNNING,))
                        if t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
                if mine:
                    killed = mine[0].number
                    victim.kill()
                    victim.wait()
                else:
                    victim.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        procs.append(start())  # the same worker, started again
        codes = [p.wait(timeout=240) for p in procs[1:]]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
    text = "\n".join(p.read_text() for p in logs)
    try:
        assert codes == [0] * N_WORKERS, text[-3000:]
        assert "Traceback" not in text

        trials = study.get_trials()
        by_number = {t.number: t for t in trials}
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        finished = [t for t in trials if t.state.is_finished() and t.number not in retried
                    and not t.user_attrs.get("surplus")]
        assert len(finished) == N_TRIALS, sorted((t.number, t.state.name) for t in trials)
        assert not [t.number for t in trials if not t.state.is_finished()], "nothing left running or waiting"

        # the killed worker's trial: failed by the heartbeat, with its reason, and retried once to the end
        assert by_number[killed].state == TrialState.FAIL
        assert by_number[killed].user_attrs["reason"] == LOST_WORKER
        retry = [t for t in trials if killed in t.system_attrs.get("retry_history", [])]
        assert len(retry) == 1 and retry[0].state.is_finished() and retry[0].params == by_number[killed].params

        missing_reason = [t.number for t in trials if t.state != TrialState.COMPLETE and not t.user_attrs.get("reason")]
        assert missing_reason == []
        reasons = [t.user_attrs["reason"] for t in trials if t.state != TrialState.COMPLETE]
        assert reasons.count("diverged") >= 5, "the injected divergences were pruned"
        assert sum(r.startswith("RuntimeError: injected by HPSEARCH_FAULTS") for r in reasons) >= 5
        assert not [t for t in trials if t.state == TrialState.COMPLETE and "reason" in t.user_attrs]

        gaps = [(t.number, sorted(t.intermediate_values)) for t in trials
                if t.state == TrialState.COMPLETE and sorted(t.intermediate_values) != EVAL_STEPS]
        assert gaps == [], "a COMPLETE trial misses an eval point"
        assert sum(t.state == TrialState.COMPLETE for t in finished) >= 100
    finally:
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=None))
