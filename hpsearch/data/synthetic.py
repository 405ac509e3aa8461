"""Procedurally generated class-conditional images, learnable but not trivial, of any size and shape.

Each class has a smooth random template (low-frequency noise, upsampled). An image is its class template,
randomly shifted by up to a quarter of the side, with a random contrast, plus smooth distractor noise from
another class's template and pixel noise. Linear models do poorly; small CNNs learn it within an epoch
or two. Deterministic for a given seed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def make_synthetic(n: int, size: int, channels: int, num_classes: int, seed: int,
                   sample_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``n`` images (N, C, H, W) uint8 and labels (N,) int64, balanced over classes.

    The class templates depend on ``seed`` only; the samples on ``sample_seed`` (default: ``seed``), so a
    test split drawn with another sample seed comes from the same distribution.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = max(2, size // 6)
    templates = F.interpolate(torch.randn(num_classes, channels, coarse, coarse, generator=g), size=(size, size),
                              mode="bicubic", align_corners=False)  # (K, C, H, W)
    templates = templates / templates.flatten(1).std(1).view(-1, 1, 1, 1)
    g = torch.Generator().manual_seed(seed if sample_seed is None else sample_seed)
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=g)]
    out = torch.empty(n, channels, size, size, dtype=torch.uint8)
    max_shift = max(1, size // 4)
    for start in range(0, n, 4096):
        yb = y[start : start + 4096]
        b = len(yb)
        img = templates[yb]
        dx = torch.randint(-max_shift, max_shift + 1, (b,), generator=g)
        dy = torch.randint(-max_shift, max_shift + 1, (b,), generator=g)
        idx = torch.arange(size)
        rows = (idx[None, :] - dy[:, None]) % size  # (B, H): circular shift per image
        cols = (idx[None, :] - dx[:, None]) % size
        img = img[torch.arange(b)[:, None, None, None], torch.arange(channels)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
        distractor = templates[torch.randint(0, num_classes, (b,), generator=g)].flip(2, 3)
        contrast = 0.6 + 0.8 * torch.rand(b, 1, 1, 1, generator=g)
        img = contrast * img + 0.7 * distractor + 0.6 * torch.randn(img.shape, generator=g)
        out[start : start + b] = (128 + 40 * img).clamp(0, 255).to(torch.uint8)
    return out.numpy(), y.numpy().astype(np.int64)
