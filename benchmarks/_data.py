"""The data a benchmark row is measured on: named, looked up with hpsearch's own readers, never downloaded, and
never silently replaced by other data (an absent dataset raises :class:`Absent`, which the scripts turn into
one line and a non-zero exit)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpsearch.data import load_dataset
from hpsearch.data.base import Dataset
from hpsearch.data.cifar import load_cifar
from hpsearch.data.mnist import SAMPLE_DIR, load_idx_dataset
from hpsearch.errors import DataError
from hpsearch.spec import DataSpec

SYNTHETIC = {"synthetic-fmnist": (1, 28), "synthetic-cifar": (3, 32)}  # name → (channels, side in px)
VAL_SIZE = 256  # images held out by load_dataset (used outside every timed window)


class Absent(Exception):
    """A named dataset that is not on this machine: the benchmark stops instead of measuring other data."""


@dataclass(frozen=True)
class Data:
    """The images one row was measured on, and where they came from."""

    name: str  # as passed to --dataset
    ds: Dataset  # train_x holds exactly the images every arm trains on
    path: str  # the folder the images were read from, or how they were made

    @property
    def label(self) -> str:
        c, h, w = self.ds.train_x.shape[1:]
        return f"{self.name} {self.ds.train_x.shape[0]:,}×{c}×{h}×{w} ({self.path})"


def load_data(name: str, n_images: int, data_dir: str | None, hint: str) -> Data:
    """The first ``n_images`` training images of ``name``: synthetic-fmnist / synthetic-cifar (generated),
    fashion-mnist-sample (embedded), fashion-mnist / mnist (IDX) or cifar10 (python batches). Absent, ending
    with ``hint`` (what to pass instead), when a named dataset is not here; with ``data_dir`` only that folder
    counts."""
    if name in SYNTHETIC:
        channels, side = SYNTHETIC[name]
        ds = load_dataset(DataSpec("synthetic", val_size=VAL_SIZE, image_size=side, channels=channels,
                                   num_classes=10, n_images=n_images + VAL_SIZE), seed=0)
        path = "generated in memory by hpsearch.data.synthetic, seed 0"
    elif name == "fashion-mnist-sample":
        ds, path = load_dataset(DataSpec(name, val_size=VAL_SIZE), seed=0), str(SAMPLE_DIR)
    else:
        # hpsearch's own lookup, without its torchvision download: a benchmark measures the data it is given
        try:
            arrays, _ = (load_cifar if name == "cifar10" else load_idx_dataset)(name, data_dir, download=False)
        except DataError as e:
            raise Absent(f"dataset {e}; or pass {hint}") from None
        path = str(arrays["dir"])
        if data_dir is not None and not Path(path).resolve().is_relative_to(Path(data_dir).expanduser().resolve()):
            raise Absent(f"dataset {name} not found in {data_dir} (with --data-dir only that folder counts; {path} "
                         f"was not used); or pass {hint}")
        ds = load_dataset(DataSpec(name, val_size=VAL_SIZE), seed=0, data_dir=path)
    n = min(n_images, ds.train_x.shape[0])
    ds = Dataset(ds.train_x[:n], ds.train_y[:n], ds.val_x, ds.val_y, ds.classes, ds.hflip, ds.source)
    return Data(name, ds, path)
