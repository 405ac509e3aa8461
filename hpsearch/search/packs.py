"""Trial packs on the Optuna side: ask K trials that can train as one, train them with
:func:`hpsearch.training.pack.fit_pack`, and tell each its own outcome.

The first trial samples everything; members 2..K get its structural parameters (``arch`` and the
architecture's own, ``batch_size``, ``optimizer``, ``fraction``, ``image_size``: see
``hpsearch.spec.structural_names``) through Optuna's ``PartialFixedSampler`` for their one ``ask()`` (nothing
is enqueued, so no other worker can take them), and the sampler samples their other parameters. Every member is
a complete trial: its own intermediate values, pruning decision, heartbeat, checkpoints (``fit``'s format),
artifacts, note and user attributes, plus ``pack_id``, ``pack_size`` and ``pack_member``.

Optuna beats only inside ``optimize()``; a pack is asked and told, so :func:`heartbeats` records every
member's heartbeat itself, and a killed pack worker's members are failed and re-queued by
``fail_stale_trials`` like any other trial (each resumes, solo, from its own checkpoint).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from typing import TextIO

import optuna
import torch
from optuna.trial import TrialState

from hpsearch.data.loader import batches_per_epoch
from hpsearch.errors import first_line
from hpsearch.models import fusable
from hpsearch.params import fmt_params
from hpsearch.search.objective import (
    Interrupted,
    Objective,
    Surplus,
    TrialRun,
    check_admitted,
    release_memory,
)
from hpsearch.search.space import suggest
from hpsearch.search.study import fail_stale
from hpsearch.spec import Spec, n_evals, structural_names
from hpsearch.storage import attrs
from hpsearch.storage import optuna_internals as internals
from hpsearch.training import faults
from hpsearch.training.checkpoint import Cursor
from hpsearch.training.loop import FitResult, fit
from hpsearch.training.pack import PackOutOfMemory, StackedModel, fit_pack

log = logging.getLogger("hpsearch")
AUTO_MAX = 16  # the largest pack "auto" picks on a GPU
AUTO_BYTES_PER_MEMBER = 2 * 2**30  # free device memory "auto" sets aside per member (a small CNN needs far less)


def pack_size(spec: Spec, device: torch.device) -> tuple[int, str]:
    """(K, how it was chosen). ``auto``: 1 on the CPU (fused packs ran at 0.82-1.82x the speed of K solo runs on
    the project's 2-core CPU, median 1.02x: benchmarks/RESULTS.md §8, not worth the risk by default); on CUDA,
    one member per 2 GiB of free device memory, at most 16."""
    if spec.train.pack != "auto":
        return int(spec.train.pack), "train.pack"
    if device.type != "cuda":
        return 1, f"auto: 1 on {device.type}"
    free, _total = torch.cuda.mem_get_info(device)
    k = max(1, min(AUTO_MAX, free // AUTO_BYTES_PER_MEMBER))
    return k, f"auto: {free / 2**30:.0f} GiB free on {device} at 2 GiB per member, at most {AUTO_MAX}"


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # "Heartbeat of storage is supposed to be used with Study.optimize": we beat
        warnings.simplefilter("ignore", UserWarning)
        return study.ask()


def ask_pack(study: optuna.Study, spec: Spec, k: int) -> list[optuna.Trial]:
    """K new trials that share the first one's structural parameters (the others are sampled as usual)."""
    first = _ask(study)
    values = suggest(first, spec.space)  # Optuna returns the same values when the objective suggests again
    fixed = {name: values[name] for name in structural_names(spec) if name in values}
    base = study.sampler
    study.sampler = optuna.samplers.PartialFixedSampler(fixed, base)
    try:
        others = []
        for _ in range(k - 1):
            trial = _ask(study)
            suggest(trial, spec.space)  # (independent sampling happens at suggest time: while the sampler is fixed)
            others.append(trial)
    finally:
        study.sampler = base
    return [first, *others]


@contextlib.contextmanager
def heartbeats(study: optuna.Study, trials: list[optuna.Trial]) -> Iterator[None]:
    """Records every trial's heartbeat now and every heartbeat interval until the block ends (RDB storages)."""
    storage = internals.study_storage(study)
    if not internals.heartbeat_enabled(storage):
        yield
        return
    ids = [internals.trial_id(t) for t in trials]
    interval = storage.get_heartbeat_interval()
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in ids:
                storage.record_heartbeat(trial_id)  # a lost beat is logged, not raised (storage_retry)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="hpsearch-pack-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _key(spec: Spec, run: TrialRun) -> tuple:
    """What members must share to train as one; trials that differ (an enqueued one, say) form their own pack."""
    names = sorted(structural_names(spec))
    return tuple(run.values.get(n) for n in names)


def run_pack(study: optuna.Study, objective: Objective, trials: list[optuna.Trial], progress, stream: TextIO,
             pack_note: str) -> None:
    """Trains ``trials`` as one pack (or as several, if their structural values differ) and tells each."""
    spec = objective.spec
    pack_id = f"{os.getpid()}-{trials[0].number}"
    runs: list[TrialRun] = []
    for member, trial in enumerate(trials):
        trial.set_user_attr(attrs.PACK_ID, pack_id)
        trial.set_user_attr(attrs.PACK_SIZE, len(trials))
        trial.set_user_attr(attrs.PACK_MEMBER, member)
        trial.set_user_attr(attrs.PACK_SIZE_CHOSEN_BY, pack_note)
        run = objective.start(trial, hooks=[])
        run.hooks.insert(1, progress.member(trial.number, n_evals(run.cfg.max_epochs, run.cfg.eval_every)))
        if objective.stop is not None:
            run.hooks.insert(2, objective.stop)
        runs.append(run)
        print(f"trial {trial.number}: {fmt_params(run.values)} "
              f"(pack {pack_id}, member {member + 1}/{len(trials)})", file=stream, flush=True)
    groups: dict[tuple, list[TrialRun]] = {}
    for run in runs:
        groups.setdefault(_key(spec, run), []).append(run)
    for group in groups.values():
        arch = group[0].values["arch"]
        if len(group) == 1 or not fusable(arch):
            # a lone member trains solo (fit is faster than a fused pack of one); torchvision's and timm's models are
            # not all made of layers vmap can batch (in-place views, custom autograd): their members train one
            # after another instead, each still a full trial of this pack
            if len(group) > 1:
                log.warning("trial pack %s: %s is not fused; its %d members train one after another", pack_id,
                            arch, len(group))
            for run in group:
                run.trial.set_user_attr(attrs.PACK_FORWARD, "solo")
                _train_solo(study, objective, run, progress)
        else:
            _train_group(study, objective, group, progress)


def _train_solo(study: optuna.Study, objective: Objective, run: TrialRun, progress) -> None:
    """One member trained alone by ``fit``, with its own heartbeat, as ``Objective.__call__`` would train it."""
    objective.build(run)
    try:
        with heartbeats(study, [run.trial]):
            result = fit(run.model, run.data, run.cfg, run.hooks)
    except (Exception, Interrupted) as e:
        _finish(study, objective, run, e, progress)
        if isinstance(e, Interrupted):
            raise
        return
    _finish(study, objective, run, result, progress)


def _train_group(study: optuna.Study, objective: Objective, runs: list[TrialRun], progress,
                 resume: list[dict] | None = None) -> None:
    for run in runs:
        objective.build(run, solo=False)
    data, cfgs = runs[0].data, [r.cfg for r in runs]
    steps = batches_per_epoch(data.n_train, cfgs[0].batch_size)
    try:
        with heartbeats(study, [r.trial for r in runs]):
            outcomes = fit_pack([r.model for r in runs], data, cfgs, [r.hooks for r in runs], resume=resume,
                                stacked=lambda model: _stacked(model, runs, cfgs, steps))
    except PackOutOfMemory as oom:
        # drop the tracebacks first: their frames hold the big pack's tensors, which must be freed before halving
        for e in (oom.error, *(x for x in oom.finished.values() if isinstance(x, BaseException))):
            e.__traceback__ = None
        _halve(study, objective, runs, progress, oom.finished, oom.alive, oom.error)
        return
    except (Exception, Interrupted) as e:  # an interrupt or a fault of the whole pack ends every member
        for run in runs:
            _finish(study, objective, run, e, progress)
        if isinstance(e, Interrupted):
            raise
        return
    for run, outcome in zip(runs, outcomes, strict=True):
        _finish(study, objective, run, outcome, progress)


def _stacked(model: StackedModel, runs: list[TrialRun], cfgs: list, steps: int) -> None:
    """Records how the pack runs (``pack_forward``: fused or vmap) and installs any injected faults."""
    if model.fallback is not None:
        log.warning("trial pack %s: its layers are not fused (%s); it runs under vmap",
                    runs[0].trial.user_attrs.get(attrs.PACK_ID), model.fallback)
    for run in runs:
        run.trial.set_user_attr(attrs.PACK_FORWARD, model.forward_kind)
    faults.install_pack(model, cfgs, steps)


def _halve(study: optuna.Study, objective: Objective, runs: list[TrialRun], progress, finished: dict,
           alive_rows: list[int], error: BaseException) -> None:
    """After an out-of-memory error: tells the members that had left, then trains the others as two packs of
    half the size, from their newest checkpoints (a single member fails with the error, as a solo trial would)."""
    for i, outcome in finished.items():
        _finish(study, objective, runs[i], outcome, progress)
    alive = [runs[i] for i in alive_rows]
    for run in runs:
        run.model = None
    release_memory(objective.device)
    if len(alive) == 1:
        _finish(study, objective, alive[0], error, progress)
        return
    half = len(alive) // 2
    log.warning("a pack of %d ran out of memory (%s); going on as packs of %d and %d from the members' "
                "checkpoints", len(alive), first_line(error), half, len(alive) - half)
    for part in (alive[:half], alive[half:]):
        resume, why_not = _last_checkpoints(objective, part)
        for run in part:
            run.trial.set_user_attr(attrs.PACK_SIZE, len(part))
            run.trial.set_user_attr(attrs.PACK_HALVED_FROM, len(alive))
            run.trial.set_user_attr(attrs.PACK_RESUMED_EPOCH, Cursor.of(resume[0]).epoch if resume else 0)
            if why_not:  # they had trained: record that this work is lost (no silent fallback)
                run.trial.set_user_attr(attrs.FALLBACK, f"halved pack started over: {why_not}")
        _train_group(study, objective, part, progress, resume)


def _last_checkpoints(objective: Objective, runs: list[TrialRun]) -> tuple[list[dict] | None, str | None]:
    """The members' newest checkpoints when every member has one of the same epoch; else None (start over) and,
    when some member had a checkpoint to lose, why it is not used."""
    if objective.checkpoints is None:
        return None, None
    ids = [r.trial.user_attrs.get(attrs.CHECKPOINT) for r in runs]
    if not any(ids):
        return None, None  # out of memory in the first epoch: nothing was saved, nothing is lost
    if not all(ids):
        return None, "not every member had a checkpoint"
    try:
        states = [objective.checkpoints.load(i) for i in ids]
    except Exception as e:  # a lost checkpoint: these members train again from the start
        log.warning("cannot resume the halved pack from its checkpoints (%s); starting it over", first_line(e))
        return None, f"cannot load a member's checkpoint: {first_line(e)}"[:300]
    if len({Cursor.of(s).epoch for s in states}) != 1:
        return None, "the members' checkpoints are of different epochs"
    return states, None


def _finish(study: optuna.Study, objective: Objective, run: TrialRun, outcome, progress) -> None:
    """Records and tells one member's outcome: its FitResult, or the exception that ended it."""
    if isinstance(outcome, FitResult):
        _tell(study, run.trial, TrialState.COMPLETE, objective.completed(run, outcome), progress)
    else:
        ended = objective.ended(run, outcome)
        _tell(study, run.trial, TrialState.PRUNED if isinstance(ended, optuna.TrialPruned) else TrialState.FAIL, None,
              progress)
    run.model = None


def _tell(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None, progress) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = study.tell(trial, value, state=state)
    if progress is not None:
        progress(study, frozen)


def run_next_pack(study: optuna.Study, objective: Objective, k: int, target: int, progress, stream: TextIO,
                  pack_note: str) -> None:
    """One turn of a pack worker: fail the trials of dead workers (as ``optimize`` does before each trial), ask
    a pack of ``k``, drop the members that other workers' trials made surplus, and train the rest."""
    fail_stale(study)
    members = []
    for trial in ask_pack(study, objective.spec, k):
        try:
            check_admitted(trial, target)
        except Surplus:
            _tell(study, trial, TrialState.FAIL, None, progress)
        else:
            members.append(trial)
    if members:
        run_pack(study, objective, members, progress, stream, pack_note)
