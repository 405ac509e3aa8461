"""A worker: one process that runs trials of a study until it holds ``n_trials`` finished trials in total.

Any number of workers, on any hosts, can share one study through its storage (Optuna's design). Each loop
turn counts finished trials (complete, pruned, and failed ones that were not re-queued), and starts one
trial through ``study.optimize(n_trials=1)`` so Optuna's heartbeat and stale-trial handling apply. When the
target is met but other workers' trials are still running on a heartbeat storage, the worker waits: if one
of them dies, its retry is picked up here. Ctrl-C / SIGTERM checkpoint-and-requeue the running trial.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import optuna
import torch
from optuna.trial import TrialState

from hpsearch.data import load_dataset
from hpsearch.data.base import Dataset
from hpsearch.errors import StorageError, first_line
from hpsearch.inspect.console import Progress, summary
from hpsearch.runtime.options import WorkerOptions
from hpsearch.search import asha as promotion
from hpsearch.search.objective import Interrupted, Objective, StopFlag, release_memory
from hpsearch.search.packs import pack_size, run_next_pack
from hpsearch.search.study import (
    Surplus,
    build_pruner,
    build_sampler,
    finished_count,
    is_surplus,
    load_study,
    open_study,
    stop_reason,
    stored_spec,
)
from hpsearch.spec import Spec
from hpsearch.storage import optuna_internals as internals
from hpsearch.storage.checkpoints import Checkpoints, open_artifact_store, retried_numbers
from hpsearch.storage.retry import is_transient
from hpsearch.storage.urls import (
    RetryStaleTrial,
    mask_secrets,
    mask_url,
    open_storage,
)
from hpsearch.training import faults
from hpsearch.training.device import configure, resolve_device, resolve_precision

log = logging.getLogger("hpsearch")
DEFAULT_OPTIONS = WorkerOptions()
WAIT_POLL_S = 2.0


def worker_salt() -> int:
    """A number that differs between worker processes, on one host or many (the sampler's seed offset)."""
    who = f"{socket.gethostname()}:{os.getpid()}:{os.environ.get('SLURM_JOB_ID', '')}:{time.time_ns()}"
    return zlib.crc32(who.encode())


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


def run_worker(spec: Spec, study: optuna.Study, opts: WorkerOptions, stream: TextIO = sys.stderr,
               dataset: Dataset | None = None) -> int:
    """Runs trials until the study's target is met or the timeout passes; returns the exit code. ``spec`` has
    ``opts``' overrides applied. The dataset is loaded when the first trial needs it, unless the caller passes it."""
    if threads := os.environ.get("HPSEARCH_THREADS"):
        torch.set_num_threads(max(1, int(threads)))
    target = spec.study.n_trials
    deadline = time.monotonic() + spec.study.timeout if spec.study.timeout else None
    device = resolve_device(spec.train.device)
    precision = resolve_precision(spec.train.precision, device)
    configure(device)
    checkpoints = Checkpoints(open_artifact_store(opts.artifacts), opts.keep_best)
    heartbeat = internals.heartbeat_enabled(internals.study_storage(study))
    if fault_spec := faults.active():
        print(f"warning: fault injection is on (${faults.ENV}={fault_spec}): trials will fail on purpose",
              file=stream, flush=True)
    flag = StopFlag()
    rungs = promotion.rungs(spec)
    keep_paused = promotion.checkpoints_needed if rungs is not None else None
    objective = None
    live = None if not os.environ.get("HPSEARCH_NO_LIVE") else False
    progress = Progress(stream, live=live)
    with signals_to(flag):
        while True:
            trials = study.get_trials(deepcopy=False)
            done = finished_count(trials)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if flag.signum is not None:
                return 128 + flag.signum
            if deadline is not None and time.monotonic() >= deadline:
                print("timeout reached: no new trials", file=stream)
                break
            reason = stop_reason(trials, spec.study.patience, spec.study.min_delta, spec.study.target)
            # asha: a promotion goes first, even once the target is met (it continues a configuration, adds none)
            if rungs is not None and not waiting and not reason and promotion.promote(study, rungs) is not None:
                continue
            if done >= target:
                break
            if reason:
                print(f"study stopped: {reason}", file=stream, flush=True)
                break
            if done + running >= target and not waiting:
                if not heartbeat or running == 0:
                    break  # the last trials are others'; without a heartbeat a dead one cannot be detected
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    optuna.storages.fail_stale_trials(study)  # re-queues the trials of dead workers
                time.sleep(WAIT_POLL_S)
                continue
            if objective is None:
                if dataset is None:
                    dataset = load_dataset(spec.data, spec.study.seed, opts.data_dir)
                print(f"data: {dataset.source}; {len(dataset.train_y)} train / {len(dataset.val_y)} val images; "
                      f"device {device}, precision {precision}", file=stream, flush=True)
                objective = Objective(spec, dataset, device, precision, progress, checkpoints, flag)
                pack_k, pack_note = pack_size(spec, device)
                if pack_k > 1:
                    print(f"trial packs of up to {pack_k} ({pack_note})", file=stream, flush=True)
                continue  # loading took a while: count again before starting a trial
            k = min(pack_k, target - done - running)
            try:
                if k > 1 and not waiting:  # waiting trials (enqueued, or retries that resume) run solo
                    run_next_pack(study, objective, k, target, progress, stream, pack_note)
                else:
                    study.optimize(_guard(objective, target), n_trials=1, catch=(Exception,), callbacks=[progress])
            except Interrupted as e:
                requeue_interrupted(study)
                print(f"hpsearch: trial checkpointed and re-queued; run the same command again to resume "
                      f"({signal.Signals(e.signum).name})", file=stream, flush=True)
                return 128 + e.signum
            if objective.last_failed:
                release_memory(device)  # a failed trial's traceback (and its tensors) is gone only now
            checkpoints.apply_retention(study, keep_paused)
    return 0


def _guard(objective: Objective, target: int):
    def guarded(trial: optuna.Trial) -> float:
        trials = trial.study.get_trials(deepcopy=False)
        if (first := promotion.duplicate_of(trials, trial.number)) is not None:
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("reason", f"surplus: trial {first} already continues the same paused trial")
            raise Surplus(f"trial {trial.number} is not needed: another worker promoted the same trial")
        if is_surplus(trials, trial.number, target):
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("reason", f"surplus: the study already had {target} trials when it started")
            raise Surplus(f"trial {trial.number} is not needed: other workers filled the target")
        return objective(trial)

    return guarded


def requeue_interrupted(study: optuna.Study) -> None:
    """Re-queues this worker's trial that an interrupt just failed, as the heartbeat's retry would."""
    failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
              if "interrupted" in str(t.user_attrs.get("reason", ""))]
    retried = retried_numbers(study.get_trials(deepcopy=False))
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
