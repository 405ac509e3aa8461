"""Fine-tuning a pretrained backbone as a user does it, by real ``hpsearch`` processes: a study of
``timm:efficientnet_lite0`` with ImageNet weights from a weights_dir (real weights: tests/conftest.py), then
``retrain`` from the same weights, ``export-model`` to ONNX, and ``predict`` through the model file and the ONNX
model (same classes). And the ways it goes wrong before anything is created, one line and exit 2 each: a weight
file that does not fit, weights that cannot be found with ``--offline``, an unknown timm name."""

from __future__ import annotations

import json

import optuna
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from hpsearch.data import load_dataset
from hpsearch.spec import DataSpec

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'hpsearch[onnx]'")

STUDY = """
[study]
name = "ft"
n_trials = 2
seed = 3

[data]
dataset = "fashion-mnist-sample"
val_size = 300

[train]
max_epochs = 1
eval_every = 1.0
pretrained = true

[space]
arch = "{arch}"
lr = 0.003
optimizer = "adamw"
batch_size = 32
image_size = 32
fraction = 0.1
backbone_lr_mult = [0.3, 1.0]
"""


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("hpsearch: error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return lines[0]


def test_run_retrain_export_and_predict_a_pretrained_backbone(cli, write_spec, tmp_path, lite0_weights_dir):
    spec = write_spec(STUDY.format(arch="timm:efficientnet_lite0"))
    db = f"sqlite:///{tmp_path / 'ft.db'}"
    r = cli("--storage", db, "run", str(spec), "--weights-dir", str(lite0_weights_dir), "--offline", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = optuna.load_study(study_name="ft", storage=db).trials
    source = f"file:{lite0_weights_dir / 'efficientnet_lite0.safetensors'}"
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert all(t.user_attrs["weights"] == source for t in trials), "each trial records where its weights came from"

    r = cli("--storage", db, "retrain", "--study", "ft", "--epochs", "1", "-o", "model.pt", "--weights-dir",
            str(lite0_weights_dir), "--offline", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    test_top1 = float(r.stderr.split("test top1 ")[1].split("%")[0])
    assert test_top1 > 50.0, "one epoch from ImageNet weights on 4,500 images (measured 71%; chance is 10%)"

    r = cli("export-model", "--model", "model.pt", "-o", "model.onnx", cwd=tmp_path)
    assert r.returncode == 0 and "top-1 agrees on 500/500" in r.stderr, r.stderr[-3000:]

    ds = load_dataset(DataSpec("fashion-mnist-sample", val_size=300), 0)
    (tmp_path / "images").mkdir()
    for i in range(12):
        Image.fromarray(ds.test_x[i, 0].numpy()).save(tmp_path / "images" / f"{i:02d}.png")
    out = {}
    for model in ("model.pt", "model.onnx"):
        r = cli("predict", "--model", model, "images", "--top-k", "1", "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        out[model] = [(p["path"], p["top"][0]["class"]) for p in json.loads(r.stdout)["predictions"]]
    assert len(out["model.pt"]) == 12 and out["model.pt"] == out["model.onnx"]
    right = sum(cls == ds.classes[int(ds.test_y[i])] for i, (_, cls) in enumerate(out["model.pt"]))
    assert right >= 6, out["model.pt"]


def test_weights_that_cannot_be_used_stop_the_run_before_anything_is_created(cli, write_spec, tmp_path,
                                                                             lite0_weights_dir):
    spec = write_spec(STUDY.format(arch="timm:efficientnet_lite0"))
    db = tmp_path / "x.db"
    env = {"HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}  # empty library caches
    broken = tmp_path / "broken"
    broken.mkdir()
    state = load_file(str(lite0_weights_dir / "efficientnet_lite0.safetensors"))
    state["conv_head.weight"] = torch.zeros(1280, 300, 1, 1)
    save_file(state, str(broken / "efficientnet_lite0.safetensors"))

    line = one_error_line(cli("--storage", f"sqlite:///{db}", "run", str(spec), "--weights-dir", str(broken),
                              cwd=tmp_path, env=env))
    assert line.endswith("do not fit timm:efficientnet_lite0: tensor 'conv_head.weight' is (1280, 300, 1, 1) there "
                         "but (1280, 320, 1, 1) in the model"), line
    line = one_error_line(cli("--storage", f"sqlite:///{db}", "run", str(spec), "--offline", cwd=tmp_path, env=env))
    assert "pretrained weights for timm:efficientnet_lite0 not found" in line and "downloads are off" in line
    line = one_error_line(cli("--storage", f"sqlite:///{db}", "run", str(write_spec(
        STUDY.format(arch="timm:efficientnet_lit0"), "typo.toml")), "--offline", cwd=tmp_path, env=env))
    assert "unknown timm model 'timm:efficientnet_lit0'; close matches: timm:efficientnet_lite0" in line
    assert not db.exists(), "nothing was created"
