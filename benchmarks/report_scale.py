"""Report at scale: time ``hpsearch.report.write_report`` on a study of many trials with long learning curves.

    python benchmarks/report_scale.py [--quick] [--trials 10000] [--evals 20] [--sqlite PATH]

The study is synthetic (no training): trials with params arch/lr/batch_size/aug_strength, ``--evals``
intermediate Top-1 values each (or fewer when pruned: ~60% pruned, ~5% failed), user attrs as the objective
writes them, added in batches with ``study.add_trials`` into an in-memory storage (or an SQLite file with
``--sqlite``, which times reading the trials from the database too). Reported: seconds to build the study
(not part of the target), seconds for ``write_report`` (target: < 15 s at 10,000 × 20), and the file size.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import write_result  # noqa: E402

from hpsearch.report import write_report  # noqa: E402

DISTS = {"arch": CategoricalDistribution(["lenet", "vgg", "resnet"]), "lr": FloatDistribution(1e-4, 1e-1, log=True),
         "batch_size": CategoricalDistribution([32, 64, 128, 256]), "aug_strength": FloatDistribution(0.0, 1.0)}


def synthetic_trials(n: int, n_evals: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    t0 = datetime(2025, 1, 1)
    out = []
    for i in range(n):
        params = {"arch": rng.choice(DISTS["arch"].choices), "lr": 10 ** rng.uniform(-4, -1),
                  "batch_size": rng.choice(DISTS["batch_size"].choices), "aug_strength": rng.random()}
        r = rng.random()
        state = TrialState.FAIL if r < 0.05 else TrialState.PRUNED if r < 0.65 else TrialState.COMPLETE
        n_steps = n_evals if state == TrialState.COMPLETE else rng.randint(0 if state == TrialState.FAIL else 1,
                                                                           n_evals - 1)
        ceiling = rng.uniform(40, 95)
        curve = {s: ceiling * (1 - 0.7 ** s) + rng.gauss(0, 0.5) for s in range(1, n_steps + 1)}
        start = t0 + timedelta(seconds=30 * i)
        attrs = {"config": {**params, "max_epochs": n_evals}, "device": "cuda:0", "worker": f"host:{i % 8}",
                 "epochs_completed": n_steps, "wall_s": 3.0 * n_steps, "n_params": 60_000,
                 "val_top1": curve.get(n_steps), "val_top5": min(100.0, (curve.get(n_steps) or 0) + 15)}
        if state != TrialState.COMPLETE:
            attrs["reason"] = "pruned" if state == TrialState.PRUNED else "RuntimeError: boom"
        out.append(create_trial(state=state, value=curve[n_evals] if state == TrialState.COMPLETE else None,
                                params=params, distributions=DISTS, user_attrs=attrs, intermediate_values=curve))
        # create_trial stamps "now"; give the trials a believable timeline instead
        out[-1].datetime_start = start
        out[-1].datetime_complete = start + timedelta(seconds=3.0 * n_steps + 1)
    return out


def build_study(n: int, n_evals: int, storage: str | None, batch: int = 1000) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name="report_scale", direction="maximize")
    study.set_user_attr("hpsearch.spec", json.dumps({"study": {"name": "report_scale"},
                                                     "train": {"max_epochs": n_evals, "eval_every": 1.0}}))
    study.set_user_attr("hpsearch.versions", {"optuna": optuna.__version__})
    trials = synthetic_trials(n, n_evals)
    for i in range(0, n, batch):
        study.add_trials(trials[i:i + batch])
    return study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 trials (a smoke run)")
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--evals", type=int, default=20)
    ap.add_argument("--sqlite", type=Path, default=None, help="build the study in this SQLite file (replaced)")
    args = ap.parse_args()
    n = 300 if args.quick else args.trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None
    if args.sqlite:
        args.sqlite.unlink(missing_ok=True)
        storage = f"sqlite:///{args.sqlite}"
    t = time.perf_counter()
    study = build_study(n, args.evals, storage)
    build_s = time.perf_counter() - t
    if storage:  # a fresh handle, so write_report reads everything from the file
        study = optuna.load_study(study_name="report_scale", storage=storage)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = write_report(study, Path(tmp) / "report.html")
        report_s = time.perf_counter() - t
        size = path.stat().st_size
    payload = {"trials": n, "evals": args.evals, "storage": "sqlite" if storage else "memory",
               "build_s": round(build_s, 2), "write_report_s": round(report_s, 2), "html_bytes": size}
    print(f"{n} trials × {args.evals} evals ({payload['storage']}): build {build_s:.1f} s, "
          f"write_report {report_s:.2f} s, {size / 1e6:.1f} MB")
    print(f"wrote {write_result('report_scale', payload)}")


if __name__ == "__main__":
    main()
