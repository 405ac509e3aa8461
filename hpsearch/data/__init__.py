"""Datasets: one module per family, all returning a :class:`Dataset` of uint8 tensors.

``load_dataset`` resolves the spec's ``[data]`` section (and ``--data-dir``) to images, holds the
validation split out of the training set with the study's seed, and never touches the test set.
"""

from __future__ import annotations

import numpy as np
import torch

from hpsearch.data.base import Dataset, as_nchw, split
from hpsearch.data.cifar import load_cifar
from hpsearch.data.mnist import DIGITS, FASHION_CLASSES, load_idx_dataset, load_sample
from hpsearch.data.synthetic import make_synthetic
from hpsearch.errors import DataError
from hpsearch.spec import DataSpec

__all__ = ["Dataset", "load_dataset"]


def load_dataset(spec: DataSpec, seed: int, data_dir: str | None = None) -> Dataset:
    """Loads the dataset named in ``spec``; ``data_dir`` (the CLI's ``--data-dir``) overrides ``spec.root``."""
    root = data_dir or spec.root
    test_x = test_y = None
    if spec.dataset == "synthetic":
        x, y = make_synthetic(spec.n_images, spec.image_size, spec.channels, spec.num_classes, seed)
        x = x.transpose(0, 2, 3, 1)  # as_nchw expects channels last for 4-D input
        classes = tuple(f"class_{i}" for i in range(spec.num_classes))
        hflip = True
        source = (f"synthetic ({spec.n_images} images, {spec.channels}x{spec.image_size}x{spec.image_size}, "
                  f"{spec.num_classes} classes)")
    elif spec.dataset in ("cifar10", "cifar100"):
        arrays, source = load_cifar(spec.dataset, root)
        x, y = arrays["train_images"], arrays["train_labels"]
        test_x, test_y = _test_split(arrays)
        classes, hflip = arrays["classes"], True
    else:
        if spec.dataset == "fashion-mnist-sample":
            arrays, source = load_sample()
        else:
            arrays, source = load_idx_dataset(spec.dataset, root)
        x, y = arrays["train_images"], arrays["train_labels"].astype(np.int64)
        test_x, test_y = _test_split(arrays)
        classes = DIGITS if spec.dataset == "mnist" else FASHION_CLASSES
        hflip = spec.dataset != "mnist"
    try:
        tx, ty, vx, vy = split(x, y, spec.val_fraction, spec.val_size, seed)
    except ValueError as e:
        raise DataError(f"`data.val_size`/`data.val_fraction`: {e}") from None
    return Dataset(as_nchw(tx), torch.from_numpy(ty.copy()), as_nchw(vx), torch.from_numpy(vy.copy()), classes, hflip, source,
                   test_x, test_y)


def _test_split(arrays: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if "test_images" not in arrays or "test_labels" not in arrays:
        return None, None
    return as_nchw(arrays["test_images"]), torch.from_numpy(arrays["test_labels"].astype(np.int64))
