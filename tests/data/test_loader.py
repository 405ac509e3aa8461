"""The device loader and the dataset sources."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from hpsearch.data import load_dataset
from hpsearch.data.idx import read_idx, write_idx
from hpsearch.data.loader import DeviceData, batches_per_epoch, epoch_batches
from hpsearch.errors import DataError
from hpsearch.spec import DataSpec


@pytest.mark.parametrize("n,bs", [(100, 32), (97, 32), (65, 32), (10, 64), (33, 32)])
def test_every_index_once_per_epoch(n, bs):
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        batches = list(epoch_batches(n, bs, g, torch.device("cpu")))
        seen = torch.cat(batches).sort().values
        assert torch.equal(seen, torch.arange(n)), "each index exactly once"
        assert min(len(b) for b in batches) > 1 or n == 1, "no batch of one image"
        assert len(batches) == batches_per_epoch(n, bs)


def test_epochs_use_fresh_permutations():
    g = torch.Generator().manual_seed(0)
    a = torch.cat(list(epoch_batches(50, 10, g, torch.device("cpu"))))
    b = torch.cat(list(epoch_batches(50, 10, g, torch.device("cpu"))))
    assert not torch.equal(a, b)


def test_embedded_sample_is_real_fashion_mnist():
    ds = load_dataset(DataSpec("fashion-mnist-sample"), seed=0)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape[1:] == (1, 28, 28)
    assert len(ds.train_y) + len(ds.val_y) == 4500 and len(ds.val_y) == 750
    assert ds.test_x is not None and len(ds.test_y) == 500
    assert torch.bincount(torch.cat([ds.train_y, ds.val_y])).tolist() == [450] * 10
    assert "embedded" in ds.source and ds.classes[0] == "T-shirt/top"


def test_split_is_seeded_and_disjoint():
    a = load_dataset(DataSpec("synthetic", n_images=200), seed=3)
    b = load_dataset(DataSpec("synthetic", n_images=200), seed=3)
    assert torch.equal(a.val_x, b.val_x)
    assert len(a.train_y) + len(a.val_y) == 200


def test_device_data_holds_uint8_on_device():
    ds = load_dataset(DataSpec("synthetic", n_images=100, image_size=16, channels=3), seed=0)
    data = DeviceData(ds, torch.device("cpu"), channels_last=True)
    assert data.train_x.dtype == torch.uint8
    assert data.train_x.is_contiguous(memory_format=torch.channels_last)
    assert data.mean.shape == (3,) and (data.std > 0).all()


def test_idx_round_trip_and_faults(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for suffix in ("", ".gz", ".xz"):
        p = tmp_path / f"a{suffix}"
        write_idx(p, x)
        assert np.array_equal(read_idx(p), x)
    truncated = tmp_path / "t.gz"
    truncated.write_bytes(gzip.compress((tmp_path / "a").read_bytes()[:-5]))
    with pytest.raises(DataError, match="t.gz is truncated"):
        read_idx(truncated)
    junk = tmp_path / "j"
    junk.write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(junk)


def test_idx_dataset_from_a_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (60, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(60) % 10)
    monkeypatch.delenv("HPSEARCH_DATA", raising=False)
    ds = load_dataset(DataSpec("mnist", val_size=10), seed=0, data_dir=str(tmp_path))
    assert len(ds.train_y) == 50 and not ds.hflip and str(tmp_path) in ds.source


def test_missing_dataset_names_every_option(tmp_path, monkeypatch):
    monkeypatch.setenv("HPSEARCH_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path))
    from hpsearch.data import mnist

    monkeypatch.setattr(mnist, "_download", lambda name: None)  # keep the test offline and fast
    with pytest.raises(DataError) as e:
        load_dataset(DataSpec("mnist"), seed=0, data_dir=str(tmp_path / "cli"))
    msg = str(e.value)
    assert "--data-dir" in msg and "$HPSEARCH_DATA" in msg and "/usr/share/datasets/mnist" in msg
