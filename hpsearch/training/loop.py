"""The training loop: ``fit`` trains a model on device-resident data and evaluates it early and often.

This module never imports optuna. At every eval point ``fit`` computes validation Top-1/Top-5 and calls
each hook's ``on_eval``; a hook may raise to stop training (the Optuna glue raises ``TrialPruned``).
A non-finite loss raises :class:`Diverged`; training past ``max_trial_seconds`` raises :class:`TimeLimit`. Eval
points are spaced ``eval_every`` epochs apart and numbered 1, 2, ... so that step k means the same fraction
of training in every trial, whatever its batch size.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Protocol

import torch
from torch import nn

from hpsearch.data.loader import DeviceData, batches_per_epoch, epoch_batches
from hpsearch.models.heads import backbone_batchnorms, split_params
from hpsearch.params import PY_TYPES, train_params
from hpsearch.spec import TrainSpec, n_evals
from hpsearch.training import checkpoint as ckpt
from hpsearch.training.augment import Augmenter, aug_params
from hpsearch.training.checkpoint import Cursor, EvalPoint

PROGRESS_EVERY = 10  # batches between progress callbacks (each one syncs the device to read the loss)


# The study's training settings that ``fit`` reads, declared once in the spec's ``[train]`` table
# (hpsearch.spec.TrainSpec: max_epochs, eval_every, schedule, warmup, eval_batch_size, max_trial_seconds) and
# taken from it with their types and defaults; then the settings a caller resolves for one ``fit`` call.
LOOP_SETTINGS = ("max_epochs", "eval_every", "schedule", "warmup", "eval_batch_size", "max_trial_seconds")
_TRAIN_SPEC = {f.name: f for f in fields(TrainSpec)}
TRAIN_SETTINGS: list[tuple[str, Any, Any]] = [
    (name, _TRAIN_SPEC[name].type, _TRAIN_SPEC[name].default) for name in LOOP_SETTINGS
] + [
    ("precision", str, "fp32"),  # resolved: fp32 | bf16 | fp16 (the spec's "auto" is resolved by the caller)
    ("seed", int, 0),  # initialisation and dropout (the caller seeds the model's creation with it too)
    ("data_seed", int | None, None),  # data order and augmentation draws (None: seed); a pack's members share one
]

# Everything ``fit`` needs: one trial's hyperparameters (lr: peak learning rate; batch_size; weight_decay;
# optimizer: "sgd" (Nesterov, momentum 0.9) or "adamw"; label_smoothing; aug_strength; ...) plus the
# settings above. The hyperparameter fields come from the one parameter table, hpsearch.params.GLOBAL_PARAMS.
TrainConfig = make_dataclass(
    "TrainConfig",
    [(name, PY_TYPES[p.kind], field(default=p.default)) for name, p in train_params().items()]
    + [(name, typ, field(default=default)) for name, typ, default in TRAIN_SETTINGS],
    frozen=True,
)
TrainConfig.__module__ = __name__  # (make_dataclass takes module= only from Python 3.12)
TrainConfig.__doc__ = "One trial's hyperparameters (hpsearch.params.GLOBAL_PARAMS, role 'train') and settings."


@dataclass
class FitResult:
    top1: float
    top5: float
    epochs_completed: int
    images_per_s: float
    wall_s: float
    points: list[EvalPoint] = field(default_factory=list)
    confusion: torch.Tensor | None = None  # (C, C) int64 counts of the final evaluation, on the CPU


class Diverged(Exception):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: float, loss: float):
        super().__init__(f"loss is {loss} at epoch {epoch:.2f}")
        self.epoch, self.loss = epoch, loss


class TimeLimit(Exception):
    """Training ran longer than ``TrainConfig.max_trial_seconds``."""

    def __init__(self, epoch: float, seconds: float, limit: float):
        super().__init__(f"{seconds:.1f} s passed the limit of {limit:g} s at epoch {epoch:.2f}")
        self.epoch, self.seconds, self.limit = epoch, seconds, limit


class Hook(Protocol):
    """What ``fit`` calls; a hook may define any subset of these methods."""

    def on_eval(self, point: EvalPoint) -> None: ...

    def on_progress(self, epoch: int, batch: int, n_batches: int, loss: float, images_per_s: float) -> None: ...

    def on_epoch_end(self, epoch: int, checkpoint: Callable[[], dict]) -> None:
        """``epoch`` epochs are done; ``checkpoint()`` builds the state to resume from (see ``fit``)."""

    def on_eval_state(self, point: EvalPoint, checkpoint: Callable[[], dict]) -> None:
        """Called after ``on_eval``; ``checkpoint()`` builds the state to resume from at this eval point, which
        may fall in the middle of an epoch (a hook that pauses training there saves it, then raises)."""


# ----------------------------------------------------------------------------------------------------------


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Nesterov SGD or AdamW at ``cfg.lr``; with a ``backbone_lr_mult`` other than 1, the classifier head's
    parameters at ``cfg.lr`` and the backbone's at ``cfg.lr × backbone_lr_mult`` (two groups each; the schedule's
    LambdaLR scales every group's lr by the same factor)."""
    if cfg.backbone_lr_mult == 1.0:
        parts = [(list(model.parameters()), cfg.lr)]
    else:
        head, backbone = split_params(model)
        parts = [(head, cfg.lr), (backbone, cfg.lr * cfg.backbone_lr_mult)]
    groups = []
    for params, lr in parts:
        # No weight decay on BatchNorm and bias parameters (1-D tensors), as in most CNN recipes.
        groups += [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr": lr},
                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": lr}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


def freeze_backbone(model: nn.Module, backbone: Sequence[nn.Parameter], batchnorms: Sequence[str],
                    frozen: bool) -> None:
    """Head-only training (``frozen``) or all of it, for a model in training mode. Frozen, the ``backbone``'s
    parameters require no gradient, so the optimizer skips them (no update, no weight decay, no state: torch's
    optimizers pass over a parameter whose grad is None) and backward stops at the head; the ``batchnorms`` (the
    backbone's BatchNorm layers, by name) run in eval mode, so their running statistics stay as they were."""
    for p in backbone:
        p.requires_grad_(not frozen)
    for name in batchnorms:
        model.get_submodule(name).train(not frozen)


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """The multiplier of the peak learning rate at optimizer step ``step`` of ``total``."""
    w = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < w:
        return 0.1 + 0.9 * step / w  # linear warm-up from 10 % of the peak
    if schedule == "constant":
        return 1.0
    rest = max(1, total - w)
    t = min(1.0, (step - w) / rest)
    if schedule == "linear":
        return 1.0 - t
    return 0.5 * (1.0 + math.cos(math.pi * t))  # onecycle: cosine annealing to 0


@torch.inference_mode()
def evaluate_logits(logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                    batch_size: int, precision: str = "fp32",
                    confusion: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 and Top-5 hits on uint8 images ``x`` (N, C, H, W) and labels ``y`` (N,), ``batch_size`` at a time.

    ``logits_of`` maps a batch (B, C, H, W) to (B, classes) logits, or to (K, B, classes) for K members (a pack);
    the hits are int64 counts, () or (K,). A ``confusion`` tensor of int64 counts, (C, C) or (K, C, C) (rows:
    true class, columns: prediction), is added to in place when given. The one evaluation loop of ``evaluate``,
    ``fit_pack`` and the trial artifacts' confusion matrix."""
    hits1 = hits5 = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with autocast(x.device, precision):
            logits = logits_of(xb)  # (B, classes) or (K, B, classes)
        topk = logits.topk(min(5, logits.shape[-1]), dim=-1).indices  # (..., B, k)
        correct = topk == yb[:, None]
        hits1 = hits1 + correct[..., 0].sum(-1)
        hits5 = hits5 + correct.any(-1).sum(-1)
        if confusion is not None:
            c = confusion.shape[-1]
            cells = yb * c + topk[..., 0]  # (..., B): each image's cell of its member's matrix
            if cells.ndim == 2:  # member k's matrix starts at k·C·C
                cells = cells + torch.arange(cells.shape[0], device=x.device)[:, None] * c * c
            confusion.view(-1).add_(torch.bincount(cells.reshape(-1), minlength=confusion.numel()))
    return hits1, hits5


def percent(hits: torch.Tensor, n: int) -> list[float]:
    """Hit counts, () or (K,), of ``n`` images as accuracies in percent, one per member."""
    return [100.0 * h / max(1, n) for h in hits.reshape(-1).tolist()]


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, augmenter: Augmenter, batch_size: int,
             precision: str = "fp32", confusion: torch.Tensor | None = None) -> tuple[float, float]:
    """Top-1 and Top-5 accuracy (percent) of ``model`` on uint8 images ``x`` and labels ``y``. A ``confusion``
    tensor of (C, C) int64 counts (rows: true class, columns: prediction) is added to in place when given."""
    modes = [(m, m.training) for m in model.modules()]  # restored layer by layer: a frozen backbone's BN stays eval
    model.eval()
    hits1, hits5 = evaluate_logits(lambda xb: model(augmenter(xb, train=False)), x, y, batch_size, precision,
                                   confusion)
    for m, mode in modes:
        m.training = mode
    return percent(hits1, x.shape[0])[0], percent(hits5, x.shape[0])[0]


def eval_steps(cfg: TrainConfig, n_batches: int) -> list[int]:
    """The optimizer steps after which eval points 1, 2, ... fall: every ``eval_every`` epochs and at the end."""
    n = n_evals(cfg.max_epochs, cfg.eval_every)
    return [round(min(k * cfg.eval_every, cfg.max_epochs) * n_batches) for k in range(1, n + 1)]


def data_generators(cfg: TrainConfig, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """The generators of the data order (on the CPU) and of the augmentation draws (on ``device``)."""
    seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    return torch.Generator().manual_seed(seed), torch.Generator(device=device).manual_seed(seed + 1)


def call_hooks(hooks: Sequence[Any], method: str, *args: Any) -> None:
    """Calls ``method(*args)`` on each hook that defines it (a hook may define any subset of :class:`Hook`)."""
    for h in hooks:
        fn = getattr(h, method, None)
        if fn is not None:
            fn(*args)


def fit(model: nn.Module, data: DeviceData, cfg: TrainConfig, hooks: Sequence[Any] = (),
        resume: dict | None = None) -> FitResult:
    """Trains ``model`` for ``cfg.max_epochs`` epochs, evaluating every ``cfg.eval_every`` epochs.

    ``resume`` is a checkpoint made by a previous run's ``on_epoch_end`` or ``on_eval_state`` hook: model,
    optimizer, schedule, grad scaler, RNG states and eval points are restored and training goes on where it
    stopped (at the next epoch, or mid-epoch at the next batch), so the result equals an uninterrupted run with
    the same seed (on the CPU; cuDNN may differ in the last bits).
    Checkpoints (:mod:`hpsearch.training.checkpoint`, shared with ``fit_pack``) hold only tensors and plain Python
    values: they load with ``torch.load(weights_only=True)``.
    """
    device = data.device
    t_start = time.perf_counter()
    g_perm, g_aug = data_generators(cfg, device)
    augmenter = Augmenter(aug_params(cfg.aug_strength, data.hflip), data.mean, data.std, g_aug)
    optimizer = make_optimizer(model, cfg)
    n_batches = batches_per_epoch(data.n_train, cfg.batch_size)
    total_steps = n_batches * cfg.max_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, cfg.schedule, cfg.warmup)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    eval_at = eval_steps(cfg, n_batches)

    def check_time() -> None:
        if cfg.max_trial_seconds is not None and (spent := time.perf_counter() - t_start) > cfg.max_trial_seconds:
            raise TimeLimit(step / n_batches, spent, cfg.max_trial_seconds)

    model.train()
    # fine-tuning: the first freeze_epochs epochs train the head only (set at the start of each epoch, so a run
    # resumed inside or after them freezes exactly as the uninterrupted one)
    backbone = split_params(model)[1] if cfg.freeze_epochs > 0 else []
    batchnorms = backbone_batchnorms(model) if cfg.freeze_epochs > 0 else []
    points: list[EvalPoint] = []
    confusion: torch.Tensor | None = None  # filled by the final evaluation
    start = Cursor()
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        start, points = ckpt.restore(resume, (g_perm, g_aug))
    step, images, train_s = start.step, start.images, start.train_s

    def checkpoint(batch: int = n_batches) -> dict:
        """The state to resume from after ``batch`` batches of ``epoch`` (hpsearch.training.checkpoint)."""
        return ckpt.state(model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), scaler.state_dict(),
                          (g_perm, g_aug), epoch_perm_state, Cursor(epoch, batch, step, images, train_s), points, cfg,
                          n_batches)
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    t_train = time.perf_counter()
    for epoch in range(start.epoch, cfg.max_epochs):
        epoch_perm_state = g_perm.get_state()
        if cfg.freeze_epochs > 0:
            freeze_backbone(model, backbone, batchnorms, epoch < cfg.freeze_epochs)
        skip = start.batch if epoch == start.epoch else 0
        for b, idx in enumerate(epoch_batches(data.n_train, cfg.batch_size, g_perm, device)):
            if b < skip:  # resumed in the middle of this epoch: these batches were trained before
                continue
            xb = augmenter(data.train_x[idx])
            yb = data.train_y[idx]
            with autocast(device, cfg.precision):
                loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            images += idx.shape[0]
            loss_sum += loss.detach().float()
            loss_count += 1
            if (b + 1) % PROGRESS_EVERY == 0 or step in eval_at:
                mean_loss = loss_sum.item() / loss_count
                if not math.isfinite(mean_loss):
                    raise Diverged(step / n_batches, mean_loss)
                ips = images / (train_s + time.perf_counter() - t_train)
                call_hooks(hooks, "on_progress", epoch, b + 1, n_batches, mean_loss, ips)
            if step in eval_at:
                train_s += time.perf_counter() - t_train
                if step == eval_at[-1]:  # the final evaluation also counts the confusion matrix
                    confusion = torch.zeros(data.num_classes, data.num_classes, dtype=torch.long, device=device)
                top1, top5 = evaluate(model, data.val_x, data.val_y, augmenter, cfg.eval_batch_size, cfg.precision,
                                      confusion)
                point = EvalPoint(len(points) + 1, step / n_batches, top1, top5, loss_sum.item() / loss_count,
                                  images / train_s, time.perf_counter() - t_start)
                points.append(point)
                loss_sum.zero_()
                loss_count = 0
                call_hooks(hooks, "on_eval", point)
                call_hooks(hooks, "on_eval_state", point, functools.partial(checkpoint, b + 1))
                t_train = time.perf_counter()
            check_time()
        # every epoch, the last included (a completed trial keeps its final checkpoint)
        pause = time.perf_counter()
        call_hooks(hooks, "on_epoch_end", epoch + 1, checkpoint)
        t_train += time.perf_counter() - pause
    if cfg.freeze_epochs > 0:  # a model frozen to the end (a linear probe) leaves trainable, as it came
        freeze_backbone(model, backbone, batchnorms, False)
    last = points[-1]
    return FitResult(last.top1, last.top5, cfg.max_epochs, last.images_per_s, time.perf_counter() - t_start, points,
                     None if confusion is None else confusion.cpu())
