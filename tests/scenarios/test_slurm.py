"""`hpsearch slurm` on a real single-node SLURM cluster (tests/slurm_cluster.py) and a real PostgreSQL: the job
array's tasks fill the study exactly, a task that SLURM requeues (SIGTERM) checkpoints and re-queues its trial,
which resumes at epoch ≥ 1, and a task killed hard (SIGKILL) has its trial resumed by the heartbeat retry.
SLURM's own record of each task is its job completion log; the trials' records say which task ran them."""

from __future__ import annotations

import contextlib
import re
import socket
from pathlib import Path

import optuna
import pytest
from conftest import run_cli, wait_for
from optuna.trial import TrialState
from services import service_url, unique
from slurm_cluster import Cluster, check_prerequisites

from hpsearch.inspect.status import format_status, storage_status
from hpsearch.search.scheduler import finished_count
from hpsearch.storage.retry import LOST_WORKER
from hpsearch.storage.urls import open_storage
from studies import write_study

pytestmark = pytest.mark.slow

HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]
# ten epochs of about a second each on one CPU thread, an eval point every half epoch, a checkpoint per epoch:
# long enough that a trial found with its first checkpoint is still running when it is signalled (with three
# epochs, a quiet machine finished the trial before `scontrol requeue` reached it)
LONG = {"data": {"num_classes": 4, "n_images": 3000}, "train": {"max_epochs": 10, "eval_every": 0.5}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    check_prerequisites()
    c = Cluster(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


@pytest.fixture
def postgres():
    url = service_url("postgresql")
    names: list[str] = []
    yield url, names
    for name in names:
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=None))


def submit(cluster: Cluster, tmp_path: Path, url: str, name: str, n_trials: int, *args: str, **sections) -> str:
    spec = write_study(tmp_path / "s.toml", name=name, n_trials=n_trials, **sections)
    r = run_cli("slurm", str(spec), "--storage", url, "--array", "2", "--cpus-per-task", "1", "--artifacts",
                str(tmp_path / "art"), *args, "--submit", cwd=tmp_path, env={"SLURM_CONF": str(cluster.conf)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "slurm" / f"{name}.sbatch").is_file()
    return re.search(r"^submitted batch job (\d+) ", r.stdout, re.M)[1]


def wait_until_done(cluster: Cluster, job: str, timeout: float = 150) -> None:
    wait_for(lambda: not cluster.queued(job), timeout, f"array job {job} to leave the queue", poll_s=1)


def trials_of(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None)).get_trials()


def exact(trials: list, n: int) -> bool:
    """The study holds exactly ``n`` finished trials, all complete (re-queued failures and surplus not counted)."""
    return finished_count(trials) == n and len([t for t in trials if t.state == TrialState.COMPLETE]) == n


def checkpointed_running_trial(url: str, name: str):
    """A running trial that has a checkpoint (so at least epoch 1 is saved) and knows its array task."""
    with contextlib.suppress(KeyError):
        for t in optuna.load_study(study_name=name, storage=url).get_trials(states=(TrialState.RUNNING,)):
            if "checkpoint" in t.user_attrs and t.user_attrs.get("slurm_array_task_id") is not None:
                return t
    return None


def test_an_array_of_two_workers_fills_the_study_exactly_and_slurm_records_both_tasks(cluster, tmp_path, postgres):
    url, names = postgres
    names.append(name := unique("slurm"))
    job = submit(cluster, tmp_path, url, name, 4, *HEARTBEAT, data={"n_images": 600}, train={"max_epochs": 2})
    wait_until_done(cluster, job)
    records = cluster.records(job)
    assert sorted((r["ArrayTaskId"], r["JobState"]) for r in records) == [("0", "COMPLETED"), ("1", "COMPLETED")]
    for task in ("0", "1"):
        log = (tmp_path / "slurm" / f"{name}-{job}_{task}.out").read_text()
        assert f"hpsearch worker on {socket.gethostname()}: " in log and f"array task {job}_{task}," in log, log
    trials = trials_of(url, name)
    assert exact(trials, 4), "exactly n_trials finished"
    # the trials that ran (a surplus start, which two workers can make at the end, never reaches the objective)
    trials = [t for t in trials if t.state == TrialState.COMPLETE]
    assert {t.user_attrs["slurm_array_job_id"] for t in trials} == {job}
    assert {t.user_attrs["slurm_array_task_id"] for t in trials} <= {"0", "1"}
    assert {t.user_attrs["host"] for t in trials} == {socket.gethostname()}
    task_jobs = {r["ArrayTaskId"]: r["JobId"] for r in records}
    assert all(t.user_attrs["slurm_job_id"] == task_jobs[t.user_attrs["slurm_array_task_id"]] for t in trials)


def test_a_requeued_task_checkpoints_its_trial_and_the_trial_resumes_at_epoch_one_or_later(cluster, tmp_path,
                                                                                             postgres):
    url, names = postgres
    names.append(name := unique("slurmrq"))
    job = submit(cluster, tmp_path, url, name, 3, *HEARTBEAT, **LONG)
    victim = wait_for(lambda: checkpointed_running_trial(url, name), 150, "a running trial with a checkpoint")
    task = f"{job}_{victim.user_attrs['slurm_array_task_id']}"
    status = format_status(storage_status(url, name))
    assert (f"  trial {victim.number} running on {socket.gethostname()} (slurm job {victim.user_attrs['slurm_job_id']}"
            f" = array task {task})") in status, status
    cluster.run("scontrol", "requeue", task)  # SIGTERM to the task's worker, which is the batch shell, then requeue
    # a requeued task may start again only after 2 minutes (BeginTime): let it start at once
    wait_for(lambda: cluster.run("squeue", "-h", "-j", task, "-o", "%T", check=False).stdout.strip() == "PENDING",
             60, f"task {task} pending again after the requeue")
    cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now")
    wait_until_done(cluster, job)
    trials = trials_of(url, name)
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["reason"].startswith("interrupted (signal 15)"), \
        dead.user_attrs
    retries = [t for t in trials if t.user_attrs.get("resumed_from_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == dead.params
    assert retries[0].user_attrs["resumed_at_epoch"] >= 1, "resumed from the checkpoint, not from scratch"
    assert exact(trials, 3), "the total stays exact"
    by_task = {}
    for r in cluster.records(job):
        by_task.setdefault(r["ArrayTaskId"], []).append(r["JobState"])
    victim_task = victim.user_attrs["slurm_array_task_id"]
    assert by_task[victim_task][-1] == "COMPLETED" and len(by_task[victim_task]) == 2, by_task  # requeued, then ran
    assert by_task[str(1 - int(victim_task))] == ["COMPLETED"], by_task
    log = (tmp_path / "slurm" / f"{name}-{task}.out").read_text()
    assert "SIGTERM received: checkpointing the running trial" in log and ", restart 1" in log, log


def test_a_task_killed_hard_has_its_trial_resumed_by_the_heartbeat_retry(cluster, tmp_path, postgres):
    url, names = postgres
    names.append(name := unique("slurmkill"))
    job = submit(cluster, tmp_path, url, name, 2, *HEARTBEAT, **LONG)
    victim = wait_for(lambda: checkpointed_running_trial(url, name), 150, "a running trial with a checkpoint")
    task = f"{job}_{victim.user_attrs['slurm_array_task_id']}"
    # `scancel --signal=KILL` alone is a normal cancel (SIGTERM, KillWait, SIGKILL: the worker would checkpoint);
    # --batch sends SIGKILL itself to the batch shell, which is the worker, as the kernel's OOM killer would
    cluster.run("scancel", "--batch", "--signal=KILL", task)
    wait_until_done(cluster, job)
    trials = trials_of(url, name)
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["reason"] == LOST_WORKER, \
        "SIGKILL left the worker no time to checkpoint and re-queue: the heartbeat failed the trial"
    retries = [t for t in trials if t.user_attrs.get("resumed_from_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == dead.params
    assert retries[0].user_attrs["resumed_at_epoch"] >= 1
    assert retries[0].user_attrs["slurm_array_task_id"] != victim.user_attrs["slurm_array_task_id"], \
        "the other task's worker picked up the retry"
    assert exact(trials, 2) and len(trials) == 3, "the total stays exact: 2 finished, the dead one re-queued"
    states = {r["ArrayTaskId"]: r["JobState"] for r in cluster.records(job)}
    assert states == {victim.user_attrs["slurm_array_task_id"]: "FAILED",
                      retries[0].user_attrs["slurm_array_task_id"]: "COMPLETED"}, states
