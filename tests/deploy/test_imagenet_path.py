"""The ImageNet workflow through the CLI on a generated ImageFolder tree: prepare the cache, run a proxy
study on it, retrain the best trial, test it on the tree's own val/ split, and predict new images."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from hpsearch.data.base import Dataset
from hpsearch.data.fidelity import apply_fidelity
from studies import study_text

pytestmark = pytest.mark.slow
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def make_tree(root, per_class=24, val_per_class=6):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for name, rgb in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(rng.normal(0, 40, (40, 48, 3)) + np.array(rgb), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "train" / "red" / "README.txt").write_text("not an image")


def proxy_study(cache) -> str:
    """Two trials on the prepared cache: all of it, or half of its training images (the fidelity)."""
    return study_text(name="proxy", n_trials=2,
                      data={"dataset": "imagefolder", "root": str(cache), "val_size": 12},
                      train={"max_epochs": 2, "eval_every": 1.0}, sampler={"name": "tpe"},
                      space={"lr": 0.003, "batch_size": 16, "fraction": [0.5, 1.0]})


def test_prepare_study_retrain_predict(tmp_path, write_spec, cli):
    tree, cache, db = tmp_path / "tree", tmp_path / "cache", f"sqlite:///{tmp_path / 'db.sqlite'}"
    make_tree(tree)
    r = cli("data", "prepare", "imagefolder", str(tree), "--size", "32", "--out", str(cache), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "72 train + 18 val images of 3 classes at 32 px" in r.stdout

    r = cli("run", str(write_spec(proxy_study(cache))), "--storage", db, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="proxy", storage=db)
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)

    model = tmp_path / "proxy.hpsm"
    r = cli("retrain", "--storage", db, "--study", "proxy", "--epochs", "6", "-o", str(model), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "testing on 18" in r.stderr, "the tree's val/ split is the test set"

    r = cli("predict", "--model", str(model), str(tree / "val"), "--json", "--top-k", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    preds = json.loads(r.stdout)["predictions"]
    assert len(preds) == 18
    hits = sum(p["top"][0]["class"] in p["path"].split("/")[-2] for p in preds)
    assert hits >= 15, f"{hits}/18 colours recognised"


def test_fidelity_fraction_and_resolution():
    x = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(100) % 4
    ds = Dataset(x, y, x[:10], y[:10], ("a", "b", "c", "d"), True, "test")
    assert apply_fidelity(ds, 1.0, 0, 0) is ds
    half = apply_fidelity(ds, 0.5, 16, 0)
    assert half.train_x.shape == (50, 3, 16, 16) and half.val_x.shape == (10, 3, 16, 16)
    assert torch.equal(apply_fidelity(ds, 0.5, 0, 0).train_y, half.train_y), "the same subset for a seed"
    flat = Dataset(torch.full((4, 1, 32, 32), 77, dtype=torch.uint8), y[:4], x[:1, :1], y[:1], ("a",), True, "t")
    assert apply_fidelity(flat, 1.0, 8, 0).train_x.eq(77).all(), "resizing keeps a flat image's value"
