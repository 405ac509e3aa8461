"""The in-memory dataset every loader returns, and the seeded train/validation split."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hpsearch.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """Images as uint8 tensors on the CPU: ``(N, C, H, W)``, labels int64 ``(N,)``."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: tuple[str, ...]
    hflip: bool  # mirroring keeps the label (clothes yes, digits no)
    source: str  # where the images came from, for logs and the study's user attributes
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return min(self.train_x.shape[2], self.train_x.shape[3])

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images, in [0, 1] units: two (C,) float tensors."""
        x = self.train_x[:20000].float().div_(255.0)
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)


def check_readable(folder: Path) -> None:
    """DataError if ``folder`` exists but this process may not look inside it; a missing folder passes (the
    caller reports what it looked for). Without this, ``Path.is_file`` hides "permission denied" as "not
    there", and a dataset folder the worker's user cannot read reads as a dataset that is missing."""
    try:
        mode = folder.stat().st_mode
    except PermissionError:
        raise DataError(f"{folder}: permission denied; the user running hpsearch (uid {os.geteuid()}) cannot "
                        "reach it: make its parent folders searchable (chmod a+x)") from None
    except (OSError, ValueError):
        return
    if stat.S_ISDIR(mode) and not os.access(folder, os.R_OK | os.X_OK):
        raise DataError(f"{folder}: permission denied; the user running hpsearch (uid {os.geteuid()}) cannot list "
                        "it: make it readable (chmod -R a+rX)")


def split(x: np.ndarray, y: np.ndarray, val_fraction: float, val_size: int | None, seed: int):
    """Holds a seeded random ``val_size`` (or ``val_fraction``) of (x, y) out for validation."""
    n = len(y)
    n_val = val_size if val_size is not None else round(n * val_fraction)
    if not 1 <= n_val < n:
        raise ValueError(f"validation size is {n_val}, but the training set has {n} images")
    perm = np.random.default_rng(seed).permutation(n)
    val, train = perm[:n_val], perm[n_val:]
    return x[train], y[train], x[val], y[val]


def as_nchw(x: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 → (N, C, H, W) contiguous uint8 tensor."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.array(x, copy=True, order="C"))
