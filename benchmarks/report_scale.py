"""Report at scale: time ``hpsearch report`` (the real CLI) on a study of many trials with long learning curves.

    python benchmarks/report_scale.py [--quick] [--trials 10000] [--evals 20] [--sqlite PATH] [--memory]
                                      [--repeat 3]

The study is synthetic (no training): trials with params arch/lr/batch_size/aug_strength, ``--evals``
intermediate Top-1 values each (or fewer when pruned: ~60% pruned, ~5% failed), user attrs as the objective
writes them. It is built in an SQLite file (a real Optuna RDB storage; ``--sqlite PATH`` keeps it, default a
temporary file) by :func:`bulk_insert`, which is checked against Optuna's ``add_trials`` first. Timed: ``hpsearch report --storage sqlite:///...`` as a
subprocess (interpreter start, imports, reading every trial from the database, drawing, writing: the
target is < 15 s at 10,000 × 20), and, in this process on fresh handles, the reading of the trials
(``hpsearch.inspect.collect.read_trials``, and Optuna's ``get_trials`` for comparison) and ``write_report`` (which
reads them too). ``--memory`` instead times ``write_report`` on an in-memory
study (no database). Reported: seconds to build (not part of the target), the timings, the database and HTML
sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, FloatDistribution, distribution_to_json
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import TrialState, create_trial

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import write_result  # noqa: E402

from hpsearch.inspect.collect import read_trials  # noqa: E402
from hpsearch.inspect.report import write_report  # noqa: E402

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


def bulk_insert(storage: RDBStorage, study_id: int, trials: list) -> None:
    """Inserts finished FrozenTrials into an RDB storage in one transaction, row for row as Optuna's own
    ``add_trials`` stores them (same tables, value encodings, JSON and naive-UTC datetimes), but with one
    executemany per table instead of ~50 ORM round trips per trial: 10,000 trials in seconds, not minutes.
    :func:`check_bulk_insert` compares the two paths on every run."""
    def utc(d: datetime | None) -> datetime | None:
        return None if d is None else d.astimezone(UTC).replace(tzinfo=None)

    value_repr = models.TrialValueModel.value_to_stored_repr
    iv_repr = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr
    rows: dict[str, list[dict]] = {"trials": [], "values": [], "params": [], "attrs": [], "ivs": []}
    with storage.engine.begin() as conn:
        first_id = (conn.execute(sa.select(sa.func.max(models.TrialModel.trial_id))).scalar() or 0) + 1
        first_number = conn.execute(sa.select(sa.func.count()).select_from(models.TrialModel)
                                    .where(models.TrialModel.study_id == study_id)).scalar()
        for i, t in enumerate(trials):
            tid = first_id + i
            rows["trials"].append({"trial_id": tid, "number": first_number + i, "study_id": study_id,
                                   "state": t.state, "datetime_start": utc(t.datetime_start),
                                   "datetime_complete": utc(t.datetime_complete)})
            for objective, v in enumerate(t.values or []):
                stored, kind = value_repr(v)
                rows["values"].append({"trial_id": tid, "objective": objective, "value": stored, "value_type": kind})
            for name, v in t.params.items():
                dist = t.distributions[name]
                rows["params"].append({"trial_id": tid, "param_name": name, "param_value": dist.to_internal_repr(v),
                                       "distribution_json": distribution_to_json(dist)})
            rows["attrs"] += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in t.user_attrs.items()]
            for step, v in t.intermediate_values.items():
                stored, kind = iv_repr(v)
                rows["ivs"].append({"trial_id": tid, "step": step, "intermediate_value": stored,
                                    "intermediate_value_type": kind})
        for key, model in (("trials", models.TrialModel), ("values", models.TrialValueModel),
                           ("params", models.TrialParamModel), ("attrs", models.TrialUserAttributeModel),
                           ("ivs", models.TrialIntermediateValueModel)):
            if rows[key]:
                conn.execute(sa.insert(model.__table__), rows[key])


def new_study(storage: str | RDBStorage | None, name: str, n_evals: int) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    study.set_user_attr("hpsearch.spec", json.dumps({"study": {"name": name},
                                                     "train": {"max_epochs": n_evals, "eval_every": 1.0}}))
    study.set_user_attr("hpsearch.versions", {"optuna": optuna.__version__})
    return study


def build_study(n: int, n_evals: int, storage: str | None, batch: int = 1000) -> optuna.Study:
    """The synthetic study: in memory through ``add_trials``, or in an SQLite file through :func:`bulk_insert`."""
    trials = synthetic_trials(n, n_evals)
    if storage is None:
        study = new_study(None, "report_scale", n_evals)
        for i in range(0, n, batch):
            study.add_trials(trials[i:i + batch])
        return study
    rdb = RDBStorage(storage)
    study = new_study(rdb, "report_scale", n_evals)
    bulk_insert(rdb, study._study_id, trials)
    return optuna.load_study(study_name="report_scale", storage=storage)


def check_bulk_insert(url: str, n: int = 30, n_evals: int = 5) -> None:
    """Exits unless :func:`bulk_insert` stores the same trials as Optuna's ``add_trials`` (read back by Optuna)."""
    rdb = RDBStorage(url)
    trials = synthetic_trials(n, n_evals, seed=1)
    via_optuna, via_bulk = new_study(rdb, "check_add_trials", n_evals), new_study(rdb, "check_bulk", n_evals)
    via_optuna.add_trials(trials)
    bulk_insert(rdb, via_bulk._study_id, trials)
    fields = ("number", "state", "values", "params", "distributions", "user_attrs", "system_attrs",
              "intermediate_values", "datetime_start", "datetime_complete")
    a = optuna.load_study(study_name="check_add_trials", storage=url).get_trials()
    b = optuna.load_study(study_name="check_bulk", storage=url).get_trials()
    diff = [(x.number, f) for x, y in zip(a, b, strict=True) for f in fields if getattr(x, f) != getattr(y, f)]
    if len(a) != n or diff:
        sys.exit(f"bulk_insert differs from add_trials: {len(a)} vs {len(b)} trials, (trial, field): {diff[:5]}")
    for name in ("check_add_trials", "check_bulk"):
        optuna.delete_study(study_name=name, storage=url)


def time_cli_report(url: str, out: Path, repeat: int) -> dict[str, float]:
    """``hpsearch report`` as a fresh process (what a user waits for), ``repeat`` times: the median and best wall
    seconds, and the median CPU seconds of the process (user + system; less sensitive to a busy machine)."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "hpsearch.cli", "report", "--storage", url, "--study",
                            "report_scale", "-o", str(out)], capture_output=True, text=True,
                           env=os.environ | {"PYTHONWARNINGS": "ignore"})
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if r.returncode != 0:
            sys.exit(f"hpsearch report failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}")
    return {"cli_report_s": round(statistics.median(walls), 2), "cli_report_best_s": round(min(walls), 2),
            "cli_report_cpu_s": round(statistics.median(cpus), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 trials (a smoke run)")
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--evals", type=int, default=20)
    ap.add_argument("--sqlite", type=Path, default=None, help="build the study in this SQLite file (replaced, kept)")
    ap.add_argument("--memory", action="store_true", help="in-memory study, time write_report only")
    ap.add_argument("--repeat", type=int, default=3, help="runs of hpsearch report (median and best reported)")
    args = ap.parse_args()
    n = 300 if args.quick else args.trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        db = None if args.memory else (args.sqlite or Path(tmp) / "report_scale.db")
        url = None
        if db is not None:
            db.unlink(missing_ok=True)
            url = f"sqlite:///{db.resolve()}"
            check_bulk_insert(url)
        t = time.perf_counter()
        study = build_study(n, args.evals, url)
        build_s = time.perf_counter() - t
        payload = {"trials": n, "evals": args.evals, "storage": "sqlite" if url else "memory",
                   "build_s": round(build_s, 2)}
        if url:
            payload["db_bytes"] = db.stat().st_size
            payload |= time_cli_report(url, Path(tmp) / "cli.html", args.repeat)
            for key, read in (("read_trials_s", read_trials), ("optuna_get_trials_s",
                                                              lambda s: s.get_trials(deepcopy=False))):
                t = time.perf_counter()  # a fresh handle each time, so the trials are read from the file
                read(optuna.load_study(study_name="report_scale", storage=url))
                payload[key] = round(time.perf_counter() - t, 2)
            study = optuna.load_study(study_name="report_scale", storage=url)
        t = time.perf_counter()
        path = write_report(study, Path(tmp) / "report.html")
        payload["write_report_s"] = round(time.perf_counter() - t, 2)
        payload["html_bytes"] = path.stat().st_size
    if url:
        print(f"{n} trials × {args.evals} evals in SQLite ({payload['db_bytes'] / 1e6:.1f} MB, built in "
              f"{build_s:.1f} s): hpsearch report {payload['cli_report_s']:.2f} s (median of {args.repeat}; best "
              f"{payload['cli_report_best_s']:.2f} s, CPU {payload['cli_report_cpu_s']:.2f} s); in this process: "
              f"read_trials {payload['read_trials_s']:.2f} s (Optuna's get_trials "
              f"{payload['optuna_get_trials_s']:.2f} s), write_report incl. reading {payload['write_report_s']:.2f} s;"
              f" HTML {payload['html_bytes'] / 1e6:.1f} MB")
    else:
        print(f"{n} trials × {args.evals} evals (memory): build {build_s:.1f} s, "
              f"write_report {payload['write_report_s']:.2f} s, HTML {payload['html_bytes'] / 1e6:.1f} MB")
    print(f"wrote {write_result('report_scale', payload)}")


if __name__ == "__main__":
    main()
