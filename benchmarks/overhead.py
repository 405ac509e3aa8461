"""Platform overhead: one trial through ``hpsearch run`` (SQLite, checkpoints and artifacts on) versus the bare
training function with the same configuration.

    python benchmarks/overhead.py [--quick] [--repeats 3] [--epochs 2]

Both arms run as fresh processes, alternately, on the same data (Debian's Fashion-MNIST if installed, else
the embedded sample) with the warm-start configuration that ``studies/fashion_mnist.toml`` offers
(commented out there):

(a) bare: ``load_dataset`` → ``DeviceData`` → ``create_model`` → ``hpsearch.training.loop.fit``, timed from model
    creation to the end of ``fit`` (no Optuna, no storage, no checkpoints);
(b) hpsearch: ``hpsearch run`` on a one-trial study file with that fixed space, a fresh SQLite file and
    artifact folder; the trial's own duration (``datetime_complete - datetime_start`` in the storage) covers
    sampling, reporting every eval point, the pruner, a checkpoint per epoch and the inspection artifacts.

The headline is the median trial time of (b) over the median fit time of (a), minus 1. The whole-process
times (imports, data loading, study creation) are printed too, as a one-off cost per ``hpsearch run``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_result  # noqa: E402

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
CONFIG = {"arch": "vgg", "lr": 0.05, "batch_size": 128, "weight_decay": 5e-4, "optimizer": "sgd",
          "label_smoothing": 0.1, "aug_strength": 0.1, "vgg": {"stages": 3, "width": 16}}

STUDY = """
[study]
name = "overhead"
seed = 0
n_trials = 1

[data]
dataset = "{dataset}"
val_size = {val_size}

[train]
max_epochs = {epochs}
eval_every = 0.5
device = "cpu"
precision = "fp32"

[sampler]
name = "random"

[pruner]
name = "median"

[space]
arch = "vgg"
lr = 0.05
batch_size = 128
weight_decay = 5e-4
optimizer = "sgd"
label_smoothing = 0.1
aug_strength = 0.1

[space.vgg]
stages = 3
width = 16
"""


def bare(dataset: str, val_size: int, epochs: int) -> None:
    """The (a) arm, run in its own process: prints the fit time as JSON."""
    import torch

    from hpsearch.data import load_dataset
    from hpsearch.data.loader import DeviceData
    from hpsearch.models import create_model
    from hpsearch.spec import DataSpec
    from hpsearch.training.loop import TrainConfig, fit

    t_proc = time.perf_counter()
    ds = load_dataset(DataSpec(dataset, val_size=val_size), seed=0)
    data = DeviceData(ds, torch.device("cpu"), channels_last=True)
    cfg = TrainConfig(lr=CONFIG["lr"], batch_size=CONFIG["batch_size"], weight_decay=CONFIG["weight_decay"],
                      optimizer=CONFIG["optimizer"], label_smoothing=CONFIG["label_smoothing"],
                      aug_strength=CONFIG["aug_strength"], max_epochs=epochs, eval_every=0.5, seed=0)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = create_model("vgg", ds.num_classes, ds.in_channels, ds.image_size, **CONFIG["vgg"])
    model = model.to(memory_format=torch.channels_last)
    result = fit(model, data, cfg)
    t1 = time.perf_counter()
    print(json.dumps({"fit_s": t1 - t0, "setup_s": t0 - t_proc, "top1": result.top1}))


def run_hpsearch(dataset: str, val_size: int, epochs: int) -> dict:
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "overhead.toml"
        spec.write_text(STUDY.format(dataset=dataset, val_size=val_size, epochs=epochs))
        url = f"sqlite:///{tmp}/overhead.db"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "hpsearch.cli", "run", str(spec), "--storage", url,
                            "--artifacts", f"{tmp}/artifacts"], capture_output=True, text=True, cwd=tmp)
        process_s = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"hpsearch run failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        t = optuna.load_study(study_name="overhead", storage=url).trials[0]
        return {"trial_s": (t.datetime_complete - t.datetime_start).total_seconds(), "process_s": process_s,
                "top1": t.value, "state": t.state.name}


def run_bare(dataset: str, val_size: int, epochs: int) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, __file__, "--bare", dataset, str(val_size), str(epochs)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"bare arm failed: {r.stderr.strip()[-500:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out | {"process_s": time.perf_counter() - t0}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--bare":
        bare(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the embedded sample, one epoch, one repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    if args.quick or not DEBIAN.is_dir():
        dataset, val_size = "fashion-mnist-sample", 500
    else:
        dataset, val_size = "fashion-mnist", 10000
    epochs, repeats = (1, 1) if args.quick else (args.epochs, args.repeats)
    bare_runs, hp_runs = [], []
    for i in range(repeats):
        bare_runs.append(run_bare(dataset, val_size, epochs))
        hp_runs.append(run_hpsearch(dataset, val_size, epochs))
        print(f"repeat {i + 1}: bare fit {bare_runs[-1]['fit_s']:.2f} s   hpsearch trial {hp_runs[-1]['trial_s']:.2f} s"
              f"   (processes {bare_runs[-1]['process_s']:.1f} s / {hp_runs[-1]['process_s']:.1f} s)", flush=True)
    fit_s = median([r["fit_s"] for r in bare_runs])
    trial_s = median([r["trial_s"] for r in hp_runs])
    overhead = trial_s / fit_s - 1
    summary = {"dataset": dataset, "epochs": epochs, "repeats": repeats, "config": CONFIG,
               "bare_fit_s": fit_s, "hpsearch_trial_s": trial_s, "overhead": overhead,
               "bare_process_s": median([r["process_s"] for r in bare_runs]),
               "hpsearch_process_s": median([r["process_s"] for r in hp_runs]),
               "goal": "overhead <= 5%", "met": overhead <= 0.05, "bare_runs": bare_runs, "hpsearch_runs": hp_runs}
    print(f"overhead: hpsearch trial {trial_s:.2f} s vs bare fit {fit_s:.2f} s = {overhead:+.1%} "
          f"(goal <= 5%: {'met' if summary['met'] else 'not met'}); whole processes "
          f"{summary['hpsearch_process_s']:.1f} s vs {summary['bare_process_s']:.1f} s")
    print(f"wrote {write_result('overhead', summary)}")


if __name__ == "__main__":
    main()
