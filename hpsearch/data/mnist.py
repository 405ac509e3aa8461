"""Fashion-MNIST and MNIST from their IDX files, and the embedded Fashion-MNIST sample.

Files are looked for, in order, in: ``--data-dir`` / the spec's ``root``, ``$HPSEARCH_DATA``, Debian's
``/usr/share/datasets/<name>`` (package ``dataset-fashion-mnist``), then torchvision's download into
``~/.cache/hpsearch``. Each directory may hold the files directly or in torchvision's ``<Class>/raw``
layout, raw or gzip-compressed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hpsearch.data.base import check_readable
from hpsearch.data.idx import read_idx
from hpsearch.errors import DataError

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGITS = tuple(str(i) for i in range(10))
TV_CLASS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
SAMPLE_DIR = Path(__file__).resolve().parent / "_sample"
FILES = {"train": "train-{}-idx{}-ubyte", "test": "t10k-{}-idx{}-ubyte"}


def _find(directory: Path, stem: str) -> Path | None:
    for sub in ("", "raw", f"{TV_CLASS.get(directory.name, '')}/raw"):
        for suffix in ("", ".gz", ".xz"):
            p = directory / sub / (stem + suffix)
            if p.is_file():
                return p
    return None


def _candidates(name: str, root: str | None) -> list[Path]:
    dirs: list[Path] = []
    for base in (root, os.environ.get("HPSEARCH_DATA")):
        if base:
            b = Path(base).expanduser()
            dirs += [b, b / name, b / TV_CLASS[name]]
    dirs.append(Path("/usr/share/datasets") / name)
    dirs.append(Path.home() / ".cache" / "hpsearch" / TV_CLASS[name])
    return dirs


def _read_dir(directory: Path) -> dict[str, np.ndarray] | None:
    stems = {f"{split}_{kind}": FILES[split].format(kind, 3 if kind == "images" else 1)
             for split in FILES for kind in ("images", "labels")}
    paths = {k: _find(directory, s) for k, s in stems.items()}
    if paths["train_images"] is None or paths["train_labels"] is None:
        return None
    arrays = {k: read_idx(p) for k, p in paths.items() if p is not None}
    for k, a in arrays.items():
        if k.endswith("_images") and (a.ndim != 3 or 0 in a.shape[1:]):
            raise DataError(f"{paths[k]} holds an array of shape {a.shape}, but images must be (N, H, W) with H, W ≥ 1")
        if k.endswith("_labels") and a.ndim != 1:
            raise DataError(f"{paths[k]} holds an array of shape {a.shape}, but labels must be (N,)")
    if "test_images" in arrays and arrays["test_images"].shape[1:] != arrays["train_images"].shape[1:]:
        raise DataError(f"{paths['test_images']} holds images of {arrays['test_images'].shape[1:]} px, but "
                        f"{paths['train_images']} holds {arrays['train_images'].shape[1:]} px")
    for split in ("train", "test"):
        x, y = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if x is not None and y is not None and len(x) != len(y):
            raise DataError(f"{paths[f'{split}_images']} holds {len(x)} images, but "
                            f"{paths[f'{split}_labels']} holds {len(y)} labels")
        if y is not None and y.size and int(y.max()) >= 10:
            raise DataError(f"{paths[f'{split}_labels']} has label {int(y.max())}, but there are 10 classes")
    arrays["dir"] = directory
    return arrays


def _download(name: str) -> Path | None:
    target = Path.home() / ".cache" / "hpsearch"
    try:
        import torchvision.datasets as tvd

        getattr(tvd, TV_CLASS[name])(str(target), train=True, download=True)
        getattr(tvd, TV_CLASS[name])(str(target), train=False, download=True)
    except Exception:  # no network, a proxy, a broken mirror: the caller reports every option at once
        return None
    return target / TV_CLASS[name]


def load_idx_dataset(name: str, root: str | None, download: bool = True) -> tuple[dict, str]:
    """Finds and reads ``name`` ("fashion-mnist" or "mnist"); returns (arrays, source description)."""
    tried = []
    for d in _candidates(name, root):
        tried.append(str(d))
        check_readable(d)
        if d.is_dir():
            arrays = _read_dir(d)
            if arrays is not None:
                return arrays, f"{name} from {arrays['dir']}"
    if download:
        d = _download(name)
        if d is not None and (arrays := _read_dir(d)) is not None:
            return arrays, f"{name} downloaded to {d}"
    raise DataError(
        f"{name} not found: looked in {', '.join(tried)}; pass --data-dir DIR or set $HPSEARCH_DATA to a folder "
        f"with the IDX files, or install Debian's dataset-fashion-mnist"
        + ("; torchvision's download failed too" if download else "")
    )


def load_sample() -> tuple[dict, str]:
    """The embedded Fashion-MNIST sample: 4,500 training and 500 test images shipped in the package."""
    arrays = _read_dir(SAMPLE_DIR)
    if arrays is None:
        raise DataError(f"the embedded sample is missing from {SAMPLE_DIR}; reinstall hpsearch")
    return arrays, "embedded Fashion-MNIST sample (4,500 train + 500 test real images, shipped in the package)"
