"""GPU-only checks (marker ``gpu``; skipped where CUDA is absent, as in CI): training on the GPU, and a
real CUDA out-of-memory trial that fails with its reason while the next trial of the same worker runs."""

from __future__ import annotations

import json

import pytest
import torch

from studies import study_text

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# two enqueued trials of a depth-56 ResNet: on 16384 images of 56x56 px it needs > 200 GB of activations
# (out of memory on any GPU), on 64 it fits
OOM_STUDY = study_text(
    name="oom", n_trials=2,
    data={"image_size": 56, "channels": 3, "num_classes": 10, "n_images": 17500, "val_size": 1000},
    train={"max_epochs": 1, "eval_every": 1.0, "device": "cuda"},
    space={"arch": "resnet", "lr": 0.05, "batch_size": [64, 16384], "optimizer": "sgd",
           "resnet": {"depth": 56, "width": 32}},
    enqueue=[{"batch_size": 16384}, {"batch_size": 64}])


def test_fit_on_cuda_learns():
    from hpsearch.data import load_dataset
    from hpsearch.data.loader import DeviceData
    from hpsearch.models import create_model
    from hpsearch.spec import DataSpec
    from hpsearch.training.device import resolve_precision
    from hpsearch.training.loop import TrainConfig, fit

    device = torch.device("cuda")
    ds = load_dataset(DataSpec("synthetic", val_size=500, image_size=32, channels=3, num_classes=10,
                               n_images=5000), seed=0)
    cfg = TrainConfig(lr=0.05, batch_size=256, weight_decay=5e-4, optimizer="sgd", label_smoothing=0.0,
                      aug_strength=0.2, max_epochs=3, precision=resolve_precision("auto", device))
    model = create_model("resnet", 10, 3, 32, depth=8, width=16).to(device, memory_format=torch.channels_last)
    result = fit(model, DeviceData(ds, device, channels_last=True), cfg)
    assert result.top1 > 30.0, result  # chance is 10%


def test_cuda_oom_fails_the_trial_and_the_next_trial_runs(write_spec, cli, tmp_path):
    spec = write_spec(OOM_STUDY)
    db = f"sqlite:///{tmp_path / 'oom.db'}"
    r = cli("run", str(spec), "--storage", db, "--artifacts", str(tmp_path / "art"), cwd=tmp_path)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    out = tmp_path / "trials.json"
    r = cli("export", "--storage", db, "--study", "oom", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["number"]: row for row in json.loads(out.read_text())}
    flat = {n: json.dumps(row) for n, row in rows.items()}
    assert rows[0]["state"] == "FAIL" and "out_of_memory at batch_size 16384" in flat[0], flat[0]
    assert rows[1]["state"] == "COMPLETE", flat[1]
