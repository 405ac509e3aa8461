"""hpsearch.runtime.worker on real SQLite studies: the target is a total, surplus starts are not counted, the timeout
stops new trials, and WorkerOptions forwarded as arguments are what `hpsearch worker` accepts."""

from __future__ import annotations

import io

import optuna
import pytest
from conftest import run_cli
from optuna.trial import TrialState

from hpsearch.runtime.placement import worker_salt
from hpsearch.runtime.worker import WorkerOptions, run_worker
from hpsearch.search.scheduler import finished_count, is_surplus
from hpsearch.search.study import open_study
from hpsearch.spec import parse_spec
from hpsearch.storage.urls import Heartbeat, open_storage
from studies import study_doc


def _study(tmp_path, name: str, n_trials: int):
    spec = parse_spec(study_doc(name=name, n_trials=n_trials))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    return spec, url, open_study(spec, open_storage(url, heartbeat=None), name)


def test_the_target_is_a_total_and_a_rerun_tops_up(tmp_path):
    spec, _, study = _study(tmp_path, "total", 2)
    opts = WorkerOptions(artifacts=str(tmp_path / "art"))
    assert run_worker(spec, study, opts, io.StringIO()) == 0
    assert finished_count(study.get_trials()) == 2
    more = WorkerOptions(n_trials=3, artifacts=str(tmp_path / "art"))
    assert run_worker(more.apply(spec), study, more, io.StringIO()) == 0
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3, "3 in total, not 2 + 3"


def test_a_passed_timeout_starts_no_trial(tmp_path):
    spec, _, study = _study(tmp_path, "late", 2)
    opts = WorkerOptions(timeout=1e-6, artifacts=str(tmp_path / "art"))
    out = io.StringIO()
    assert run_worker(opts.apply(spec), study, opts, out) == 0
    assert study.get_trials() == [] and "timeout reached: no new trials" in out.getvalue()


def test_surplus_and_failed_retries_do_not_count(tmp_path):
    _, _, study = _study(tmp_path, "count", 2)
    for value in (1.0, 2.0):
        t = study.ask()
        study.tell(t, value)
    late = study.ask()  # a worker that raced for a slot the first two already fill
    trials = study.get_trials()
    assert is_surplus(trials, late.number, target=2) and not is_surplus(trials, 1, target=2)
    study.tell(late, state=TrialState.FAIL)
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, study.get_trials()[-1])
    assert finished_count(study.get_trials()) == 2, "a re-queued failure is not counted"
    retry = study.ask()  # the re-queued copy
    study.tell(retry, 3.0)
    assert finished_count(study.get_trials()) == 3, "its retry is"


@pytest.mark.slow
def test_worker_args_are_what_the_worker_command_accepts(tmp_path):
    spec, url, _ = _study(tmp_path, "fwd", 1)
    opts = WorkerOptions(n_trials=1, timeout=600.0, device="cpu", artifacts=str(tmp_path / "art"),
                         heartbeat=Heartbeat(5, 20, 2), keep_best=1)
    args = opts.worker_args()
    assert args == ["--n-trials", "1", "--timeout", "600.0", "--device", "cpu", "--artifacts", str(tmp_path / "art"),
                    "--heartbeat-interval", "5", "--grace-period", "20", "--max-retry", "2", "--keep-best", "1"]
    r = run_cli("worker", "--storage", url, "--study", "fwd", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (t,) = optuna.load_study(study_name="fwd", storage=url).get_trials()
    assert t.state == TrialState.COMPLETE and t.user_attrs["device"] == "cpu"
    assert (tmp_path / "art").is_dir() and any((tmp_path / "art").iterdir()), "--artifacts reached the worker"


def test_each_worker_gets_its_own_sampler_seed_offset():
    """Workers joining one study at once must not replay each other's draws: the offset mixes host, pid, SLURM
    job and the clock (pid + trial count alone collided), so even two joins in one process differ."""
    base = dict(host="node1", pid=1000, job="", clock_ns=5)
    salts = {worker_salt(**base), worker_salt(**base | {"host": "node2"}), worker_salt(**base | {"pid": 1001}),
             worker_salt(**base | {"job": "77"}), worker_salt(**base | {"clock_ns": 6})}
    assert len(salts) == 5, "host, pid, SLURM job and clock each change the offset"
    assert worker_salt(**base) == worker_salt(**base), "the same inputs: the same offset"
