"""AlexNet (Krizhevsky et al., 2012) with channel widths scaled by ``width``, for small and large images.

Five conv layers (96/256/384/384/256 channels in the paper) with ReLU and three overlapping 3x3/2
max-pools, then a dropout classifier with two hidden layers. From 100 px up the stem is the paper's 11x11
stride-4 conv; smaller images get a 3x3 stride-1 stem instead, so 28-64 px inputs keep a 2x2 to 7x7 map
after the last pool. Local response normalisation is left out, as in torchvision's version. An adaptive
average pool before the classifier lets the network accept any input of at least 28 px.
"""

from __future__ import annotations

from torch import nn

from hpsearch.models._registry import register_model
from hpsearch.params import Param

LARGE_INPUT = 100  # px; from here on the stem is the paper's 11x11 stride-4 conv


def pooled(side: int) -> int:
    """Side of a map after one overlapping 3x3 stride-2 max-pool (paper, section 3.4)."""
    return (side - 3) // 2 + 1


@register_model(
    "alexnet",
    params={
        "width": Param(
            "float", 1.0, low=0.25, high=2.0, help="channel multiplier (1.0 = 96/256/384/384/256)"
        ),
        "hidden": Param("int", 4096, low=64, high=8192, help="units of each hidden classifier layer"),
        "dropout": Param("float", 0.5, low=0.0, high=0.9, help="dropout before each hidden layer"),
    },
)
def alexnet(
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: float = 1.0,
    hidden: int = 4096,
    dropout: float = 0.5,
) -> nn.Module:
    """AlexNet: five conv layers, three max-pools, a two-hidden-layer dropout classifier."""
    c1, c2, c3, c4, c5 = (max(8, round(c * width)) for c in (96, 256, 384, 384, 256))
    if image_size >= LARGE_INPUT:
        stem = nn.Conv2d(in_channels, c1, 11, stride=4, padding=2)  # padding 2 as in torchvision
        side = (image_size + 2 * 2 - 11) // 4 + 1
    else:
        stem = nn.Conv2d(in_channels, c1, 3, padding=1)
        side = image_size
    features = nn.Sequential(
        stem,
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(c1, c2, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(c2, c3, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c3, c4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c4, c5, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2),
    )
    # The paper's classifier sees a 6x6 map (at 224 px); smaller images keep their own, smaller map.
    grid = min(6, pooled(pooled(pooled(side))))
    return nn.Sequential(
        features,
        nn.AdaptiveAvgPool2d(grid),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(c5 * grid * grid, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )
