"""Trial packs: K trials of one architecture and batch size trained as one fused model on one device.

The K models' parameters and buffers are stacked along a new first dimension (``torch.func.stack_module_state``,
then one flat (K, P) tensor) and the architecture runs once per step as one network. Two forwards do that:

- ``fused`` (the default wherever it applies): the HFTA layers of :mod:`hpsearch.training.fused` (Wang et al., MLSys
  2021): each convolution is one grouped convolution over the K members' channels, each BatchNorm one over K·C
  channels (every member keeps its own batch statistics and running averages), each linear layer one batched
  matmul. Checked against vmap on a probe input when the pack is built.
- ``vmap``: ``torch.func.vmap`` over ``functional_call``, whose batching rules do the same for any model, with
  more operators per call; the fallback for a model with a layer that has no fused form or whose forward mixes
  channels (the probe's verdict).

A small trial that is launch-bound on a GPU then launches about as many kernels for K members as for one.

Per member: its initialisation (the caller builds each model from its own seed), learning rate, weight decay,
backbone lr multiplier, label smoothing, augmentation strength, BatchNorm statistics and dropout masks
(``randomness="different"``). Shared: the batch indices of every step (one gather; common random numbers make the
members' comparison fairer), the schedule's shape, ``freeze_epochs`` (a fused BatchNorm runs in one mode for all
members) and everything else that fixes tensor shapes or the step sequence.

:func:`fit_pack` mirrors :func:`hpsearch.training.loop.fit`: each member has its own hooks, eval points, checkpoints
(:mod:`hpsearch.training.checkpoint`, ``fit``'s format, so a member resumes solo or in another pack) and result. A
member whose hook raises (a pruned trial) or whose loss turns non-finite leaves the pack, and the stacked tensors
shrink so it costs no more compute. Like ``loop``, this module never imports optuna.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from hpsearch.data.loader import DeviceData, batches_per_epoch, epoch_batches
from hpsearch.errors import first_line
from hpsearch.models.heads import backbone_batchnorms, head_names
from hpsearch.training import checkpoint as ckpt
from hpsearch.training.augment import PackAugmenter
from hpsearch.training.checkpoint import Cursor
from hpsearch.training.fused import FusedForward, Unfusable
from hpsearch.training.loop import (
    PROGRESS_EVERY,
    Diverged,
    EvalPoint,
    FitResult,
    TimeLimit,
    TrainConfig,
    autocast,
    call_hooks,
    data_generators,
    eval_steps,
    evaluate_logits,
    lr_factor,
    make_optimizer,
    percent,
)

# TrainConfig fields that every member of a pack shares: they fix tensor shapes or the step sequence.
# freeze_epochs: a frozen backbone's BatchNorm runs in eval mode, one mode per fused layer for all members.
SHARED_FIELDS = ("batch_size", "optimizer", "max_epochs", "eval_every", "schedule", "warmup", "eval_batch_size",
                 "precision", "max_trial_seconds", "data_seed", "freeze_epochs")
FORWARDS = ("auto", "fused", "vmap")  # auto: fused where every layer has a fused form, else vmap
MOMENTUM = 0.9  # SGD's, as in hpsearch.training.loop.make_optimizer
BETAS, EPS = (0.9, 0.999), 1e-8  # AdamW's defaults, as torch.optim.AdamW


class PackError(ValueError):
    """Members that cannot train as one pack (different shared settings or architectures)."""


class PackOutOfMemory(Exception):
    """The fused step ran out of device memory. ``finished`` maps the members that had already left the pack to
    their outcomes; ``alive`` lists the members still training, to go on in smaller packs from their checkpoints."""

    def __init__(self, error: BaseException, finished: dict[int, FitResult | Exception], alive: list[int]):
        super().__init__(f"a pack of {len(alive)} ran out of memory: {error}")
        self.error, self.finished, self.alive = error, finished, alive


def check_members(cfgs: Sequence[TrainConfig]) -> None:
    if not cfgs:
        raise PackError("a pack needs at least one member")
    first = cfgs[0]
    for i, c in enumerate(cfgs[1:], 1):
        differ = [f for f in SHARED_FIELDS if getattr(c, f) != getattr(first, f)]
        if differ:
            raise PackError(f"member {i} differs from member 0 in {', '.join(differ)}, which a pack shares")
    if first.precision == "fp16":
        raise PackError("fp16 needs a gradient scaler per member; packs train in fp32 or bf16")


# ---- the stacked model --------------------------------------------------------------------------------------


class StackedModel:
    """K models of one architecture as one flat (K, P) parameter tensor and stacked buffers.

    Each parameter is a (K, ...) view of its columns of ``flat``, so autograd leaves one (K, P) gradient and the
    optimizer updates every parameter of every member in a handful of whole-tensor operations (the flat-parameter
    layout of FSDP): fewer, larger kernels are what a launch-bound GPU needs."""

    def __init__(self, models: Sequence[nn.Module], forward: str = "auto", example: torch.Tensor | None = None):
        self.base = copy.deepcopy(models[0]).to("meta")  # the architecture only; its tensors come from the stacks
        params, self.buffers = stack_module_state(list(models))
        self.shapes = {n: p.shape[1:] for n, p in params.items()}  # one member's shape
        self.columns: dict[str, tuple[int, int]] = {}
        start = 0
        for n, p in params.items():
            self.columns[n] = (start, start + p[0].numel())
            start += p[0].numel()
        k = len(models)
        self.flat = torch.cat([p.detach().reshape(k, -1) for p in params.values()], dim=1).requires_grad_(True)
        self.members = list(range(k))  # the member index of each row (fit_pack keeps it current)
        # hook(model, x, out) -> out | None, called on each training forward's (K, B, classes) output
        self.output_hooks: list[Callable[[StackedModel, torch.Tensor, torch.Tensor], torch.Tensor | None]] = []
        self.fused: FusedForward | None = None
        self.fallback: str | None = None  # why an "auto" forward kept vmap
        self.frozen = False  # head-only training (set_frozen)
        self._head: set[str] | None = None  # the classifier head's parameter names (hpsearch.models.heads)
        self._norms: list[str] = []  # the backbone's BatchNorm layers, by name (the fused net keeps the names)
        if forward not in FORWARDS:
            raise PackError(f"forward must be one of {', '.join(FORWARDS)}, not {forward!r}")
        if forward != "vmap":
            try:
                self.fused = self._checked_fused(example)
            except Unfusable as e:
                if forward == "fused":
                    raise PackError(f"cannot fuse this architecture's layers: {e}") from e
                self.fallback = str(e)

    @property
    def forward_kind(self) -> str:
        """``"fused"`` (HFTA layers, :mod:`hpsearch.training.fused`) or ``"vmap"``."""
        return "vmap" if self.fused is None else "fused"

    @torch.inference_mode()
    def _checked_fused(self, example: torch.Tensor | None) -> FusedForward:
        """The fused forward, checked against vmap in eval mode on ``example`` (a few (N, C, H, W) inputs) when
        given: a model whose own forward mixes channels (say a ``view`` with a hard-coded size) differs there."""
        fused = FusedForward(self.base)
        if example is None:
            return fused
        self.base.eval()
        fused.train(False)
        x = torch.randn(example.shape, generator=torch.Generator().manual_seed(0)).to(example.device)
        want = vmap(self._forward, in_dims=(0, 0, None))(self.params, self.buffers, x)
        try:
            got = fused(self.params, self.buffers, x, shared=True)
        except RuntimeError as e:
            raise Unfusable(f"the fused forward fails: {first_line(e)}") from e
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * (1 + want.abs().max())):
            raise Unfusable("the fused forward's outputs differ from vmap's (the model's forward mixes channels)")
        return fused

    @property
    def size(self) -> int:
        return self.flat.shape[0]

    def view(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``flat`` (K, P) (the parameters, or an optimizer state laid out like them) as (K, ...) per parameter."""
        # one split, not a slice per parameter: split's backward is one cat of the gradients, where slicing would
        # allocate and fill a (K, P) gradient per parameter
        sizes = [b - a for a, b in self.columns.values()]
        return {n: part.view(-1, *self.shapes[n]) for n, part in zip(self.columns, flat.split(sizes, dim=1),
                                                                        strict=True)}

    @property
    def params(self) -> dict[str, torch.Tensor]:
        views = self.view(self.flat)
        if self.frozen:  # the backbone out of the graph: backward stops at the head, as a solo frozen model's does
            views = {n: t if n in self.head_names else t.detach() for n, t in views.items()}
        return views

    @property
    def head_names(self) -> set[str]:
        if self._head is None:
            self._head = head_names(self.base)
        return self._head

    def backbone_columns(self) -> torch.Tensor:
        """(P,) bool: True at the columns of ``flat`` that hold the backbone's parameters (all but the head's)."""
        mask = torch.ones(self.flat.shape[1], dtype=torch.bool, device=self.flat.device)
        for n in self.head_names:
            a, b = self.columns[n]
            mask[a:b] = False
        return mask

    def set_frozen(self, frozen: bool) -> None:
        """Head-only training (``frozen``) or all of it, as ``fit``'s ``freeze_backbone`` does for a solo model: the
        backbone's parameters leave the graph (the optimizer skips their columns, see ``StackedOptimizer``) and its
        BatchNorm layers run in eval mode, their running statistics kept."""
        if frozen and not self.frozen:
            self._norms = backbone_batchnorms(self.base)
        self.frozen = frozen

    def _forward(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, C, H, W) → (K, B, classes), training mode (batch statistics, dropout)."""
        net = self.base if self.fused is None else self.fused.net
        net.train()
        if self.frozen:
            for name in self._norms:
                net.get_submodule(name).eval()
        if self.fused is not None:
            out = self.fused(self.params, self.buffers, x)
        else:
            out = vmap(self._forward, randomness="different")(self.params, self.buffers, x)
        for hook in self.output_hooks:
            changed = hook(self, x, out)
            out = out if changed is None else changed
        return out

    @torch.inference_mode()
    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """One batch (B, C, H, W) shared by every member → (K, B, classes), eval mode."""
        if self.fused is not None:
            self.fused.train(False)
            return self.fused(self.params, self.buffers, x, shared=True)
        self.base.eval()
        return vmap(self._forward, in_dims=(0, 0, None), randomness="different")(self.params, self.buffers, x)

    def keep(self, rows: torch.Tensor) -> None:
        """Keeps only the members at ``rows`` (positions in the stack)."""
        self.flat = self.flat.detach()[rows].clone().requires_grad_(True)
        self.buffers = {n: b[rows].clone() for n, b in self.buffers.items()}

    def member_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s weights as the solo model's ``state_dict`` (CPU copies)."""
        return {n: t[i].detach().cpu().clone() for n, t in (self.params | self.buffers).items()}


class StackedOptimizer:
    """SGD (Nesterov, momentum 0.9) or AdamW over a pack's flat parameters, with a learning rate, weight decay and
    backbone lr multiplier per member (torch.optim takes one learning rate per tensor; the flat tensor holds K
    members). The update is torch's single-tensor formula term for term; no weight decay on 1-D member tensors
    (BatchNorm, biases).

    Fine-tuning, as ``fit``'s two-group optimizer and frozen backbone: a member's backbone columns step at its lr ×
    ``backbone_lr_mult``; during the first ``frozen_steps`` steps only the head's columns change, weights and state
    (torch's optimizers skip a parameter without a gradient), so the backbone's buffers are still zero when it
    starts to train (which makes the first momentum update torch's ``clone`` of the gradient, bit for bit) and,
    with AdamW, its bias correction counts its own steps, ``steps - frozen_steps``."""

    STATE = {"sgd": ("momentum_buffer",), "adamw": ("exp_avg", "exp_avg_sq")}

    def __init__(self, model: StackedModel, kind: str, lrs: Sequence[float], weight_decays: Sequence[float],
                 backbone_lr_mults: Sequence[float] | None = None, frozen_steps: int = 0):
        device = model.flat.device
        self.model, self.kind, self.frozen_steps = model, kind, frozen_steps
        self.lr = torch.tensor(lrs, device=device, dtype=torch.float32)[:, None]  # (K, 1) peak learning rates
        mults = list(backbone_lr_mults or [1.0] * len(lrs))
        self.backbone = model.backbone_columns() if frozen_steps > 0 or any(m != 1.0 for m in mults) else None
        if any(m != 1.0 for m in mults):  # (K, P): the head's columns at lr, the backbone's at lr × mult
            backbone_lrs = torch.tensor([lr * m for lr, m in zip(lrs, mults, strict=True)], device=device,
                                        dtype=torch.float32)[:, None]
            self.lr = torch.where(self.backbone, backbone_lrs, self.lr)
        decays = torch.zeros(model.flat.shape[1], device=device)  # (P,) 1 where make_optimizer decays
        for n, (a, b) in model.columns.items():
            if len(model.shapes[n]) > 1:
                decays[a:b] = 1.0
        self.wd = torch.tensor(weight_decays, device=device, dtype=torch.float32)[:, None] * decays  # (K, P)
        self.decayed = bool(decays.any()) and bool(self.wd.any())
        self.state: dict[str, torch.Tensor] = {}  # "momentum_buffer" or "exp_avg", "exp_avg_sq": (K, P)
        self.steps = 0

    def zero_grad(self) -> None:
        self.model.flat.grad = None

    @property
    def backbone_steps(self) -> int:
        """The steps the backbone has trained (all of them without a freeze)."""
        return max(0, self.steps - self.frozen_steps)

    @torch.no_grad()
    def step(self, factor: float) -> None:
        """One update at learning rate ``factor`` × each member's peak (the schedule's multiplier)."""
        self.steps += 1
        p, grad = self.model.flat, self.model.flat.grad
        lr = self.lr * factor
        if self.steps > self.frozen_steps:
            self._update(p, grad, self.state, lr, self.wd, self._bias_corrections())
            return
        # the head alone: its columns are updated on copies, then written back
        cols = (~self.backbone).nonzero().squeeze(1)
        if not self.state:
            self.state = {key: torch.zeros_like(p) for key in self.STATE[self.kind]}
        part = {key: t[:, cols] for key, t in self.state.items()}
        p_head = p[:, cols]
        self._update(p_head, grad[:, cols], part, lr if lr.shape[1] == 1 else lr[:, cols], self.wd[:, cols],
                     (1 - BETAS[0] ** self.steps, math.sqrt(1 - BETAS[1] ** self.steps)))
        p[:, cols] = p_head
        for key, t in part.items():
            self.state[key][:, cols] = t

    def _bias_corrections(self) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """AdamW's (1 - β1^t, √(1 - β2^t)): numbers, or (P,) where the backbone has trained fewer steps."""
        def of(t: int) -> tuple[float, float]:
            return 1 - BETAS[0] ** t, math.sqrt(1 - BETAS[1] ** t)

        if self.backbone_steps == self.steps:
            return of(self.steps)
        (head1, head2), (back1, back2) = of(self.steps), of(self.backbone_steps)
        as_tensor = functools.partial(torch.tensor, device=self.model.flat.device)
        return (torch.where(self.backbone, as_tensor(back1), as_tensor(head1)),
                torch.where(self.backbone, as_tensor(back2), as_tensor(head2)))

    def _update(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor], lr: torch.Tensor,
                wd: torch.Tensor, bias: tuple[float | torch.Tensor, float | torch.Tensor]) -> None:
        """torch's update of ``p`` (in place) and ``state`` (filled on the first step)."""
        if self.kind == "adamw":
            if not state:
                state.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            if self.decayed:
                p.mul_(1 - lr * wd)
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(grad, 1 - BETAS[0])
            v.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
            step_size = lr / bias[0]
            denom = (v.sqrt() / bias[1]).add_(EPS)
            p.sub_(step_size * (m / denom))
            return
        if self.decayed:
            grad = grad + wd * p
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = grad.clone()
        else:
            buf.mul_(MOMENTUM).add_(grad)
        p.sub_(lr * grad.add(buf, alpha=MOMENTUM))

    def keep(self, rows: torch.Tensor) -> None:
        self.lr, self.wd = self.lr[rows], self.wd[rows]
        self.state = {k: t[rows].clone() for k, t in self.state.items()}

    # -- the solo format: torch.optim's state_dict of make_optimizer's groups, and LambdaLR's ----------------

    def member_states(self, i: int, model: nn.Module, cfg: TrainConfig, total_steps: int) -> tuple[dict, dict]:
        """(optimizer, scheduler) state dicts of member ``i`` as ``fit`` would have saved them after this many
        steps; ``model`` is the member's solo model (its parameters stand for the stacked rows)."""
        opt = make_optimizer(model, cfg)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, cfg.schedule, cfg.warmup))
        names = {id(p): n for n, p in model.named_parameters()}
        state = {key: self.model.view(t) for key, t in self.state.items()}  # key → name → (K, ...)
        head = self.model.head_names if self.frozen_steps > 0 else set(names.values())
        for group in opt.param_groups:
            for p in group["params"]:
                name = names[id(p)]
                steps = self.steps if name in head else self.backbone_steps
                if steps == 0:  # a frozen backbone's parameters: torch keeps no state for them yet
                    continue
                rows = {key: per_name[name][i].detach().cpu().clone() for key, per_name in state.items()}
                if self.kind == "adamw" and rows:
                    opt.state[p] = {"step": torch.tensor(float(steps)), **rows}
                elif rows:
                    opt.state[p] = rows
        # the scheduler as `steps` calls of scheduler.step() leave it (they also set each group's lr)
        factor = lr_factor(self.steps, total_steps, cfg.schedule, cfg.warmup)
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor
        sched.last_epoch, sched._step_count = self.steps, self.steps + 1
        sched._last_lr = [g["lr"] for g in opt.param_groups]
        return opt.state_dict(), sched.state_dict()

    def load_member(self, i: int, model: nn.Module, cfg: TrainConfig, optimizer_state: dict) -> None:
        """Puts a solo optimizer state dict (``fit``'s checkpoint) into member ``i``'s row. (AdamW's step counts are
        the checkpoint's step, or for a backbone that was frozen, fewer by ``frozen_steps``: ``steps`` is set from the
        checkpoint's cursor.)"""
        opt = make_optimizer(model, cfg)
        opt.load_state_dict(optimizer_state)
        names = {id(p): n for n, p in model.named_parameters()}
        for p, st in opt.state.items():
            for key, value in st.items():
                if key == "step":
                    continue
                flat = self.state.setdefault(key, torch.zeros_like(self.model.flat.detach()))
                with torch.no_grad():
                    self.model.view(flat)[names[id(p)]][i].copy_(value)


# ---- training -----------------------------------------------------------------------------------------------


def member_losses(logits: torch.Tensor, y: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each member, (K, B, C) logits and (B,) labels → (K,), with its own label smoothing:
    ``(1 - ε)·NLL + ε·mean over classes of -log p``, which is ``nn.CrossEntropyLoss(label_smoothing=ε)``."""
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, y.expand(logits.shape[0], -1).unsqueeze(-1)).squeeze(-1).mean(1)
    smooth = -logp.mean(-1).mean(1)
    return (1 - smoothing) * nll + smoothing * smooth


def _evaluate(model: StackedModel, data: DeviceData, aug: PackAugmenter, batch_size: int, precision: str,
              confusion: torch.Tensor | None) -> tuple[list[float], list[float]]:
    """Top-1 and Top-5 (percent) of every member on the validation set; ``confusion`` (K, C, C) is added to."""
    hits1, hits5 = evaluate_logits(lambda xb: model.evaluate(aug.eval(xb)), data.val_x, data.val_y, batch_size,
                                   precision, confusion)  # (K,) each
    n = data.val_x.shape[0]
    return percent(hits1.expand(model.size), n), percent(hits5.expand(model.size), n)


def fit_pack(models: Sequence[nn.Module], data: DeviceData, cfgs: Sequence[TrainConfig],
             hooks: Sequence[Sequence[Any]], resume: Sequence[dict] | None = None,
             stacked: Callable[[StackedModel], None] | None = None,
             forward: str = "auto") -> list[FitResult | Exception]:
    """Trains member i (``models[i]``, ``cfgs[i]``, ``hooks[i]``) as ``fit`` would, all K as one fused model.

    Returns one outcome per member: its :class:`FitResult`, or the exception that ended it (``Diverged``,
    ``TimeLimit``, or whatever its hooks raised, such as a pruning decision); the other members go on. A
    ``KeyboardInterrupt`` propagates; running out of device memory (which concerns the whole fused step) raises
    :class:`PackOutOfMemory`, with the outcomes so far and the members still training. ``resume``:
    each member's checkpoint from ``on_epoch_end`` or ``on_eval_state``, all at the same step (``fit``'s format). ``stacked`` is
    called with the stacked model before training (to install fault injection or measure it). ``forward``:
    ``"fused"`` (HFTA layers), ``"vmap"``, or ``"auto"``: fused where the architecture allows, else vmap.
    """
    cfgs = list(cfgs)
    check_members(cfgs)
    first, device, k = cfgs[0], data.device, len(cfgs)
    t_start = time.perf_counter()
    g_perm, g_aug = data_generators(first, device)
    n_batches = batches_per_epoch(data.n_train, first.batch_size)
    total_steps = n_batches * first.max_epochs
    eval_at = eval_steps(first, n_batches)
    points: list[list[EvalPoint]] = [[] for _ in range(k)]
    start = Cursor()
    if resume is not None:
        for model, state in zip(models, resume, strict=True):
            model.load_state_dict(state["model"])
        start, _ = ckpt.restore(resume[0], (g_perm, g_aug))  # the members share the data order and its cursor
        points = [ckpt.eval_points(state) for state in resume]
    step, images, train_s = start.step, start.images, start.train_s
    templates = [copy.deepcopy(m).cpu() for m in models]  # solo models, for checkpoints in fit's format
    model = StackedModel(models, forward, example=data.train_x[:2])
    optimizer = StackedOptimizer(model, first.optimizer, [c.lr for c in cfgs], [c.weight_decay for c in cfgs],
                                 [c.backbone_lr_mult for c in cfgs], first.freeze_epochs * n_batches)
    optimizer.steps = step
    if resume is not None:
        for i, state in enumerate(resume):
            optimizer.load_member(i, templates[i], cfgs[i], state["optimizer"])
    aug = PackAugmenter([c.aug_strength for c in cfgs], data.hflip, data.mean, data.std, g_aug)
    smoothing = torch.tensor([c.label_smoothing for c in cfgs], device=device)
    if stacked is not None:
        stacked(model)

    alive = model.members  # member index of each row of the stacks (drop() updates it in place)
    outcome: dict[int, FitResult | Exception] = {}
    final_confusion: dict[int, torch.Tensor] = {}  # member → (C, C) counts of its final evaluation
    loss_sum = torch.zeros(k, device=device)  # per row, since the last eval point
    loss_count = 0

    def drop(leaving: dict[int, Exception]) -> None:
        """Ends the members at these rows with these exceptions and shrinks the stacks."""
        nonlocal smoothing, loss_sum
        for row, e in leaving.items():
            outcome[alive[row]] = e
        rows = [r for r in range(len(alive)) if r not in leaving]
        alive[:] = [alive[r] for r in rows]
        if alive:
            index = torch.tensor(rows, device=device)
            model.keep(index)
            optimizer.keep(index)
            smoothing, loss_sum = smoothing[index], loss_sum[index]
            aug.set_strengths([cfgs[i].aug_strength for i in alive], data.hflip)

    def each_member(method: str, args: list[tuple]) -> None:
        """Calls ``method`` with ``args[row]`` on each alive member's hooks; a member whose hook raises leaves."""
        leaving: dict[int, Exception] = {}
        for row, i in enumerate(alive):
            try:
                call_hooks(hooks[i], method, *args[row])
            except Exception as e:  # a pruning decision or any hook failure ends this member only
                leaving[row] = e
        if leaving:
            drop(leaving)

    def checkpoint_of(row: int, i: int, epoch: int, batch: int = n_batches) -> Callable[[], dict]:
        """Member i's state in ``fit``'s format after ``batch`` batches of ``epoch`` (hpsearch.training.checkpoint);
        its optimizer and schedule as the solo ``fit``'s state dicts, no grad scaler (packs train in fp32/bf16)."""

        def checkpoint() -> dict:
            templates[i].load_state_dict(model.member_state_dict(row))
            opt_state, sched_state = optimizer.member_states(row, templates[i], cfgs[i], total_steps)
            return ckpt.state(model.member_state_dict(row), opt_state, sched_state, {}, (g_perm, g_aug),
                              epoch_perm_state, Cursor(epoch, batch, step, images, train_s), points[i], cfgs[i],
                              n_batches)

        return checkpoint

    t_train = time.perf_counter()
    try:
        for epoch in range(start.epoch, first.max_epochs):
            epoch_perm_state = g_perm.get_state()
            if first.freeze_epochs > 0:  # the optimizer skips the backbone for as many steps (frozen_steps)
                model.set_frozen(epoch < first.freeze_epochs)
            skip = start.batch if epoch == start.epoch else 0
            for b, idx in enumerate(epoch_batches(data.n_train, first.batch_size, g_perm, device)):
                if not alive:
                    break
                if b < skip:  # resumed in the middle of this epoch
                    continue
                xb = aug(data.train_x[idx])  # (K, B, C, H, W)
                yb = data.train_y[idx]
                with autocast(device, first.precision):
                    losses = member_losses(model(xb), yb, smoothing)  # (K,)
                optimizer.zero_grad()
                losses.sum().backward()  # members share no parameter: each gets the gradient of its own loss
                optimizer.step(lr_factor(step, total_steps, first.schedule, first.warmup))
                step += 1
                images += idx.shape[0]
                loss_sum += losses.detach().float()
                loss_count += 1
                if (b + 1) % PROGRESS_EVERY == 0 or step in eval_at:
                    means = (loss_sum / loss_count).tolist()
                    bad = {row: Diverged(step / n_batches, v) for row, v in enumerate(means) if not math.isfinite(v)}
                    if bad:  # a NaN stays in its member's rows (no parameter is shared): only that member leaves
                        drop(bad)
                        means = (loss_sum / loss_count).tolist()
                    ips = images / (train_s + time.perf_counter() - t_train)
                    each_member("on_progress", [(epoch, b + 1, n_batches, m, ips) for m in means])
                if not alive:
                    break
                if step in eval_at:
                    train_s += time.perf_counter() - t_train
                    final = step == eval_at[-1]  # the final evaluation also counts the confusion matrices
                    confusion = (torch.zeros(len(alive), data.num_classes, data.num_classes, dtype=torch.long,
                                             device=device) if final else None)
                    top1, top5 = _evaluate(model, data, aug, first.eval_batch_size, first.precision, confusion)
                    mean_loss = (loss_sum / loss_count).tolist()
                    for row, i in enumerate(alive):
                        points[i].append(EvalPoint(len(points[i]) + 1, step / n_batches, top1[row], top5[row],
                                                   mean_loss[row], images / train_s, time.perf_counter() - t_start))
                        if confusion is not None:
                            final_confusion[i] = confusion[row].cpu()
                    loss_sum.zero_()
                    loss_count = 0
                    each_member("on_eval", [(points[i][-1],) for i in alive])
                    each_member("on_eval_state", [(points[i][-1], checkpoint_of(row, i, epoch, b + 1))
                                                  for row, i in enumerate(alive)])
                    t_train = time.perf_counter()
                if first.max_trial_seconds is not None and (spent := time.perf_counter() - t_start) > first.max_trial_seconds:
                    drop({row: TimeLimit(step / n_batches, spent, first.max_trial_seconds) for row in range(len(alive))})
            if not alive:
                break
            pause = time.perf_counter()
            each_member("on_epoch_end", [(epoch + 1, checkpoint_of(row, i, epoch)) for row, i in enumerate(alive)])
            t_train += time.perf_counter() - pause
    except torch.OutOfMemoryError as e:  # the whole fused step: the caller halves the pack
        raise PackOutOfMemory(e, dict(outcome), list(alive)) from e
    wall = time.perf_counter() - t_start
    for row, i in enumerate(alive):  # the trained weights go back into each completed member's own model
        models[i].load_state_dict(model.member_state_dict(row))
    for i in alive:
        last = points[i][-1]
        outcome[i] = FitResult(last.top1, last.top5, first.max_epochs, last.images_per_s, wall, points[i],
                               final_confusion.get(i))
    return [outcome[i] for i in range(k)]

