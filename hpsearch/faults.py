"""Fault injection for tests and drills: nothing happens unless ``$HPSEARCH_FAULTS`` is set.

``HPSEARCH_FAULTS="oom_above_batch=128,diverge=0.1,error=0.1,seed=0"`` (any subset of the keys):

- ``oom_above_batch=N``: a training batch of more than N images raises ``torch.OutOfMemoryError`` where the
  batch is allocated, as a device with too little memory would (the out-of-memory path, testable on a CPU);
- ``diverge=P``: with probability P a trial's loss becomes NaN at a random step of its first epoch;
- ``error=P``: with probability P the augmentation raises ``RuntimeError`` at a random step of its first epoch;
- ``seed=S``: the draws depend only on S and the trial's seed, so a drill is reproducible.

``fit`` asks :func:`plan` once; with the variable unset the plan does nothing.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

ENV = "HPSEARCH_FAULTS"
KEYS = ("oom_above_batch", "diverge", "error", "seed")


@dataclass(frozen=True)
class FaultPlan:
    oom_above_batch: int | None = None
    diverge_at: int | None = None  # optimizer step (1-based) whose loss becomes NaN
    error_at: int | None = None  # optimizer step (1-based) whose augmentation raises

    def allocate(self, batch_size: int) -> None:
        if self.oom_above_batch is not None and batch_size > self.oom_above_batch:
            raise torch.OutOfMemoryError(f"injected by {ENV}: a batch of {batch_size} images is more than "
                                         f"oom_above_batch={self.oom_above_batch}")

    def augment(self, augmenter: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, step: int) -> torch.Tensor:
        if step == self.error_at:
            raise RuntimeError(f"injected by {ENV}: augmentation failed at step {step}")
        return augmenter(x)

    def loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        return loss * float("nan") if step == self.diverge_at else loss


NO_FAULTS = FaultPlan()


def parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in KEYS:
            raise ValueError(f"${ENV} item {item!r} is not valid; use key=value with keys {', '.join(KEYS)}")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"${ENV} item {item!r} has no number after '='") from None
    return out


def plan(trial_seed: int, steps_per_epoch: int) -> FaultPlan:
    """The faults of one ``fit`` call, drawn from ``$HPSEARCH_FAULTS`` and the trial's seed."""
    text = os.environ.get(ENV)
    if not text:
        return NO_FAULTS
    opts = parse(text)
    rng = random.Random(f"{opts.get('seed', 0)}:{trial_seed}")
    roll, step = rng.random(), rng.randint(1, max(1, steps_per_epoch))
    p_div, p_err = opts.get("diverge", 0.0), opts.get("error", 0.0)
    oom = int(opts["oom_above_batch"]) if "oom_above_batch" in opts else None
    return FaultPlan(oom_above_batch=oom, diverge_at=step if roll < p_div else None,
                     error_at=step if p_div <= roll < p_div + p_err else None)
