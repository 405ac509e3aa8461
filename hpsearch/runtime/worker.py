"""A worker: one process that runs trials of a study until the scheduler says stop.

Any number of workers, on any hosts, can share one study through its storage (Optuna's design). Each loop
turn asks ``hpsearch.search.scheduler.next_action`` what to do next, from the stored trials, and does it:
stop, promote a paused configuration, wait for other workers' trials (failing the stale ones, so a dead
worker's trial is retried here), or train: one trial through ``study.optimize(n_trials=1)`` so Optuna's
heartbeat and stale-trial handling apply, or a trial pack. Ctrl-C / SIGTERM checkpoint-and-requeue the running
trial."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from hpsearch.data import load_dataset
from hpsearch.data.base import Dataset
from hpsearch.errors import StorageError, first_line
from hpsearch.inspect.console import Progress, summary
from hpsearch.runtime.options import WorkerOptions
from hpsearch.runtime.placement import placement, worker_salt
from hpsearch.search import lineage
from hpsearch.search.asha import enqueue_promotion
from hpsearch.search.objective import Interrupted, Objective, StopFlag, check_admitted, release_memory
from hpsearch.search.packs import pack_size, run_next_pack
from hpsearch.search.scheduler import (
    Action,
    New,
    Pack,
    Promote,
    Rules,
    Stop,
    Take,
    Wait,
    checkpoints_to_keep,
    finished_count,
    next_action,
)
from hpsearch.search.study import build_pruner, build_sampler, fail_stale, load_study, open_study, stored_spec
from hpsearch.spec import Spec
from hpsearch.storage import optuna_internals as internals
from hpsearch.storage.artifacts import open_artifact_store
from hpsearch.storage.checkpoints import Checkpoints
from hpsearch.storage.retry import is_transient
from hpsearch.storage.urls import RetryStaleTrial, mask_secrets, mask_url, open_storage
from hpsearch.training import faults
from hpsearch.training.device import configure, resolve_device, resolve_precision

log = logging.getLogger("hpsearch")
DEFAULT_OPTIONS = WorkerOptions()
WAIT_POLL_S = 2.0


@contextmanager
def signals_to(flag: StopFlag):
    """SIGINT/SIGTERM set ``flag`` (the trial stops at its next progress point); a second one aborts."""

    def handler(signum, _frame):
        if flag.signum is not None:
            raise KeyboardInterrupt
        flag.signum = signum
        print(f"hpsearch: {signal.Signals(signum).name} received: checkpointing the running trial "
              "(press again to abort at once)", file=sys.stderr, flush=True)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Worker:
    """What a worker process holds (device, checkpoints, progress, the objective once built) and how it carries
    out each of the scheduler's actions; it decides nothing itself."""

    def __init__(self, spec: Spec, study: optuna.Study, opts: WorkerOptions, stream: TextIO,
                 dataset: Dataset | None):
        if threads := os.environ.get("HPSEARCH_THREADS"):
            torch.set_num_threads(max(1, int(threads)))
        self.spec, self.study, self.opts, self.stream, self.dataset = spec, study, opts, stream, dataset
        self.deadline = time.monotonic() + spec.study.timeout if spec.study.timeout else None
        self.device = resolve_device(spec.train.device)
        self.precision = resolve_precision(spec.train.precision, self.device)
        configure(self.device)
        self.checkpoints = Checkpoints(open_artifact_store(opts.artifacts), opts.keep_best)
        self.pack_k, self.pack_note = pack_size(spec, self.device)
        heartbeat = internals.heartbeat_enabled(internals.study_storage(study))
        self.rules = Rules.of(spec, heartbeat, self.pack_k)
        if fault_spec := faults.active():
            print(f"warning: fault injection is on (${faults.ENV}={fault_spec}): trials will fail on purpose",
                  file=stream, flush=True)
        self.flag = StopFlag()
        self.progress = Progress(stream, live=None if not os.environ.get("HPSEARCH_NO_LIVE") else False)
        self.objective: Objective | None = None

    def next_action(self) -> Action:
        timed_out = self.deadline is not None and time.monotonic() >= self.deadline
        return next_action(self.study.get_trials(deepcopy=False), self.rules, timed_out, self.flag.signum)

    def stop(self, action: Stop) -> int:
        if action.message:
            print(action.message, file=self.stream, flush=True)
        return action.code

    def promote(self, trial: FrozenTrial) -> None:
        enqueue_promotion(self.study, trial)

    def wait(self) -> None:
        """Others' trials are running: fail (and re-queue) those whose worker died, then look again shortly."""
        fail_stale(self.study)
        time.sleep(WAIT_POLL_S)

    def train(self, k: int = 1) -> None:
        """Runs the next trial (``k`` = 1: the waiting one, or a new one) or pack of ``k`` new trials. The first
        call loads the data and builds the objective instead (that takes a while: the scheduler looks again)."""
        if self.objective is None:
            self.objective = self.prepare()
            return
        try:
            if k > 1:
                run_next_pack(self.study, self.objective, k, self.rules.n_trials, self.progress, self.stream,
                              self.pack_note)
            else:
                self.study.optimize(self.admitted, n_trials=1, catch=(Exception,), callbacks=[self.progress])
        except Interrupted as e:
            requeue_interrupted(self.study)
            print(f"hpsearch: trial checkpointed and re-queued; run the same command again to resume "
                  f"({signal.Signals(e.signum).name})", file=self.stream, flush=True)
            return  # the flag is set: the scheduler stops the worker next
        if self.objective.last_failed:
            release_memory(self.device)  # a failed trial's traceback (and its tensors) is gone only now
        self.checkpoints.apply_retention(self.study, lambda trials: checkpoints_to_keep(trials, self.rules))

    def admitted(self, trial: optuna.Trial) -> float:
        check_admitted(trial, self.rules.n_trials)
        return self.objective(trial)

    def prepare(self) -> Objective:
        if self.dataset is None:
            self.dataset = load_dataset(self.spec.data, self.spec.study.seed, self.opts.data_dir)
        print(f"data: {self.dataset.source}; {len(self.dataset.train_y)} train / {len(self.dataset.val_y)} val "
              f"images; device {self.device}, precision {self.precision}", file=self.stream, flush=True)
        if self.pack_k > 1:
            print(f"trial packs of up to {self.pack_k} ({self.pack_note})", file=self.stream, flush=True)
        return Objective(self.spec, self.dataset, self.device, self.precision, self.progress, self.checkpoints,
                         self.flag, placement())


def run_worker(spec: Spec, study: optuna.Study, opts: WorkerOptions, stream: TextIO = sys.stderr,
               dataset: Dataset | None = None) -> int:
    """Runs the scheduler's actions until it says stop; returns the exit code. ``spec`` has ``opts``' overrides
    applied. The dataset is loaded when the first trial needs it, unless the caller passes it."""
    worker = Worker(spec, study, opts, stream, dataset)
    with signals_to(worker.flag):
        while True:
            match worker.next_action():
                case Stop() as stop:
                    return worker.stop(stop)
                case Promote(trial):
                    worker.promote(trial)
                case Wait():
                    worker.wait()
                case Take() | New():
                    worker.train()
                case Pack(k):
                    worker.train(k)


def requeue_interrupted(study: optuna.Study) -> None:
    """Re-queues this worker's trial that an interrupt just failed, as the heartbeat's retry would."""
    failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
              if "interrupted" in str(t.user_attrs.get("reason", ""))]
    retried = lineage.retried_numbers(study.get_trials(deepcopy=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in failed:
            if t.number not in retried:
                RetryStaleTrial(max_retry=None)(study, t)


@contextmanager
def storage_outage(url: str) -> Iterator[None]:
    """Turns an outage that outlasted the storage's retries into one clear line (exit 1). Finished trials are
    safe in the storage; the running one is failed and re-queued by the heartbeat of the next run."""
    try:
        yield
    except Exception as e:
        if not is_transient(e):
            raise
        detail = mask_secrets(f"{type(e).__name__}: {first_line(e)}", url)[:300]
        raise StorageError(f"storage {mask_url(url)} stopped answering and did not come back within the retry "
                           f"window ($HPSEARCH_STORAGE_RETRY_S): {detail}; finished trials are kept: run the "
                           "same command again once the storage is back") from None


def run(spec: Spec, storage_url: str, study_name: str | None = None, opts: WorkerOptions = DEFAULT_OPTIONS,
        stream: TextIO = sys.stderr, force_spec: bool = False) -> int:
    """``hpsearch run`` in one process: create or continue the study, then work on it."""
    spec = opts.apply(spec)
    name = study_name or spec.study.name
    resolve_device(spec.train.device)  # a bad device is a usage error before anything is created
    # so is missing or broken data: load it before the study is created (one error line, nothing left behind)
    dataset = load_dataset(spec.data, spec.study.seed, opts.data_dir)
    study = open_study(spec, open_storage(storage_url, opts.heartbeat), name, force_spec=force_spec)
    with storage_outage(storage_url):
        print(f"study {name} in {mask_url(storage_url)}: {finished_count(study.get_trials(deepcopy=False))} of "
              f"{spec.study.n_trials} trials finished", file=stream, flush=True)
        code = run_worker(spec, study, opts, stream, dataset)
        print(summary(study), file=stream, flush=True)
    return code


def join(storage_url: str, study_name: str, opts: WorkerOptions = DEFAULT_OPTIONS, stream: TextIO = sys.stderr
         ) -> int:
    """``hpsearch worker``: join an existing study; its stored spec is the source of truth."""
    study = load_study(open_storage(storage_url, opts.heartbeat), study_name)
    spec = opts.apply(stored_spec(study))
    # optuna.load_study gives the defaults (TPE, median pruner): use the stored spec's sampler and pruner; the seed
    # is offset by a hash of this worker's host, process and SLURM task too, so that workers joining at the same
    # moment do not replay the same draws (a plain pid + trial count collided: pid 1001 with 0 trials, 1000 with 1)
    study.sampler = build_sampler(spec, len(study.get_trials(deepcopy=False)) + worker_salt())
    study.pruner = build_pruner(spec)
    with storage_outage(storage_url):
        return run_worker(spec, study, opts, stream)
