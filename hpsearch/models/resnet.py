"""CIFAR-style ResNets (He et al., 2016, section 4.2): depth 6n+2, three stages of n basic blocks.

Stage widths are ``width``, 2*``width``, 4*``width`` (16/32/64 in the paper); the second and third stages
halve the resolution. A global average pool makes the network accept any input of at least 28 px.
"""

from __future__ import annotations

import torch
from torch import nn

from hpsearch.models._registry import register_model
from hpsearch.params import Param

DEPTHS = (8, 14, 20, 32, 44, 56)  # 6n+2 for n = 1, 2, 3, 5, 7, 9


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@register_model(
    "resnet",
    params={
        "depth": Param("int", 20, choices=DEPTHS, help="6n+2 layers"),
        "width": Param("int", 16, low=8, high=128, help="channels of the first stage"),
    },
)
def resnet(num_classes: int, in_channels: int, image_size: int, depth: int = 20, width: int = 16) -> nn.Module:
    """CIFAR ResNet: a 3x3 stem, then three stages of (depth-2)/6 basic blocks."""
    n = (depth - 2) // 6
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]
    c_in = width
    for stage in range(3):
        c_out = width * 2**stage
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(c_in, c_out, stride))
            c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
