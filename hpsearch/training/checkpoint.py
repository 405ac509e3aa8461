"""The one checkpoint and resume format of ``fit`` and ``fit_pack``: what a trial's state is saved as, and how a run
goes on from it.

A checkpoint is a dict of tensors and plain Python values only (it loads with ``torch.load(weights_only=True)``),
with these keys, in this order, since before the sub-package move (``tests/fixtures/old_study`` holds some):
``model``, ``optimizer``, ``scheduler``, ``scaler`` (the state dicts of ``fit``'s objects; a pack member's are
rebuilt in that form, so a member resumes solo or in another pack), ``rng_perm`` (the data order's generator),
``rng_aug`` (the augmentation's, on the CPU), ``rng_torch`` (torch's global RNG: dropout, initialisation),
``epoch`` and ``batch`` (where to go on: the epoch to run and how many of its batches were trained already),
``step`` (optimizer steps so far), ``images`` (training images seen), ``train_s`` (training seconds, evaluation
excluded), ``points`` (the eval points so far, as dicts of :class:`EvalPoint`'s fields) and ``config`` (the
``TrainConfig`` as a dict).

A checkpoint taken in the middle of an epoch keeps the data order's generator as the epoch started with it: the
resumed run draws the same permutation and skips the batches already trained, so it equals an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

KEYS = ("model", "optimizer", "scheduler", "scaler", "rng_perm", "rng_aug", "rng_torch", "epoch", "batch", "step",
        "images", "train_s", "points", "config")


@dataclass(frozen=True)
class EvalPoint:
    step: int  # 1-based eval point number
    epoch: float  # epochs trained so far
    top1: float  # validation accuracy, percent
    top5: float
    train_loss: float  # mean training loss since the previous eval point
    images_per_s: float  # training throughput so far (eval time excluded)
    elapsed_s: float


@dataclass(frozen=True)
class Cursor:
    """Where training stands: ``batch`` batches of epoch ``epoch`` (0-based) trained, ``step`` optimizer steps,
    ``images`` training images and ``train_s`` training seconds so far. Read from a checkpoint, it says where to
    go on: the epoch to run and the batches of it to skip."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    images: int = 0
    train_s: float = 0.0

    @classmethod
    def of(cls, resume: dict | None) -> Cursor:
        """The cursor to start from: a checkpoint's, or the start of training (``resume`` None)."""
        if resume is None:
            return cls()
        return cls(resume["epoch"], resume.get("batch", 0), resume["step"], resume["images"], resume["train_s"])


def state(model: dict, optimizer: dict, scheduler: dict, scaler: dict,
          generators: tuple[torch.Generator, torch.Generator], epoch_perm: torch.Tensor, at: Cursor,
          points: Sequence[EvalPoint], config: Any, n_batches: int) -> dict:
    """The checkpoint of a run standing at ``at``, of ``n_batches`` batches per epoch: the state dicts given, the
    (data order, augmentation) ``generators`` and torch's RNG as they are now, and ``config`` (a ``TrainConfig``).

    In the middle of an epoch (0 < ``at.batch`` < ``n_batches``) it holds ``epoch_perm``, the data order's state
    when the epoch began, with ``epoch`` and ``batch`` as they are; at an epoch's end (``at.batch`` 0 or
    ``n_batches``) the generator's state now, with the next epoch and batch 0."""
    g_perm, g_aug = generators
    mid = 0 < at.batch < n_batches
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
            "rng_perm": epoch_perm if mid else g_perm.get_state(), "rng_aug": g_aug.get_state().cpu(),
            "rng_torch": torch.get_rng_state(), "epoch": at.epoch if mid else at.epoch + 1,
            "batch": at.batch if mid else 0, "step": at.step, "images": at.images, "train_s": at.train_s,
            "points": [asdict(p) for p in points], "config": asdict(config)}


def eval_points(resume: dict) -> list[EvalPoint]:
    """A checkpoint's eval points."""
    return [EvalPoint(**p) for p in resume["points"]]


def epochs_trained(resume: dict) -> float:
    """The epochs a checkpoint has trained: a whole number, or (one made mid-epoch, at an eval point) the last
    eval point's epoch."""
    at, points = Cursor.of(resume), resume["points"]
    return round(points[-1]["epoch"], 4) if at.batch and points else at.epoch


def restore(resume: dict, generators: tuple[torch.Generator, torch.Generator]) -> tuple[Cursor, list[EvalPoint]]:
    """Sets the (data order, augmentation) ``generators`` and torch's RNG to a checkpoint's; returns where to go
    on and the eval points so far. The model, optimizer, schedule and scaler are the caller's to load."""
    g_perm, g_aug = generators
    g_perm.set_state(resume["rng_perm"])
    g_aug.set_state(resume["rng_aug"].to(g_aug.device) if g_aug.device.type != "cpu" else resume["rng_aug"])
    torch.set_rng_state(resume["rng_torch"])
    return Cursor.of(resume), eval_points(resume)
