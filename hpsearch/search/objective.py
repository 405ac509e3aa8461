"""The Optuna glue: sample a configuration, build the model, train it, report and prune, record the trial.

Every way a trial can end leaves the same user attributes on it: ``val_top1``, ``val_top5``,
``epochs_completed``, ``train_images_per_s``, ``wall_s``, ``n_params``, ``weights`` (where the model's initial
weights came from: ``random``, ``file:/path``, ``timm cache:/path``, ...), ``device`` and, for pruned and
failed trials, a one-line ``reason``: ``diverged`` and ``time_limit`` (pruned), ``out_of_memory at
batch_size N`` (failed), or the failing exception's type and first line (failed; the traceback goes to the
log, see ``hpsearch --log-file``). The worker then goes on with the next trial.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from hpsearch.data.base import Dataset
from hpsearch.data.loader import DeviceData, batches_per_epoch
from hpsearch.errors import first_line
from hpsearch.search import lineage, trial_artifacts
from hpsearch.search.asha import Paused
from hpsearch.search.scheduler import Rungs, admit, on_eval, rungs
from hpsearch.search.space import suggest
from hpsearch.spec import Spec
from hpsearch.storage import attrs
from hpsearch.storage.checkpoints import Checkpoints
from hpsearch.training import faults
from hpsearch.training.checkpoint import epochs_trained, eval_points
from hpsearch.training.loop import Diverged, EvalPoint, FitResult, TimeLimit, TrainConfig, fit
from hpsearch.training.setup import FidelityViews, trial_inputs, trial_model

log = logging.getLogger("hpsearch")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM reached a training trial: Optuna marks it FAIL and re-raises; the worker re-queues it
    so it resumes from its newest checkpoint."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


class StopFlag:
    """Set from a signal handler; checked by the training loop at every progress point."""

    def __init__(self):
        self.signum: int | None = None

    def on_progress(self, *_args) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    on_eval = on_progress


class CheckpointHook:
    def __init__(self, checkpoints: Checkpoints, trial: optuna.Trial):
        self.checkpoints, self.trial = checkpoints, trial

    def on_epoch_end(self, epoch: int, checkpoint) -> None:
        self.checkpoints.save(self.trial, checkpoint())


class Surplus(Exception):
    """Workers raced: this trial started when it was no longer needed (``hpsearch.search.scheduler.admit``)."""


def check_admitted(trial: optuna.Trial, target: int) -> None:
    """The scheduler's last word on a trial that just started (``admit``): a trial that is not needed is marked
    surplus, so that it does not count, and raises :class:`Surplus` (it ends FAIL without training)."""
    reason = admit(trial.study.get_trials(deepcopy=False), trial.number, target)
    if reason is not None:
        trial.set_user_attr(attrs.SURPLUS, True)
        trial.set_user_attr(attrs.REASON, reason)
        raise Surplus(f"trial {trial.number} is not needed: {reason}")


class Reporter:
    """Hook that reports each eval point to the trial and acts on the scheduler's ``on_eval``: prune when the
    pruner says so, or pause at an asha rung (``pause_at``: the checkpoint is saved with ``save``, the trial
    ends PRUNED and may be promoted later), else go on."""

    def __init__(self, trial: optuna.Trial, pause_at: int | None = None,
                 save: Callable[[dict], object] | None = None):
        self.trial, self.pause_at, self.save = trial, pause_at, save
        self.last: EvalPoint | None = None

    def on_eval(self, point: EvalPoint) -> None:
        self.last = point
        self.trial.report(point.top1, point.step)

    def on_eval_state(self, point: EvalPoint, checkpoint: Callable[[], dict]) -> None:
        match on_eval(point.step, self.pause_at, self.pause_at is None and self.trial.should_prune()):
            case "pause":
                self.save(checkpoint())
                raise Paused(point.step, point.epoch)
            case "prune":
                raise optuna.TrialPruned(f"pruned at eval point {point.step} (epoch {point.epoch:.2f}) with val "
                                         f"Top-1 {point.top1:.2f}%")


def record_placement(trial: optuna.Trial, here: dict[str, str]) -> None:
    """Stores where the trial runs (``here``: ``host`` and the SLURM ids that are set, from
    ``hpsearch.runtime.placement``); a SLURM id inherited from a retried trial's predecessor (Optuna copies user
    attributes) is cleared when this process has none."""
    for key in (attrs.HOST, *attrs.SLURM):
        if key in here or key in trial.user_attrs:
            trial.set_user_attr(key, here.get(key))


def release_memory(device: torch.device) -> None:
    """Frees what a failed trial left: its traceback's reference cycles (frames holding activations and
    gradients), then the CUDA cache, so that the next trial starts with the device's memory free. The worker
    calls it once the exception is gone. (``gc.collect`` costs about 0.5 s here: not after every trial.)"""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class TrialRun:
    """One trial on its way through the objective."""

    trial: optuna.Trial
    values: dict[str, Any]  # the full configuration, fixed values included
    data: DeviceData
    ds: Dataset
    seed: int
    cfg: TrainConfig
    reporter: Reporter
    hooks: list[Any]
    t0: float  # perf_counter at the start
    model: torch.nn.Module | None = None
    resume: dict | None = None


class Objective:
    """Callable objective for ``study.optimize``; the data is moved to the device once, for all trials."""

    def __init__(self, spec: Spec, dataset: Dataset, device: torch.device, precision: str, progress: Any = None,
                 checkpoints: Checkpoints | None = None, stop: StopFlag | None = None,
                 placement: dict[str, str] | None = None):
        self.spec, self.dataset, self.device, self.precision = spec, dataset, device, precision
        self.placement = placement or {"host": socket.gethostname()}
        self.checkpoints, self.stop = checkpoints, stop
        self.views = FidelityViews(dataset, device, spec.study.seed)
        self.progress = progress
        self.rungs: Rungs | None = rungs(spec) if checkpoints is not None else None  # pausing needs checkpoints
        self.last_failed = False  # the most recent trial raised (its memory is released by the worker)

    def __call__(self, trial: optuna.Trial) -> float:
        run = self.start(trial)
        try:
            run.resume = self._resume_state(trial, run.reporter)
            if self.rungs is not None and run.resume is not None:
                run.reporter.pause_at = self.rungs.next_after(len(eval_points(run.resume)))
            self.build(run)
            result = fit(run.model, run.data, run.cfg, run.hooks, resume=run.resume)
        except (Exception, Interrupted) as e:
            ended = self.ended(run, e)
            if ended is e:
                raise
            raise ended from None
        else:
            return self.completed(run, result)
        finally:
            run.model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # -- the steps of a trial, shared with trial packs (hpsearch.search.packs) ----------------------------------------

    def start(self, trial: optuna.Trial, hooks: list[Any] | None = None) -> TrialRun:
        """Samples the configuration and records it; the trial's hooks are the reporter, then ``hooks`` (default:
        the progress printer and the stop flag), then the checkpoint hook."""
        t0 = time.perf_counter()
        self.last_failed = True  # until it returns or is pruned
        values = suggest(trial, self.spec.space)
        seed = self.spec.study.seed + trial.number
        data, ds, cfg = trial_inputs(self.spec, self.views, values, seed, self.precision)
        trial.set_user_attr("config", values)
        trial.set_user_attr("device", str(self.device))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        record_placement(trial, self.placement)  # host, and the SLURM job / array task (hpsearch status)
        reporter = Reporter(trial)
        if self.rungs is not None:
            checkpoints = self.checkpoints
            reporter.pause_at = self.rungs.next_after(0)
            reporter.save = lambda state: checkpoints.save(trial, state)
        extra = [h for h in (self.progress, self.stop) if h is not None] if hooks is None else hooks
        all_hooks: list[Any] = [reporter, *extra]
        if self.checkpoints is not None:
            all_hooks.append(CheckpointHook(self.checkpoints, trial))
        if self.progress and hooks is None:
            self.progress.trial_started(trial.number, values, cfg, data.n_train)
        return TrialRun(trial, values, data, ds, seed, cfg, reporter, all_hooks, t0)

    def build(self, run: TrialRun, solo: bool = True) -> None:
        """The trial's model on the device; a solo one gets $HPSEARCH_FAULTS' hooks when that is set (a pack's
        faults go on the fused model: hpsearch.training.faults.install_pack)."""
        # the data [0, 1]-scaled for a model that normalises its input itself
        run.model, run.data, weights = trial_model(run.values, run.ds, run.data, self.device, run.seed,
                                                   self.spec.train)
        run.trial.set_user_attr(attrs.WEIGHTS, weights)
        run.trial.set_user_attr("n_params", sum(p.numel() for p in run.model.parameters()))
        if solo:
            faults.install(run.model, run.seed, batches_per_epoch(run.data.n_train, run.cfg.batch_size))

    def ended(self, run: TrialRun, e: BaseException) -> BaseException:
        """Records why the trial stopped early and returns what to raise: ``optuna.TrialPruned`` for a pruned,
        paused (asha), diverged or timed-out trial (state PRUNED), else ``e`` itself (state FAIL; an interrupt re-queues)."""
        trial, reporter, t0 = run.trial, run.reporter, run.t0
        if isinstance(e, optuna.TrialPruned):
            self.last_failed = False
            self._record(trial, reporter, t0, reason=str(e))
            return e
        if isinstance(e, Paused):
            self.last_failed = False
            trial.set_user_attr(attrs.PAUSED_AT, e.step)
            self._record(trial, reporter, t0, reason=f"paused at rung {e.step} (epoch {e.epoch:.2f})")
            return optuna.TrialPruned(str(e))
        if isinstance(e, Interrupted):
            epoch = reporter.last.epoch if reporter.last else 0
            self._record(trial, reporter, t0, reason=f"interrupted ({e}) after epoch {epoch:.2f}; re-queued")
            return e
        if isinstance(e, Diverged | TimeLimit):
            self.last_failed = False
            reason = "diverged" if isinstance(e, Diverged) else "time_limit"
            self._record(trial, reporter, t0, reason=reason)
            return optuna.TrialPruned(f"{reason}: {e}")
        if isinstance(e, torch.OutOfMemoryError):
            self._record(trial, reporter, t0, reason=f"out_of_memory at batch_size {run.cfg.batch_size}")
            log.debug("trial %d ran out of memory: %s", trial.number, first_line(e))
            return e
        self._record(trial, reporter, t0, reason=f"{type(e).__name__}: {first_line(e)}"[:500])
        log.debug("trial %d failed", trial.number, exc_info=e)
        return e

    def completed(self, run: TrialRun, result: FitResult) -> float:
        """Records a completed trial (attributes, inspection artifacts) and returns its value, val Top-1."""
        self.last_failed = False
        recorded = self._record(run.trial, run.reporter, run.t0, images_per_s=result.images_per_s)
        if self.checkpoints is not None:
            trial_artifacts.record(run.trial, self.checkpoints.store, run.model, run.data, run.ds.classes,
                                   run.values, recorded | {"device": str(self.device)}, run.cfg.eval_batch_size,
                                   self.precision, run.seed, result.confusion)
        return result.top1

    def _resume_state(self, trial: optuna.Trial, reporter: Reporter) -> dict | None:
        """For a retried or promoted trial: its predecessor's newest checkpoint, with the learning curve carried
        over. A promotion without a checkpoint to continue, or a checkpoint that cannot be loaded, trains from
        scratch and says so on the trial (user attribute ``fallback``, with the reason: no silent fallback)."""
        for key in (attrs.RESUMED_FROM, attrs.RESUMED_AT, attrs.FALLBACK):  # a retry inherits its predecessor's
            if trial.user_attrs.get(key) is not None:
                trial.set_user_attr(key, None)
        if self.checkpoints is None:
            return None
        frozen = trial.study.get_trials(deepcopy=False)
        found = lineage.predecessor_checkpoint(frozen, trial.number)
        if found is None:
            if (source := lineage.promoted_from(trial)) is not None:
                self._fall_back(trial, f"promoted from trial {source}, which has no checkpoint left")
            return None
        number, artifact_id = found
        try:
            state = self.checkpoints.load(artifact_id)
        except Exception as e:
            self._fall_back(trial, f"cannot resume from trial {number}: {first_line(e)}"[:300])
            return None
        points = eval_points(state)
        for p in points:
            trial.report(p.top1, p.step)
        if points:
            reporter.last = points[-1]
        epoch = epochs_trained(state)  # whole, or (made mid-epoch, at a rung) the last eval point's
        trial.set_user_attr(attrs.RESUMED_FROM, number)
        trial.set_user_attr(attrs.RESUMED_AT, epoch)
        how = "promoted from" if lineage.promoted_from(trial) is not None else "resuming"
        print(f"trial {trial.number}: {how} trial {number} at epoch {epoch:g}", flush=True,
              file=getattr(self.progress, "stream", None))
        return state

    def _fall_back(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr(attrs.FALLBACK, reason)
        log.warning("trial %d: %s; training from scratch", trial.number, reason)

    def _record(self, trial: optuna.Trial, reporter: Reporter, t0: float, reason: str | None = None,
                images_per_s: float | None = None) -> dict[str, Any]:
        p = reporter.last
        recorded = {
            "val_top1": p.top1 if p else None,
            "val_top5": p.top5 if p else None,
            "epochs_completed": math.floor(p.epoch + 1e-9) if p else 0,
            "train_images_per_s": round(images_per_s or (p.images_per_s if p else 0.0), 1),
            "wall_s": round(time.perf_counter() - t0, 3),
        }
        if reason:
            recorded["reason"] = reason
        for k, v in recorded.items():
            trial.set_user_attr(k, v)
        return recorded
