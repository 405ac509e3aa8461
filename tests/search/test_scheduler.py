"""The scheduler, case by case, on in-memory studies (no training): each action of `next_action` and each reason
to stop, `admit`, `on_eval`, and the checkpoints retention keeps."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpsearch.search.scheduler import (
    New,
    Pack,
    Promote,
    Rules,
    Rungs,
    Stop,
    Take,
    Wait,
    admit,
    checkpoint_bound,
    checkpoints_to_keep,
    next_action,
    on_eval,
)
from hpsearch.storage.attrs import CHECKPOINT, PAUSED_AT, PROMOTED_FROM, RETRY_HISTORY, SURPLUS

RUNGS = Rungs(steps=(2,), eta=3)


def trials(*specs: tuple) -> list[FrozenTrial]:
    """Trials of an in-memory study, in order; each spec is (state, value or curve, user attrs, system attrs)."""
    study = optuna.create_study(direction="maximize")
    for state, curve, *rest in specs:
        user = rest[0] if rest else {}
        system = rest[1] if len(rest) > 1 else {}
        curve = curve if isinstance(curve, list) else ([] if curve is None else [curve])
        value = curve[-1] if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(state=state, value=value, params={"x": float(len(study.trials))},
                                     distributions={"x": FloatDistribution(0, 1000)}, user_attrs=user,
                                     system_attrs=system, intermediate_values=dict(enumerate(curve, start=1))))
    return study.get_trials()


C, P, F, R, W = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING


def paused(value: float) -> tuple:
    return (P, [40, value], {PAUSED_AT: 2, CHECKPOINT: f"ckpt-{value}"})


def test_a_fresh_study_starts_a_new_trial_or_a_pack_of_what_is_left():
    assert next_action([], Rules(n_trials=4)) == New()
    assert next_action([], Rules(n_trials=4, pack=8)) == Pack(4), "a pack never exceeds the trials left"
    assert next_action(trials((C, 50), (C, 60), (R, None)), Rules(n_trials=4, pack=8)) == New(), \
        "one trial left (two finished, one running): it runs solo"


def test_waiting_trials_are_taken_first_and_solo():
    t = trials((C, 50), (W, None))
    assert next_action(t, Rules(n_trials=4, pack=8)) == Take()
    assert next_action(t, Rules(n_trials=1)) == Stop("done"), "a met target wins over a waiting trial"


@pytest.mark.parametrize("heartbeat, expected", [(True, Wait()), (False, Stop("others"))])
def test_the_last_trials_running_elsewhere_are_waited_for_only_on_a_heartbeat_storage(heartbeat, expected):
    t = trials((C, 50), (R, None))
    assert next_action(t, Rules(n_trials=2, heartbeat=heartbeat)) == expected
    assert next_action(trials((C, 50), (C, 60)), Rules(n_trials=2, heartbeat=heartbeat)) == Stop("done")


def test_stop_reasons_in_their_order():
    t = trials((C, 50), (C, 95))
    assert next_action(t, Rules(n_trials=9), signum=15) == Stop("signal", code=143), "a signal goes first"
    assert next_action(t, Rules(n_trials=9), timed_out=True) == \
        Stop("timeout", "timeout reached: no new trials")
    assert next_action(t, Rules(n_trials=2, goal=90)) == Stop("done")
    goal = next_action(t, Rules(n_trials=9, goal=90))
    assert goal.reason == "goal" and goal.code == 0 and "trial 1 has val Top-1 95.00% ≥ 90%" in goal.message
    flat = trials((C, 60), (C, 59), (P, None), (F, None))
    plateau = next_action(flat, Rules(n_trials=9, patience=3))
    assert plateau.reason == "plateau" and "the last 3 finished trials did not beat the best" in plateau.message
    assert next_action(flat, Rules(n_trials=9, patience=4)) == New()


def test_a_due_promotion_goes_before_new_trials_and_before_a_met_target():
    t = trials(paused(50), paused(70), paused(60))
    assert next_action(t, Rules(n_trials=9, rungs=RUNGS)) == Promote(t[1])
    assert next_action(t, Rules(n_trials=3, rungs=RUNGS)) == Promote(t[1]), "it adds no configuration"
    assert next_action(t, Rules(n_trials=9)) == New(), "no rungs: no promotion"
    assert next_action(t[:2], Rules(n_trials=9, rungs=RUNGS)) == New(), "two at the rung: ⌊2/3⌋ = 0 promoted"
    queued = trials(paused(50), paused(70), paused(60), (W, None, {PROMOTED_FROM: 1}))
    assert next_action(queued, Rules(n_trials=9, rungs=RUNGS)) == Take(), "the promotion waits: it runs next"
    assert next_action(t, Rules(n_trials=9, rungs=RUNGS, goal=60)) == Promote(t[1]), \
        "a goal on paused trials' curves is not reached: only completed ones count"
    done = trials(paused(50), paused(70), paused(60), (C, 99))
    assert next_action(done, Rules(n_trials=9, rungs=RUNGS, goal=90)).reason == "goal", \
        "a reached goal stops promotions too"


def test_a_promoted_configuration_counts_once():
    t = trials(paused(50), paused(70), paused(60), (C, [40, 70, 80], {PROMOTED_FROM: 1}))
    assert next_action(t, Rules(n_trials=3, rungs=RUNGS)) == Stop("done")
    assert next_action(t, Rules(n_trials=4, rungs=RUNGS)) == New()


def test_a_retried_failure_and_a_surplus_start_do_not_count():
    t = trials((C, 50), (F, None), (C, 55, {}, {RETRY_HISTORY: [1]}), (F, None, {SURPLUS: True}))
    assert next_action(t, Rules(n_trials=3)) == New()
    assert next_action(t, Rules(n_trials=2)) == Stop("done")


def test_admit_refuses_surplus_starts_and_second_copies_of_a_promotion():
    t = trials((C, 50), (C, 60), (R, None))
    assert admit(t, 2, target=3) is None
    assert admit(t, 2, target=2) == "surplus: the study already had 2 trials when it started"
    copies = trials(paused(50), paused(70), paused(60), (R, None, {PROMOTED_FROM: 1}), (R, None, {PROMOTED_FROM: 1}))
    assert admit(copies, 3, target=9) is None
    assert admit(copies, 4, target=9) == "surplus: trial 3 already continues the same paused trial"
    retry = trials(paused(50), paused(70), paused(60), (F, None, {PROMOTED_FROM: 1}),
                   (R, None, {PROMOTED_FROM: 1}, {RETRY_HISTORY: [3]}))
    assert admit(retry, 4, target=9) is None, "a retry of a promotion inherits promoted_from: not a copy"


def test_on_eval_pauses_at_the_rung_prunes_when_told_and_else_goes_on():
    assert on_eval(2, pause_at=2, prune=False) == "pause"
    assert on_eval(2, pause_at=2, prune=True) == "pause", "the rung keeps the checkpoint for a promotion"
    assert on_eval(1, pause_at=2, prune=True) == "prune"
    assert on_eval(3, pause_at=None, prune=False) == "continue"


def test_retention_keeps_pending_retries_and_promotable_paused_trials_within_the_bound():
    t = trials((F, None, {CHECKPOINT: "a"}), (R, None, {}, {RETRY_HISTORY: [0]}), paused(50), paused(70),
               paused(60), paused(65))
    assert checkpoints_to_keep(t, Rules(n_trials=6)) == {0}, "no rungs: only the failure being retried"
    assert checkpoints_to_keep(t, Rules(n_trials=6, rungs=RUNGS)) == {0, 3, 5}, "⌊6/3⌋ = 2 per rung"
    assert checkpoint_bound(Rules(n_trials=6, rungs=RUNGS), workers=2, keep_best=3) == 2 + 3 + 2
    assert checkpoint_bound(Rules(n_trials=6), workers=2, keep_best=3) == 5
