"""VGG-style networks (Simonyan & Zisserman, 2014) with BatchNorm, sized by ``stages`` and ``width``.

Each stage is two 3x3 conv-BN-ReLU layers and a 2x2 max-pool; channels double per stage, starting at
``width``. A global average pool and one linear layer classify, so any input of at least 28 px works.
"""

from __future__ import annotations

from torch import nn

from hpsearch.models._registry import register_model
from hpsearch.params import Param


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register_model(
    "vgg",
    params={
        "stages": Param("int", 3, low=1, high=4, help="conv stages, each halving the resolution"),
        "width": Param("int", 32, low=8, high=256, help="channels of the first stage"),
    },
)
def vgg(num_classes: int, in_channels: int, image_size: int, stages: int = 3, width: int = 32) -> nn.Module:
    """VGG with BatchNorm: ``stages`` x (2 conv + pool), channels width, 2*width, ..."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for i in range(stages):
        c_out = width * 2**i
        layers += conv_bn(c_in, c_out) + conv_bn(c_out, c_out) + [nn.MaxPool2d(2)]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
