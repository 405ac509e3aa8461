"""CIFAR python batches: generated files in the real format load; a malicious pickle is refused."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from hpsearch.data import load_dataset
from hpsearch.data.cifar import safe_unpickle
from hpsearch.errors import DataError
from hpsearch.spec import DataSpec


def write_cifar10(root, n_per_batch=20):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 b"labels": list(rng.integers(0, 10, n_per_batch)), b"batch_label": name.encode()}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
    return d


def test_cifar10_batches_load(tmp_path):
    write_cifar10(tmp_path)
    ds = load_dataset(DataSpec("cifar10", val_size=10), seed=0, data_dir=str(tmp_path))
    assert ds.train_x.shape == (90, 3, 32, 32) and ds.val_x.shape[0] == 10
    assert ds.test_x.shape == (20, 3, 32, 32)
    assert ds.classes[:2] == ("c0", "c1") and ds.hflip


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refusing to load"):
        safe_unpickle(p)
    assert not (tmp_path / "pwned").exists()
