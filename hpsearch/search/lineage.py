"""Which trial continues which: the one place that reads how trials are linked (torch-free).

A trial continues another in two ways. A **retry**: a failed trial re-queued (by the heartbeat's
``RetryFailedTrialCallback`` or after an interrupt) runs again as a new trial whose Optuna system attribute
``retry_history`` lists the trials it retries, oldest first. A **promotion** (the asha pruner,
``hpsearch.search.asha``): a paused trial goes on in a new trial with user attribute ``promoted_from``. Either
way the new trial resumes from the newest checkpoint along its chain of ancestors, and the configuration counts
once, through its newest trial. Everything that needs these links (counting, promotion, retention, resume,
status) reads them through the functions here.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, Trial, TrialState

from hpsearch.storage.attrs import CHECKPOINT, PROMOTED_FROM, RETRY_HISTORY


def retries_of(trial: FrozenTrial) -> list[int]:
    """The trials ``trial`` retries, oldest first (empty for a trial that is not a retry)."""
    return list(trial.system_attrs.get(RETRY_HISTORY, []))


def promoted_from(trial: FrozenTrial | Trial) -> int | None:
    """The paused trial ``trial`` (stored, or running) was promoted from. A retry of a promoted trial inherits the attribute, so it
    names the same paused trial (:func:`is_first_promotion` tells the two apart)."""
    source = trial.user_attrs.get(PROMOTED_FROM)
    return None if source is None else int(source)


def is_first_promotion(trial: FrozenTrial) -> bool:
    """A promotion as it was enqueued, not a retry of one."""
    return promoted_from(trial) is not None and not retries_of(trial)


def parent_number(trial: FrozenTrial) -> int | None:
    """The trial whose training this one continues: the failed trial it retries (the newest in its retry
    history), or the paused trial it was promoted from; None for a fresh start."""
    history = retries_of(trial)
    return history[-1] if history else promoted_from(trial)


def parents(trials: list[FrozenTrial]) -> dict[int, int]:
    """Trial number → the number of the trial it continues (retried or promoted), for trials in ``trials``."""
    numbers = {t.number for t in trials}
    return {t.number: p for t in trials if (p := parent_number(t)) is not None and p in numbers}


def ancestors(parent: dict[int, int], number: int) -> list[int]:
    """The trials ``number`` continues, newest first; the last is its configuration's first trial."""
    out, seen = [], {number}
    while number in parent and parent[number] not in seen:
        number = parent[number]
        seen.add(number)
        out.append(number)
    return out


def root(parent: dict[int, int], number: int) -> int:
    """The first trial of ``number``'s configuration."""
    return (ancestors(parent, number) or [number])[-1]


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Failed trials that were re-queued (their configuration goes on in a retry)."""
    return {n for t in trials for n in retries_of(t)}


def pending_retries(trials: list[FrozenTrial]) -> set[int]:
    """Failed trials retried by a trial that has not finished (their checkpoints are still to be resumed)."""
    return {n for t in trials if not t.state.is_finished() for n in retries_of(t)}


def promoted_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Paused trials that were promoted (their configuration goes on in a newer trial)."""
    return {n for t in trials if (n := promoted_from(t)) is not None}


def superseded(trials: list[FrozenTrial]) -> set[int]:
    """Trials whose configuration goes on in a newer trial: re-queued failures and promoted paused trials."""
    return retried_numbers(trials) | promoted_numbers(trials)


def curves(trials: list[FrozenTrial]) -> dict[int, dict[int, float]]:
    """Root trial number → the configuration's learning curve (eval point → val Top-1) over all its trials."""
    parent = parents(trials)
    out: dict[int, dict[int, float]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        out.setdefault(root(parent, t.number), {}).update(t.intermediate_values)
    return out


def predecessor_checkpoint(trials: list[FrozenTrial], number: int) -> tuple[int, str] | None:
    """For a retried or promoted trial: (number, artifact id) of the newest checkpoint among the trials whose
    training it continues (the trials it retries, the paused trial it was promoted from, and theirs)."""
    by_number = {t.number: t for t in trials}
    for n in ancestors(parents(trials), number):
        if ckpt := by_number[n].user_attrs.get(CHECKPOINT):
            return n, ckpt
    return None


def covered(trials: list[FrozenTrial]) -> set[int]:
    """Trials with a descendant that saved a checkpoint of its own: nothing resumes from theirs any more."""
    parent = parents(trials)
    return {a for t in trials if t.user_attrs.get(CHECKPOINT) for a in ancestors(parent, t.number)}


def is_continued_failure(t: FrozenTrial, gone: set[int]) -> bool:
    """A failed or paused trial whose configuration goes on in a newer trial (``gone``: :func:`superseded`)."""
    return t.state in (TrialState.FAIL, TrialState.PRUNED) and t.number in gone
