"""Successive halving by promotion (asynchronous successive halving, ASHA: Li et al., MLSys 2020) over the eval
points, resuming from checkpoints: ``[pruner] name = "asha"``.

Optuna's pruners can only stop a trial, and a stopped trial cannot go on (optuna/optuna#3351, #6132), so its
successive-halving pruner must let the first trial of every rung train to the end, whatever it costs. Here
every configuration **pauses** at each rung instead: at eval point ``r_k = min_resource · η^k`` (``k < n_rungs``,
before the last eval point; step k is k · ``eval_every`` epochs, so a rung may fall mid-epoch) its checkpoint is
saved and its trial ends PRUNED, with user attribute ``paused_at_step``. Before a worker starts a new
configuration it looks for a **promotion**, highest rung first: a paused trial whose val Top-1 at its rung is
among the top ``⌊n/η⌋`` of the ``n`` configurations that reached that rung. A promoted trial goes on in a new
trial with the same parameters (user attribute ``promoted_from``) that resumes from the paused trial's
checkpoint, with its learning curve, and trains to the next rung or to the end. So a study's first complete
trial is the best of the first η configurations' first rung, not whatever the sampler drew first.

Counting: a configuration counts once toward ``n_trials``, through its newest trial (a promoted trial is
superseded, as a re-queued failure is). Promotions are made even once the target is reached: they add no
configuration. Two workers that promote the same trial at the same moment enqueue two copies; the one with
the higher number is dropped as surplus when it starts (:func:`duplicate_of`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.spec import Spec, n_evals
from hpsearch.storage.checkpoints import ATTR, PROMOTED_FROM, parent_number

PAUSED_AT = "paused_at_step"


@dataclass(frozen=True)
class Rungs:
    steps: tuple[int, ...]  # rung eval points, increasing, all before the last one
    eta: int  # only the top 1/eta of a rung is promoted

    def next_after(self, step: int) -> int | None:
        """The rung a trial that has passed eval point ``step`` pauses at next (None: it trains to the end)."""
        return next((r for r in self.steps if r > step), None)


def rungs(spec: Spec) -> Rungs | None:
    """The spec's rungs when its pruner is ``asha`` (else None)."""
    if spec.pruner.name != "asha":
        return None
    opts = spec.pruner.options
    low, eta, n = opts.get("min_resource", 1), opts.get("reduction_factor", 3), opts.get("n_rungs", 64)
    last = n_evals(spec.train.max_epochs, spec.train.eval_every)
    return Rungs(tuple(r for r in (low * eta**k for k in range(n)) if r < last), eta)


class Paused(Exception):
    """Raised by :class:`PauseHook` at a rung: the trial ends PRUNED, its checkpoint kept for a promotion."""

    def __init__(self, step: int, epoch: float):
        super().__init__(f"paused at eval point {step} (epoch {epoch:.2f}), a rung of successive halving: promoted "
                         "later if it ranks in the top of its rung")
        self.step, self.epoch = step, epoch


class PauseHook:
    """At eval point ``at_step`` (None: never), saves the state to resume from with ``save`` and stops training."""

    def __init__(self, at_step: int | None, save: Callable[[dict], object]):
        self.at_step, self.save = at_step, save

    def on_eval_state(self, point, checkpoint: Callable[[], dict]) -> None:
        if point.step == self.at_step:
            self.save(checkpoint())
            raise Paused(point.step, point.epoch)


def _parents(trials: list[FrozenTrial]) -> dict[int, int]:
    """Trial number → the number of the trial whose training it continues (retried or promoted)."""
    numbers = {t.number for t in trials}
    return {t.number: p for t in trials if (p := parent_number(t)) is not None and p in numbers}


def _ancestors(parent: dict[int, int], n: int) -> list[int]:
    """The trials ``n`` continues, newest first; the last one is its configuration's first trial."""
    out = []
    while n in parent:
        n = parent[n]
        out.append(n)
    return out


def _root(parent: dict[int, int], n: int) -> int:
    return (_ancestors(parent, n) or [n])[-1]


def superseded(trials: list[FrozenTrial]) -> set[int]:
    """Paused trials that were promoted: their configuration goes on (and counts) in a newer trial."""
    return {int(t.user_attrs[PROMOTED_FROM]) for t in trials if PROMOTED_FROM in t.user_attrs}


def _lineage_values(trials: list[FrozenTrial]) -> dict[int, dict[int, float]]:
    """Root trial number → the configuration's learning curve (step → val Top-1) over all its trials."""
    parent = _parents(trials)
    out: dict[int, dict[int, float]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        out.setdefault(_root(parent, t.number), {}).update(t.intermediate_values)
    return out


def promotable(trials: list[FrozenTrial], r: Rungs) -> FrozenTrial | None:
    """The paused trial to promote now (ASHA's rule, highest rung first), or None: start a new configuration."""
    parent = _parents(trials)
    gone = superseded(trials)
    curves = _lineage_values(trials)

    def root(n: int) -> int:
        return _root(parent, n)

    for step in reversed(r.steps):
        reached = sorted(((c[step], n) for n, c in curves.items() if step in c), reverse=True)
        top = {n for _, n in reached[: len(reached) // r.eta]}
        candidates = [t for t in trials if t.state == TrialState.PRUNED and t.user_attrs.get(PAUSED_AT) == step
                      and t.number not in gone and t.user_attrs.get(ATTR) and root(t.number) in top]
        if candidates:
            return max(candidates, key=lambda t: curves[root(t.number)][step])
    return None


def promote(study: optuna.Study, r: Rungs) -> FrozenTrial | None:
    """Enqueues the promotion of :func:`promotable`'s trial (same parameters, ``promoted_from``); returns it."""
    trial = promotable(study.get_trials(deepcopy=False), r)
    if trial is not None:
        study.enqueue_trial(trial.params, user_attrs={PROMOTED_FROM: trial.number})
    return trial


def duplicate_of(trials: list[FrozenTrial], trial_number: int) -> int | None:
    """For a promotion that another worker made too: the number of the earlier copy, else None."""
    def first_copy(t: FrozenTrial) -> bool:  # a retry inherits promoted_from from the trial it retries
        return PROMOTED_FROM in t.user_attrs and not t.system_attrs.get("retry_history")

    this = next(t for t in trials if t.number == trial_number)
    if not first_copy(this):
        return None
    source = this.user_attrs[PROMOTED_FROM]
    return next((t.number for t in trials if t.number < trial_number and first_copy(t)
                 and t.user_attrs[PROMOTED_FROM] == source and not t.user_attrs.get("surplus")), None)


def checkpoints_needed(trials: list[FrozenTrial]) -> set[int]:
    """Paused trials whose checkpoint must stay: not promoted yet, or promoted to a trial (or its retries) that
    has not saved a checkpoint of its own."""
    parent = _parents(trials)
    paused = {t.number for t in trials if t.state == TrialState.PRUNED and PAUSED_AT in t.user_attrs
              and t.user_attrs.get(ATTR)}
    # a trial with a checkpoint of its own (a paused one promoted and paused again too) covers its ancestors
    covered = {a for t in trials if t.user_attrs.get(ATTR) for a in _ancestors(parent, t.number)}
    return paused - covered
