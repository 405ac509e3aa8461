"""LeNet-5 (LeCun et al., 1998) as in the seed's example, with widths scaled by ``width``.

The first fully connected layer's input size is computed from the image size, so the network accepts
any input of at least 28 px (the classic network assumes 32 px).
"""

from __future__ import annotations

import torch
from torch import nn

from hpsearch.models._registry import register_model
from hpsearch.params import Param


@register_model("lenet", params={"width": Param("int", 1, low=1, high=8, help="channel multiplier")})
def lenet(num_classes: int, in_channels: int, image_size: int, width: int = 1) -> nn.Module:
    """LeNet-5: two 5x5 conv + max-pool stages, three fully connected layers."""
    c1, c2 = 6 * width, 16 * width
    features = nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    with torch.no_grad():
        n_flat = features(torch.zeros(1, in_channels, image_size, image_size)).shape[1]
    return nn.Sequential(
        features,
        nn.Linear(n_flat, 120 * width),
        nn.ReLU(inplace=True),
        nn.Linear(120 * width, 84 * width),
        nn.ReLU(inplace=True),
        nn.Linear(84 * width, num_classes),
    )
