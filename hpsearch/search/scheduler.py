"""What runs next: every decision of a worker, as pure functions of the stored trials (torch-free).

Each worker asks :func:`next_action` before each trial and executes what it returns; since every worker reads
the same storage, they agree without talking to each other:

- :class:`Stop`: an interrupt, the timeout, the study's target, a stop rule (a reached goal or a plateau), or
  the last trials are other workers' (and, without a heartbeat, a dead one could not be detected anyway);
- :class:`Promote`: asha (``hpsearch.search.asha``): a paused configuration ranks in the top of its rung;
- :class:`Wait`: the target is met by counting running trials, but those are other workers' and a heartbeat
  storage would re-queue any of them that died: wait, failing stale trials, and take the retry if one comes;
- :class:`Take`: a waiting trial (enqueued, a retry, a promotion) runs next, solo;
- :class:`Pack`: K new trials train as one (``hpsearch.search.packs``); :class:`New`: one new trial.

A trial that started anyway is checked once more by :func:`admit` (workers race between asking and starting:
a surplus start, or a second copy of a promotion, is dropped). While it trains, :func:`on_eval` says at each
eval point whether it goes on, is pruned, or pauses at an asha rung.

Counting: a configuration counts once toward ``n_trials``, through its newest trial (a re-queued failure and a
promoted paused trial are superseded, ``hpsearch.search.lineage``); a surplus start does not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from optuna.trial import FrozenTrial, TrialState

from hpsearch.search import lineage
from hpsearch.spec import Spec, n_evals
from hpsearch.storage.attrs import CHECKPOINT, PAUSED_AT, SURPLUS


@dataclass(frozen=True)
class Rungs:
    """The asha pruner's rungs: eval points where every configuration pauses, and its reduction factor."""

    steps: tuple[int, ...]  # rung eval points, increasing, all before the last one
    eta: int  # only the top 1/eta of a rung is promoted
    # a rung's best so far goes on even before eta configurations reached it: at every rung (True), or at every
    # rung but the first ("upper": those that reach a higher rung were already chosen), or at none (False)
    eager: bool | str = False

    def top(self, n: int, rung: int = 0) -> int:
        """How many of the ``n`` configurations at the ``rung``-th rung (0: the first) may be promoted: ASHA's
        ``⌊n/η⌋``; where eager, at least one (the rung's best so far, as Syne Tune's and Ray Tune's stopping ASHA
        let their first trial go on)."""
        eager = self.eager is True or (self.eager == "upper" and rung > 0)
        return max(1, n // self.eta) if eager else n // self.eta

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
    return Rungs(tuple(r for r in (low * eta**k for k in range(n)) if r < last), eta, opts.get("eager", False))


@dataclass(frozen=True)
class Rules:
    """What the study file and the worker's options say about when to stop and how to run."""

    n_trials: int
    patience: int | None = None
    min_delta: float = 0.0
    goal: float | None = None  # [study] target: stop once a completed trial reaches this val Top-1
    rungs: Rungs | None = None
    heartbeat: bool = False  # the storage re-queues the trials of dead workers
    pack: int = 1  # the largest trial pack this worker trains

    @classmethod
    def of(cls, spec: Spec, heartbeat: bool = False, pack: int = 1) -> Rules:
        s = spec.study
        return cls(s.n_trials, s.patience, s.min_delta, s.target, rungs(spec), heartbeat, pack)


# --- actions ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stop:
    reason: Literal["signal", "timeout", "done", "goal", "plateau", "others"]
    message: str | None = None  # what the worker prints, if anything
    code: int = 0  # the worker's exit code


@dataclass(frozen=True)
class Wait:
    pass


@dataclass(frozen=True)
class Promote:
    trial: FrozenTrial  # the paused trial to continue


@dataclass(frozen=True)
class Take:
    pass


@dataclass(frozen=True)
class Pack:
    k: int


@dataclass(frozen=True)
class New:
    pass


Action = Stop | Wait | Promote | Take | Pack | New


def next_action(trials: list[FrozenTrial], rules: Rules, timed_out: bool = False, signum: int | None = None
                ) -> Action:
    """What this worker does next, given the study's trials (see the module docstring)."""
    if signum is not None:
        return Stop("signal", code=128 + signum)
    if timed_out:
        return Stop("timeout", "timeout reached: no new trials")
    done = finished_count(trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    reason = stop_reason(trials, rules.patience, rules.min_delta, rules.goal)
    # a promotion goes first, even once the target is met (it continues a configuration, adds none)
    if rules.rungs is not None and not waiting and not reason and (p := promotable(trials, rules.rungs)):
        return Promote(p)
    if done >= rules.n_trials:
        return Stop("done")
    if reason:
        return Stop("goal" if reason.startswith("target") else "plateau", f"study stopped: {reason}")
    if done + running >= rules.n_trials and not waiting:
        # the last trials are others'; without a heartbeat a dead one cannot be detected
        return Wait() if rules.heartbeat and running else Stop("others")
    if waiting:
        return Take()  # enqueued trials, retries that resume and promotions run solo
    k = min(rules.pack, rules.n_trials - done - running)
    return Pack(k) if k > 1 else New()


# --- counting --------------------------------------------------------------------------------------------------
def _counts(t: FrozenTrial, gone: set[int]) -> bool:
    """Whether ``t`` counts toward the target: not superseded (``gone``), not a surplus start."""
    return not t.user_attrs.get(SURPLUS) and not lineage.is_continued_failure(t, gone)


def finished_count(trials: list[FrozenTrial]) -> int:
    """Finished trials toward the target: COMPLETE + PRUNED + FAIL, minus re-queued failures, promoted paused
    trials and surplus: each configuration counts once."""
    gone = lineage.superseded(trials)
    return sum(1 for t in trials if t.state.is_finished() and _counts(t, gone))


def is_surplus(trials: list[FrozenTrial], number: int, target: int) -> bool:
    """Trial numbers are handed out atomically by the storage, so ranking by number settles races: a trial
    is surplus when the counted trials numbered below it (finished, running or queued) reach the target."""
    gone = lineage.superseded(trials)
    return sum(1 for t in trials if t.number < number and _counts(t, gone)) >= target


def duplicate_of(trials: list[FrozenTrial], number: int) -> int | None:
    """For a promotion that another worker made too: the number of the earlier copy, else None."""
    this = next(t for t in trials if t.number == number)
    if not lineage.is_first_promotion(this):
        return None
    source = lineage.promoted_from(this)
    return next((t.number for t in trials if t.number < number and lineage.is_first_promotion(t)
                 and lineage.promoted_from(t) == source and not t.user_attrs.get(SURPLUS)), None)


def admit(trials: list[FrozenTrial], number: int, target: int) -> str | None:
    """Why trial ``number``, just started, must not run (recorded as its ``reason``; it is marked surplus and
    does not count), or None to run it."""
    if (first := duplicate_of(trials, number)) is not None:
        return f"surplus: trial {first} already continues the same paused trial"
    if is_surplus(trials, number, target):
        return f"surplus: the study already had {target} trials when it started"
    return None


def stop_reason(trials: list[FrozenTrial], patience: int | None, min_delta: float = 0.0,
                target: float | None = None) -> str | None:
    """Why the study should start no more trials, or None. ``target``: a completed trial reached that val Top-1.
    ``patience``: the last ``patience`` finished trials (in the order they finished; pruned and failed ones
    count) did not raise the best value by at least ``min_delta`` (Optuna's users ask for this: optuna/optuna#4292)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if target is not None and complete:
        best = max(complete, key=lambda t: t.value)
        if best.value >= target:
            return f"target reached: trial {best.number} has val Top-1 {best.value:.2f}% ≥ {target:g}%"
    if patience is None:
        return None
    gone = lineage.superseded(trials)
    done = sorted((t for t in trials if t.state.is_finished() and _counts(t, gone) and t.datetime_complete),
                  key=lambda t: (t.datetime_complete, t.number))
    best, best_trial, since = None, None, 0
    for t in done:
        value = t.value if t.state == TrialState.COMPLETE else None
        if value is not None and (best is None or (value > best and value - best >= min_delta)):
            best, best_trial, since = value, t.number, 0
        else:
            since += 1
    if best is not None and since >= patience:
        return (f"plateau: the last {since} finished trials did not beat the best ({best:.2f}%, trial {best_trial}) "
                f"by at least {min_delta:g} points (patience {patience})")
    return None


# --- asha: promotion and the paused checkpoints ------------------------------------------------------------------
def _ranked(curves: dict[int, dict[int, float]], step: int) -> list[int]:
    """The configurations (root numbers) that reached eval point ``step``, best first (ties: higher number)."""
    return [n for _, n in sorted(((c[step], n) for n, c in curves.items() if step in c), reverse=True)]


def _paused(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.PRUNED and PAUSED_AT in t.user_attrs
            and t.user_attrs.get(CHECKPOINT)]


def promotable(trials: list[FrozenTrial], r: Rungs) -> FrozenTrial | None:
    """The paused trial to promote now (ASHA's rule: a paused trial whose configuration ranks among the top
    ``⌊n/η⌋`` of the ``n`` that reached its rung, at least the best one where eager; highest rung first), or None:
    start a new configuration."""
    parent, gone, curves = lineage.parents(trials), lineage.promoted_numbers(trials), lineage.curves(trials)
    for k, step in reversed(list(enumerate(r.steps))):
        ranked = _ranked(curves, step)
        top = set(ranked[: r.top(len(ranked), k)])
        candidates = [t for t in _paused(trials) if t.user_attrs[PAUSED_AT] == step and t.number not in gone
                      and lineage.root(parent, t.number) in top]
        if candidates:
            return max(candidates, key=lambda t: curves[lineage.root(parent, t.number)][step])
    return None


def paused_to_keep(trials: list[FrozenTrial], r: Rungs, n_trials: int) -> set[int]:
    """Paused trials whose checkpoint must stay: promoted to a trial (or its retries) that has not saved a
    checkpoint of its own yet, or not promoted and still able to be: at most ``n_trials`` configurations ever
    reach a rung, so one with ``⌊n_trials/η⌋`` others (where eager: at least one) ranked above it there never enters the
    top. Hence at most that many paused checkpoints per rung, whatever the study's length."""
    parent, promoted, curves = lineage.parents(trials), lineage.promoted_numbers(trials), lineage.curves(trials)
    top = {step: set(_ranked(curves, step)[: r.top(n_trials, k)]) for k, step in enumerate(r.steps)}
    keep = {t.number for t in _paused(trials)
            if t.number in promoted or lineage.root(parent, t.number) in top.get(t.user_attrs[PAUSED_AT], ())}
    return keep - lineage.covered(trials)


def checkpoints_to_keep(trials: list[FrozenTrial], rules: Rules) -> set[int]:
    """Finished trials whose checkpoints retention keeps besides the best completed ones: failed trials whose
    retry has not finished, and the paused trials of :func:`paused_to_keep`."""
    keep = lineage.pending_retries(trials)
    if rules.rungs is not None:
        keep |= paused_to_keep(trials, rules.rungs, rules.n_trials)
    return keep


def checkpoint_bound(rules: Rules, workers: int, keep_best: int) -> int:
    """The most checkpoints a study keeps on disk once retention has run (failed trials awaiting their retry
    aside): one per running trial, the ``keep_best`` completed ones, and :func:`paused_to_keep`'s per rung."""
    r = rules.rungs
    paused = sum(r.top(rules.n_trials, k) for k in range(len(r.steps))) if r is not None else 0
    return workers + keep_best + paused


# --- at each eval point --------------------------------------------------------------------------------------
def on_eval(step: int, pause_at: int | None, prune: bool) -> Literal["continue", "prune", "pause"]:
    """What a training trial does after eval point ``step``: pause at its asha rung (``pause_at``), stop when the
    pruner says so (``prune``), else go on."""
    if step == pause_at:
        return "pause"
    return "prune" if prune else "continue"
