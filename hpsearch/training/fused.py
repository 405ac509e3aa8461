"""HFTA-style fused layers: K models of one architecture run as one network over member-major channels.

The K members' activations travel as one (B, K·C, H, W) tensor whose channels are member-major (member 0's C
channels, then member 1's, ...). Each ``Conv2d`` becomes one grouped convolution (``groups × K``) over them, each
``BatchNorm2d`` one batch norm over K·C channels (per member, per channel statistics: each member keeps its own),
and each ``Linear`` one batched matmul over the member-major features that ``Flatten`` leaves. Everything else
in a model built from standard layers (activations, pooling, dropout, flatten, residual additions, scaling)
acts per channel or per element and runs unchanged. This is the layer fusion of HFTA (Wang et al., MLSys 2021)
without vmap's per-call batching-rule dispatch.

:class:`FusedForward` refuses (:class:`Unfusable`) a model holding tensors in any other layer; a model whose
``forward`` mixes channels some other way (a ``view`` with a hard-coded size, a channel ``cat``, a
``GroupNorm``) is caught by the caller's probe against ``vmap`` (:mod:`hpsearch.training.pack`), which then keeps vmap.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["FusedForward", "Unfusable"]


class Unfusable(ValueError):
    """The model has a layer with tensors that has no fused form (its name and type are in the message)."""


class _Members:
    """The stacked (K, ...) parameters and buffers of the forward in progress, read by the fused layers."""

    def __init__(self) -> None:
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}


class FusedConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d, name: str, members: _Members):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise Unfusable(f"{name}: Conv2d with padding_mode={conv.padding_mode!r}")
        self.name, self.members = name, members
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.members.params[f"{self.name}.weight"]  # (K, C_out, C_in / groups, kh, kw)
        b = self.members.params.get(f"{self.name}.bias")
        k = w.shape[0]
        return F.conv2d(x, w.reshape(k * w.shape[1], *w.shape[2:]), None if b is None else b.reshape(-1),
                        self.stride, self.padding, self.dilation, self.groups * k)


class FusedBatchNorm2d(nn.Module):
    """``nn.BatchNorm2d``'s forward, term for term, over K·C channels (running statistics updated in place)."""

    def __init__(self, bn: _BatchNorm, name: str, members: _Members):
        super().__init__()
        self.name, self.members = name, members
        self.momentum, self.eps, self.track = bn.momentum, bn.eps, bn.track_running_stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, bufs = self.members.params, self.members.buffers
        weight, bias = p.get(f"{self.name}.weight"), p.get(f"{self.name}.bias")
        mean, var = bufs.get(f"{self.name}.running_mean"), bufs.get(f"{self.name}.running_var")
        tracked = bufs.get(f"{self.name}.num_batches_tracked")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track and tracked is not None:
            tracked.add_(1)
            factor = 1.0 / float(tracked[0]) if self.momentum is None else self.momentum
        use_batch = self.training or (mean is None and var is None)
        keep_stats = not self.training or self.track
        # (K, C) buffers are contiguous: their flat views share storage, so the running averages update in place
        return F.batch_norm(x, mean.view(-1) if keep_stats and mean is not None else None,
                            var.view(-1) if keep_stats and var is not None else None,
                            None if weight is None else weight.reshape(-1), None if bias is None else bias.reshape(-1),
                            use_batch, factor, self.eps)


class FusedLinear(nn.Module):
    def __init__(self, name: str, members: _Members):
        super().__init__()
        self.name, self.members = name, members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.members.params[f"{self.name}.weight"]  # (K, out, in)
        b = self.members.params.get(f"{self.name}.bias")
        k, n_out, n_in = w.shape
        lead = x.shape[:-1]
        xk = x.reshape(-1, k, n_in).transpose(0, 1)  # (K, N, in): member i's features are columns i·in..(i+1)·in
        y = torch.bmm(xk, w.transpose(1, 2)) if b is None else torch.baddbmm(b.unsqueeze(1), xk, w.transpose(1, 2))
        return y.transpose(0, 1).reshape(*lead, k * n_out)


def _standard(module: nn.Module, cls: type) -> bool:
    return type(module).forward is cls.forward


class FusedForward:
    """The architecture of ``base`` with its Conv2d, BatchNorm2d and Linear layers replaced by fused ones."""

    def __init__(self, base: nn.Module):
        self.members = _Members()
        self.net = copy.deepcopy(base)
        for name, module in list(self.net.named_modules()):
            if not name:
                continue
            if isinstance(module, nn.Conv2d) and _standard(module, nn.Conv2d):
                fused: nn.Module = FusedConv2d(module, name, self.members)
            elif isinstance(module, nn.BatchNorm2d) and _standard(module, _BatchNorm):
                fused = FusedBatchNorm2d(module, name, self.members)
            elif isinstance(module, nn.Linear) and _standard(module, nn.Linear):
                fused = FusedLinear(name, self.members)
            else:
                held = [n for n, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]
                if held:
                    raise Unfusable(f"{name} ({type(module).__name__}) holds {', '.join(held)}")
                continue
            parent, _, attr = name.rpartition(".")
            setattr(self.net.get_submodule(parent) if parent else self.net, attr, fused)

    def __call__(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor,
                 shared: bool = False) -> torch.Tensor:
        """(K, B, C, H, W) inputs, one batch per member (or (B, C, H, W) seen by all with ``shared``) →
        (K, B, classes). ``params``/``buffers``: the members' (K, ...) tensors by the base model's names."""
        k = next(iter(params.values())).shape[0]
        per_member = x.unsqueeze(1).expand(x.shape[0], k, *x.shape[1:]) if shared else x.transpose(0, 1)
        b, _, c, h, w = per_member.shape  # (B, K, C, H, W)
        # member-major channels, laid out channels-last (one copy): grouped convolutions run about 2x faster so
        # on oneDNN than on NCHW (measured on the project's CPU), and the solo models are channels-last too
        x = per_member.permute(0, 3, 4, 1, 2).reshape(b, h, w, k * c).permute(0, 3, 1, 2)
        self.members.params, self.members.buffers = params, buffers
        try:
            out = self.net(x)
        finally:
            self.members.params, self.members.buffers = {}, {}
        return out.reshape(b, k, -1).transpose(0, 1)

    def train(self, mode: bool = True) -> None:
        self.net.train(mode)
