"""The airbench94 network (Keller Jordan, github.com/KellerJordan/cifar10-airbench), its widths scaled by ``width``.

A 2x2 conv stem, then three conv groups (conv, 2x2 max-pool, BN, GELU, conv, BN, GELU) of 64/256/256
channels, a global max pool, a bias-free linear head and a fixed 1/9 scaling of the logits. Unlike the
original, the stem is learned rather than set to a data-dependent whitening filter, BatchNorm keeps its
weight trainable and PyTorch's default momentum, and the global max pool is adaptive so that any input of
at least 28 px works (28 px: 27 -> 13 -> 6 -> 3 -> 1).
"""

from __future__ import annotations

import torch
from torch import nn

from hpsearch.models._registry import register_model
from hpsearch.params import Param

WIDTHS = (64, 256, 256)  # channels of the three conv groups at width 1.0 (airbench94's hyp["net"]["widths"])
LOGIT_SCALE = 1 / 9  # airbench94's hyp["net"]["scaling_factor"]


class Conv(nn.Conv2d):
    """3x3 'same' conv without bias whose first filters start as the identity (airbench94's init)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data  # (C_out, C_in, 3, 3)
        nn.init.dirac_(w[: w.size(1)])


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            Conv(c_in, c_out),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
            Conv(c_out, c_out),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
        )


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@register_model(
    "airbench",
    params={"width": Param("float", 1.0, low=0.25, high=2.0, help="channel multiplier (1.0 = 64/256/256)")},
)
def airbench(num_classes: int, in_channels: int, image_size: int, width: float = 1.0) -> nn.Module:
    """airbench94: a 2x2 stem, three conv-pool-BN-GELU groups, global max pool, scaled linear head."""
    stem_width = 2 * in_channels * 2**2  # as many channels as the original's whitening filters: 24 for RGB
    c1, c2, c3 = (max(8, round(c * width)) for c in WIDTHS)
    return nn.Sequential(
        nn.Conv2d(in_channels, stem_width, 2, bias=True),
        nn.GELU(),
        ConvGroup(stem_width, c1),
        ConvGroup(c1, c2),
        ConvGroup(c2, c3),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(c3, num_classes, bias=False),
        Scale(LOGIT_SCALE),
    )
