"""Per-trial fidelities: a fraction of the training images and a lower image resolution.

Proxy searches (fewer images, smaller images, fewer epochs) are how ImageNet-scale tuning stays
affordable. ``fraction`` keeps a seeded subset of the training images (the same subset for every trial
with that fraction, nested across fractions); ``image_size`` resizes training and validation images once,
on the device (antialiased bilinear). The most recent view is cached, so consecutive trials with the same
fidelity pay nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpsearch.data.base import Dataset


def resize_uint8(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) uint8 → (N, C, size, size) uint8, in chunks to bound memory."""
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], 4096):
        xb = x[i : i + 4096].float()
        out[i : i + 4096] = F.interpolate(xb, size=(size, size), mode="bilinear", antialias=True,
                                          align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
    return out


def apply_fidelity(ds: Dataset, fraction: float, image_size: int, seed: int) -> Dataset:
    """The dataset a trial trains on; ``ds`` itself when both fidelities are at their defaults."""
    native = ds.image_size
    if fraction >= 1.0 and image_size in (0, native):
        return ds
    train_x, train_y = ds.train_x, ds.train_y
    if fraction < 1.0:
        keep = max(ds.num_classes, round(fraction * len(train_y)))
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))[:keep]
        train_x, train_y = train_x[order], train_y[order]
    val_x = ds.val_x
    if image_size not in (0, native):
        train_x, val_x = resize_uint8(train_x, image_size), resize_uint8(val_x, image_size)
    return Dataset(train_x, train_y, val_x, ds.val_y, ds.classes, ds.hflip, ds.source, ds.test_x, ds.test_y)
