"""Datasets: one module per family, all returning a :class:`Dataset` of uint8 tensors.

``load_dataset`` resolves the spec's ``[data]`` section (and ``--data-dir``) to images, holds the
validation split out of the training set with the study's seed, and never touches the test set.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from hpsearch.data.base import Dataset, as_nchw, check_readable, split
from hpsearch.data.cache import load_cache, prepare_cache
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
        n_test = max(spec.num_classes, spec.n_images // 5)  # a test split from the same distribution
        tx_, ty_ = make_synthetic(n_test, spec.image_size, spec.channels, spec.num_classes, seed, seed + 7919)
        test_x, test_y = torch.from_numpy(tx_), torch.from_numpy(ty_)
        classes = tuple(f"class_{i}" for i in range(spec.num_classes))
        hflip = True
        source = (f"synthetic ({spec.n_images} images + {n_test} test, {spec.channels}x{spec.image_size}x"
                  f"{spec.image_size}, {spec.num_classes} classes)")
    elif spec.dataset == "imagefolder":
        return load_imagefolder(spec, seed)
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


def load_imagefolder(spec: DataSpec, seed: int) -> Dataset:
    """An ImageFolder tree (decoded once into an automatic cache) or a cache made by `hpsearch data prepare`.

    When the tree has its own ``val/`` folder (ImageNet's layout), that split becomes the *test* split and
    validation is held out of ``train/`` with the study's seed, so the search never sees the test images.
    """
    root = Path(spec.root).expanduser()
    check_readable(root)  # else is_file() below raises PermissionError
    if (root / "meta.json").is_file():
        arrays = load_cache(root)
    else:
        key = hashlib.sha256(repr((str(root.resolve()), spec.image_size, spec.classes, spec.fraction, seed))
                             .encode()).hexdigest()[:16]
        out = Path.home() / ".cache" / "hpsearch" / "imagefolder" / f"{root.name}-{spec.image_size}px-{key}"
        if not (out / "meta.json").is_file():
            prepare_cache(root, out, spec.image_size, list(spec.classes) if isinstance(spec.classes, tuple)
                          else spec.classes, spec.fraction, spec.val_fraction, seed, progress=True)
        arrays = load_cache(out)
    classes = tuple(arrays["classes"])
    # copies: the cache is read-only memory-mapped, training wants the images in RAM (then on the device)
    x, y = np.array(arrays["train_images"]), np.array(arrays["train_labels"])
    vx, vy = np.array(arrays["val_images"]), np.array(arrays["val_labels"])
    test_x = test_y = None
    if not arrays["meta"].get("val_from_split", True):
        test_x, test_y = torch.from_numpy(vx), torch.from_numpy(vy.astype(np.int64))
        try:
            x, y, vx, vy = split(x, y, spec.val_fraction, spec.val_size, seed)
        except ValueError as e:
            raise DataError(f"`data.val_size`/`data.val_fraction`: {e}") from None
    return Dataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)),
                   torch.from_numpy(np.ascontiguousarray(vx)), torch.from_numpy(vy.astype(np.int64)), classes, True,
                   f"imagefolder {arrays['dir']} ({len(classes)} classes, {x.shape[-1]} px)", test_x, test_y)
