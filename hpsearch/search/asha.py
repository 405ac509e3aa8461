"""Successive halving by promotion (asynchronous successive halving, ASHA: Li et al., MLSys 2020) over the eval
points, resuming from checkpoints: ``[pruner] name = "asha"``.

Optuna's pruners can only stop a trial, and a stopped trial cannot go on (optuna/optuna#3351, #6132), so its
successive-halving pruner must let the first trial of every rung train to the end, whatever it costs. Here
every configuration **pauses** at each rung instead: at eval point ``r_k = min_resource · η^k`` (``k < n_rungs``,
before the last eval point; step k is k · ``eval_every`` epochs, so a rung may fall mid-epoch) its checkpoint is
saved and its trial ends PRUNED, with user attribute ``paused_at_step``. Before a worker starts a new
configuration it looks for a **promotion**, highest rung first: a paused trial whose val Top-1 at its rung is
among the top ``⌊n/η⌋`` of the ``n`` configurations that reached that rung (``eager = true``: at least the
rung's best so far, so the first configuration never waits for η others; ``"upper"``: so at every rung but the
first). A promoted trial goes on in a new
trial with the same parameters (user attribute ``promoted_from``) that resumes from the paused trial's
checkpoint, with its learning curve, and trains to the next rung or to the end. So (not eager) a study's first
complete trial is the best of the first η configurations' first rung, not whatever the sampler drew first.

Counting: a configuration counts once toward ``n_trials``, through its newest trial (a promoted trial is
superseded, as a re-queued failure is). Promotions are made even once the target is reached: they add no
configuration. Two workers that promote the same trial at the same moment enqueue two copies; the one with
the higher number is dropped as surplus when it starts.

The decisions (which paused trial to promote, which paused checkpoints may go) are the scheduler's
(``hpsearch.search.scheduler``: ``promotable``, ``paused_to_keep``, ``on_eval``); this module holds what a
pause and a promotion do to a trial.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from hpsearch.search.scheduler import Rungs, rungs
from hpsearch.storage.attrs import PAUSED_AT, PROMOTED_FROM

__all__ = ["PAUSED_AT", "PROMOTED_FROM", "Paused", "Rungs", "enqueue_promotion", "rungs"]


class Paused(Exception):
    """Raised at a rung: the trial ends PRUNED (user attribute ``paused_at_step``), its checkpoint kept for a
    promotion."""

    def __init__(self, step: int, epoch: float):
        super().__init__(f"paused at eval point {step} (epoch {epoch:.2f}), a rung of successive halving: promoted "
                         "later if it ranks in the top of its rung")
        self.step, self.epoch = step, epoch


def enqueue_promotion(study: optuna.Study, trial: FrozenTrial) -> None:
    """Continues paused ``trial`` in a new trial with the same parameters and ``promoted_from``."""
    study.enqueue_trial(trial.params, user_attrs={PROMOTED_FROM: trial.number})
