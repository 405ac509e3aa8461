"""retrain → model file → predict, end to end through the CLI; model files never execute code on load."""

from __future__ import annotations

import json
import os
import pickle

import optuna
import pytest
import torch
from PIL import Image

from hpsearch.data import load_dataset
from hpsearch.deploy.modelfile import load_model
from hpsearch.errors import HpsearchError
from hpsearch.spec import DataSpec
from studies import study_text

pytestmark = pytest.mark.slow

# hpsearch's default sampler and pruner (TPE, median); with one trial neither changes anything
TINY = study_text(name="tiny", n_trials=1, data={"num_classes": 4, "n_images": 400},
                  train={"max_epochs": 2, "eval_every": 1.0}, sampler={"name": "tpe"},
                  pruner={"name": "median"}, space={"lr": 0.003})


def test_retrain_then_predict(tmp_path, write_spec, cli):
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    r = cli("run", str(write_spec(TINY)), "--storage", db, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    model_file = tmp_path / "tiny.hpsm"
    r = cli("retrain", "--storage", db, "--study", "tiny", "--epochs", "8", "-o", str(model_file), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test top1" in r.stderr

    model, meta = load_model(model_file)
    assert meta["arch"] == "lenet" and meta["image_size"] == 28 and meta["in_channels"] == 1
    assert len(meta["classes"]) == 4 and 0 <= meta["test_top1"] <= 100 and meta["test_top5"] == 100.0
    attrs = optuna.load_study(study_name="tiny", storage=db).user_attrs["hpsearch.retrain"]
    assert attrs["test_top1"] == meta["test_top1"] and attrs["trial"] == 0

    # training images, written as PNG files, come back with their labels
    ds = load_dataset(DataSpec("synthetic", image_size=28, channels=1, num_classes=4, n_images=400), seed=0)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    labels = {}
    for i in range(24):
        path = img_dir / f"img{i:02d}.png"
        Image.fromarray(ds.train_x[i, 0].numpy(), mode="L").save(path)
        labels[str(path)] = meta["classes"][int(ds.train_y[i])]
    (img_dir / "notes.txt").write_text("not an image")
    (img_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = cli("predict", "--model", str(model_file), str(img_dir), "--top-k", "3", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [s.endswith("broken.png") for s in out["skipped"]] == [True], "the unreadable file is reported"
    assert "broken.png" in r.stderr
    preds = {p["path"]: p["top"] for p in out["predictions"]}
    assert len(preds) == 24 and all(len(t) == 3 for t in preds.values())
    hits = sum(preds[p][0]["class"] == label for p, label in labels.items())
    assert hits >= 20, f"{hits}/24 training images classified as their label"

    one = next(iter(labels))
    plain = cli("predict", "--model", str(model_file), one, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith(f"{one}: ") and plain.stdout.count("class_") == 4



class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-model",))


def test_malicious_model_file_is_refused_without_running_it(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hpsearch-model", "version": 1, "meta": "{}", "state_dict": Evil()}, evil)
    with pytest.raises(HpsearchError, match="not an hpsearch model file"):
        load_model(evil)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Evil()))
    r = cli("predict", "--model", str(raw), str(tmp_path), cwd=tmp_path)
    assert r.returncode == 1 and "not an hpsearch model file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pwned-by-model").exists(), "nothing was executed"


def test_foreign_files_are_refused(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(HpsearchError, match="not an hpsearch model file"):
        load_model(junk)
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, foreign)
    with pytest.raises(HpsearchError, match="no 'hpsearch-model' tag"):
        load_model(foreign)
    with pytest.raises(HpsearchError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
