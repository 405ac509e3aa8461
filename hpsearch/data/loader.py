"""The device-resident loader: the whole dataset as one uint8 tensor on the training device.

A training epoch is a seeded permutation of the indices; each batch is an index slice of it gathered
from the device tensor, so there is no per-image Python, PIL or worker process in the hot path (the
approach of airbench). Normalisation and augmentation happen afterwards, batched, in
:mod:`hpsearch.training.augment`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch

from hpsearch.data.base import Dataset


class DeviceData:
    """Training and validation images moved once to ``device``."""

    def __init__(self, ds: Dataset, device: torch.device, channels_last: bool = False):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.train_x = ds.train_x.to(device).contiguous(memory_format=fmt)  # (N, C, H, W) uint8
        self.train_y = ds.train_y.to(device)  # (N,) int64
        self.val_x = ds.val_x.to(device).contiguous(memory_format=fmt)
        self.val_y = ds.val_y.to(device)
        self.device = device
        self.num_classes = ds.num_classes
        self.hflip = ds.hflip
        mean, std = ds.channel_stats()
        self.mean, self.std = mean.to(device), std.to(device)

    @property
    def n_train(self) -> int:
        return self.train_x.shape[0]

    def scaled_to_unit(self) -> DeviceData:
        """The same device tensors, normalised by plain scaling to [0, 1] (mean 0, std 1): what a model that
        normalises its input itself takes (hpsearch.models.AdaptedNet). A shallow copy: nothing moves."""
        view = copy.copy(self)
        view.mean, view.std = torch.zeros_like(self.mean), torch.ones_like(self.std)
        return view


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """Index tensors covering a fresh permutation of range(n): every index exactly once per epoch.

    A final batch of a single image is merged into the one before it, so BatchNorm never sees a batch of one.
    """
    perm = torch.randperm(n, generator=generator).to(device)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else n
        yield perm[start:stop]


def batches_per_epoch(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)
