"""What a running study prints: a live bar per trial on a terminal, one line per eval point otherwise,
one line per finished trial, and a summary table at the end."""

from __future__ import annotations

# Torch-free (a test checks it): the training loop's objects reach this module as duck-typed arguments (a
# TrainConfig's max_epochs / eval_every, an EvalPoint's step / epoch / top1), so `hpsearch status` and the report
# import it without importing torch.
import contextlib
import sys
from collections import Counter
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from hpsearch.params import fmt_params
from hpsearch.search.lineage import promoted_numbers
from hpsearch.spec import n_evals
from hpsearch.storage.attrs import PAUSED_AT

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


class Progress:
    """A training hook and an Optuna callback at once."""

    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None):
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.bar: tqdm | None = None
        self.trial = -1
        self.n_evals = 0
        self.max_epochs = 1

    def trial_started(self, number: int, values: dict[str, Any], cfg: Any, n_train: int = 0) -> None:
        """``cfg``: the trial's TrainConfig (its max_epochs and eval_every are read)."""
        self.trial = number
        self.max_epochs = cfg.max_epochs
        self.n_evals = n_evals(cfg.max_epochs, cfg.eval_every)
        print(f"trial {number}: {fmt_params(values)}", file=self.stream, flush=True)
        if self.live:  # its total is set by the first progress callback, which knows the batches per epoch
            self.bar = tqdm(file=self.stream, leave=False, unit="batch", desc=f"trial {number}", dynamic_ncols=True)

    def on_progress(self, epoch: int, batch: int, n_batches: int, loss: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.total = n_batches * self.max_epochs
            self.bar.n = epoch * n_batches + batch
            self.bar.set_postfix_str(f"epoch {epoch + 1} step {batch}/{n_batches} loss {loss:.3f} "
                                     f"{images_per_s:,.0f} img/s", refresh=True)

    def on_eval(self, p: Any) -> None:
        if self.bar is not None:
            self.bar.set_description_str(f"trial {self.trial} top1 {p.top1:.2f}%")
            return
        print(eval_line(self.trial, self.n_evals, p), file=self.stream, flush=True)

    def member(self, number: int, n_evals: int) -> MemberLines:
        """The eval-point printer of one member of a trial pack (packs print lines, no live bar)."""
        return MemberLines(self.stream, number, n_evals)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: one line per finished trial."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        a = trial.user_attrs
        if a.get("surplus"):
            print(f"trial {trial.number} not run: {a['reason']}", file=self.stream, flush=True)
            return
        if trial.state == TrialState.COMPLETE:
            what = f"COMPLETE val top1 {trial.value:.2f}% top5 {a.get('val_top5', 0):.2f}%"
        else:
            what = f"{trial.state.name} ({a.get('reason', 'no reason recorded')})"
        best = ""
        with contextlib.suppress(ValueError):
            best = f"; best so far {study.best_value:.2f}% (trial {study.best_trial.number})"
        print(f"trial {trial.number} {what} in {a.get('wall_s', 0):.1f} s{best}", file=self.stream, flush=True)


def eval_line(number: int, n_evals: int, p: Any) -> str:
    return (f"trial {number} eval {p.step}/{n_evals} epoch {p.epoch:.2f}: val top1 {p.top1:.2f}% "
            f"top5 {p.top5:.2f}% loss {p.train_loss:.4f} {p.images_per_s:,.0f} img/s")


class MemberLines:
    """A training hook printing one pack member's eval points."""

    def __init__(self, stream: TextIO, number: int, n_evals: int):
        self.stream, self.number, self.n_evals = stream, number, n_evals

    def on_eval(self, p: Any) -> None:
        print(eval_line(self.number, self.n_evals, p), file=self.stream, flush=True)


def state_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """Trials by state; surplus starts (workers that raced for the last slot) are counted apart."""
    c = Counter("SURPLUS" if t.user_attrs.get("surplus") else t.state.name for t in trials)
    out = {s: c.get(s, 0) for s in STATES}
    if c.get("SURPLUS"):
        out["SURPLUS"] = c["SURPLUS"]
    return out


def summary(study: optuna.Study) -> str:
    """The end-of-run table: trials by state, then the best trial's Top-1 and parameters."""
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(trials)
    lines = [f"study {study.study_name}: {len(trials)} trials",
             "  " + "  ".join(f"{s} {n}" for s, n in counts.items())]
    if promoted := promoted_numbers(trials):  # the asha pruner (hpsearch.search.asha): a configuration spans trials
        waiting = sum(t.state == TrialState.PRUNED and PAUSED_AT in t.user_attrs and t.number not in promoted
                      for t in trials)
        lines.append(f"  {len(promoted)} paused trials promoted (they go on in a newer trial); {waiting} paused "
                     "at a rung, not promoted")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        a = best.user_attrs
        lines.append(f"best trial {best.number}: val top1 {best.value:.2f}%  top5 {a.get('val_top5', 0):.2f}%  "
                     f"({a.get('epochs_completed', '?')} epochs, {a.get('wall_s', 0):.1f} s)")
        lines.append("  " + fmt_params(a.get("config", best.params)))
    else:
        lines.append("no completed trial yet")
    return "\n".join(lines)
