"""Fault injection for tests and drills, installed from outside the training loop: nothing happens unless
``$HPSEARCH_FAULTS`` is set.

``HPSEARCH_FAULTS="oom_above_batch=128,diverge=0.1,error=0.1,seed=0"`` (any subset of the keys):

- ``oom_above_batch=N``: a training batch of more than N images raises ``torch.OutOfMemoryError`` as it enters
  the model, as a device with too little memory would (the out-of-memory path, testable on a CPU);
- ``diverge=P``: with probability P a trial's model output (so its loss) becomes NaN at a random training step
  of its first epoch;
- ``error=P``: with probability P the model raises ``RuntimeError`` at a random training step of its first
  epoch;
- ``oom_above_pack=N``: a trial pack of more than N members raises ``torch.OutOfMemoryError`` in its fused
  step (the worker then halves the pack and goes on from the members' checkpoints); with
  ``oom_pack_epoch=E`` only from epoch E on (1-based: E = 2 lets the pack finish its first epoch and save
  checkpoints first);
- ``seed=S``: the draws depend only on S and the trial's seed, so a drill is reproducible.

The objective calls :func:`install` on each trial's model: with the variable unset it returns at once and the
model is untouched; otherwise it adds forward hooks that count training-mode forward calls (evaluation runs in
eval mode and is never faulted). ``hpsearch.training.loop`` knows nothing of this module. Every injected failure's
message starts with ``injected by HPSEARCH_FAULTS``, so a trial's ``reason`` says it was injected.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

ENV = "HPSEARCH_FAULTS"
KEYS = ("oom_above_batch", "oom_above_pack", "oom_pack_epoch", "diverge", "error", "seed")
PREFIX = f"injected by {ENV}"


@dataclass(frozen=True)
class FaultPlan:
    oom_above_batch: int | None = None
    diverge_at: int | None = None  # training step (1-based) whose output becomes NaN
    error_at: int | None = None  # training step (1-based) whose forward call raises

    @property
    def empty(self) -> bool:
        return self.oom_above_batch is None and self.diverge_at is None and self.error_at is None


def active() -> str | None:
    """The fault specification when ``$HPSEARCH_FAULTS`` is set (workers print a warning), else None."""
    return os.environ.get(ENV) or None


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
    """The faults of one trial, drawn from ``$HPSEARCH_FAULTS`` and the trial's seed."""
    text = active()
    if not text:
        return FaultPlan()
    opts = parse(text)
    rng = random.Random(f"{opts.get('seed', 0)}:{trial_seed}")
    roll, step = rng.random(), rng.randint(1, max(1, steps_per_epoch))
    p_div, p_err = opts.get("diverge", 0.0), opts.get("error", 0.0)
    oom = int(opts["oom_above_batch"]) if "oom_above_batch" in opts else None
    return FaultPlan(oom_above_batch=oom, diverge_at=step if roll < p_div else None,
                     error_at=step if p_div <= roll < p_div + p_err else None)


class _Injector:
    """Forward hooks on the top-level model: ``before`` runs ahead of each forward call, ``after`` on its output."""

    def __init__(self, faults: FaultPlan):
        self.faults = faults
        self.step = 0  # training-mode forward calls so far = training steps

    def before(self, model: nn.Module, args: tuple[Any, ...]) -> None:
        if not model.training:
            return
        self.step += 1
        batch = args[0].shape[0] if args and isinstance(args[0], torch.Tensor) else 0
        f = self.faults
        if f.oom_above_batch is not None and batch > f.oom_above_batch:
            raise torch.OutOfMemoryError(f"{PREFIX}: a batch of {batch} images is more than "
                                         f"oom_above_batch={f.oom_above_batch}")
        if self.step == f.error_at:
            raise RuntimeError(f"{PREFIX}: error at training step {self.step}")

    def after(self, model: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        if model.training and self.step == self.faults.diverge_at:
            return output * float("nan")
        return None


def install(model: nn.Module, trial_seed: int, steps_per_epoch: int) -> FaultPlan:
    """Adds this trial's faults to ``model`` (nothing when ``$HPSEARCH_FAULTS`` is unset); returns the plan."""
    faults = plan(trial_seed, steps_per_epoch)
    if not faults.empty:
        injector = _Injector(faults)
        model.register_forward_pre_hook(injector.before)
        model.register_forward_hook(injector.after)
    return faults


def install_pack(model: Any, cfgs: list, steps_per_epoch: int) -> None:
    """The faults of a trial pack (a :class:`hpsearch.training.pack.StackedModel` and its members' configs): each member
    draws its own plan from its own seed, as a solo trial would. ``diverge`` turns only that member's rows NaN
    (its pack-mates must go on untouched); ``error`` and ``oom_above_batch`` concern the whole fused step."""
    if not active():
        return
    plans = [plan(c.seed, steps_per_epoch) for c in cfgs]
    opts = parse(active() or "")
    max_pack = int(opts["oom_above_pack"]) if "oom_above_pack" in opts else None
    oom_from = (int(opts.get("oom_pack_epoch", 1)) - 1) * steps_per_epoch + 1  # the first step it may strike
    step = [0]

    def hook(stacked: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        step[0] += 1
        batch = x.shape[1]
        if max_pack is not None and stacked.size > max_pack and step[0] >= oom_from:
            raise torch.OutOfMemoryError(f"{PREFIX}: a pack of {stacked.size} members is more than "
                                         f"oom_above_pack={max_pack}")
        for f in plans:
            if f.oom_above_batch is not None and batch > f.oom_above_batch:
                raise torch.OutOfMemoryError(f"{PREFIX}: a batch of {batch} images is more than "
                                             f"oom_above_batch={f.oom_above_batch}")
        rows = [row for row, member in enumerate(stacked.members) if step[0] == plans[member].error_at]
        if rows:
            raise RuntimeError(f"{PREFIX}: error at training step {step[0]}")
        nan_rows = [row for row, member in enumerate(stacked.members) if step[0] == plans[member].diverge_at]
        if not nan_rows:
            return out
        out = out.clone()  # (not torch.where: its backward would multiply the other rows' zero gradient by NaN)
        out[nan_rows] = out[nan_rows] * float("nan")
        return out

    model.output_hooks.append(hook)
