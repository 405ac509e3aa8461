"""What a shorter schedule gives up: the best configurations of a search-value run, retrained with fewer epochs.

Step 4 of issue 21 asks whether a shorter schedule for early configurations would bring the first good result
sooner than one full training. This takes the best complete configuration of every (arm, seed) in a
``search_value.py`` result JSON and trains it again in a study of its own (that configuration enqueued, random
sampler, no pruner, one trial) for each ``--epochs`` value, with the study's schedule (one-cycle) fitted to the
shorter run. ``--control ARM:SEED`` also retrains that pair at the study's own epochs: where the source trial was
the arm's trial 0 it must give the source run's value (the check that this harness reproduces the benchmark).

Each study keeps the source run's seed, so the train/validation split is the source's; the retrained trial is
trial 0 of its study, so its initialisation and batch order are the source's only where the source trial was an
arm's trial 0 (elsewhere they are another draw of the same configuration). Jobs run two at a time, one thread each,
as the search-value arms do. ``--quick`` is a smoke run: one fixed configuration on the embedded sample, at 1 epoch
and (the control) at 2.

    python benchmarks/short_schedule.py benchmarks/results/cpu/search_value.X.json --epochs 3,4 \
        --control random:100
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from _common import (
    OneLineParser,
    csv_list,
    how_run,
    positive_int,
    side_by_side,
    threads_per_arm,
    write_result,
)
from search_value import STUDY, drop_enqueued, run_study, set_keys

from hpsearch import load_spec
from hpsearch.errors import toml_literal

BUDGET_S = 3600.0  # a ceiling per job, not a budget: every job is one training
# --quick: a configuration of the shipped space that trains in seconds on the embedded sample
QUICK_PARAMS = {"arch": "vgg", "lr": 0.05, "batch_size": 128, "weight_decay": 5e-4, "label_smoothing": 0.1,
                "aug_strength": 0.1, "vgg.stages": 2, "vgg.width": 16}


def best_trials(source: dict) -> list[tuple[str, int, dict]]:
    """(arm, seed, best complete trial) of every run in a search_value result."""
    out = []
    for r in source["runs"]:
        done = [t for t in r["trials"] if t["state"] == "COMPLETE" and t["value"] is not None]
        if done:
            out.append((r["arm"], r["seed"], max(done, key=lambda t: t["value"])))
    return out


def enqueue_table(params: dict) -> str:
    """``[[enqueue]]`` for a trial's params (``arch.key`` params go into the architecture's inline table)."""
    arch = params["arch"]
    lines = ["[[enqueue]]", *(f"{k} = {toml_literal(v)}" for k, v in params.items() if "." not in k)]
    sub = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(arch + ".")}
    if sub:
        lines.append(f"{arch} = {{ " + ", ".join(f"{k} = {toml_literal(v)}" for k, v in sub.items()) + " }")
    return "\n".join(lines) + "\n"


def study_text(study_source: str, params: dict, epochs: int) -> str:
    """The study file of one retraining: ``params`` enqueued, ``epochs`` epochs, random sampler, no pruner."""
    text = set_keys(drop_enqueued(study_source), "train", {"max_epochs": str(epochs)})
    text = set_keys(text, "sampler", {"name": '"random"'}, drop_others=True)
    text = set_keys(text, "pruner", {"name": '"none"'}, drop_others=True)
    return text + "\n" + enqueue_table(params)


def plan(source: dict, full: int, epochs: list[int], controls: set[tuple[str, int]], arms: list[str] | None
         ) -> list[dict]:
    jobs = []
    for arm, seed, trial in best_trials(source):
        if arms and arm not in arms:
            continue
        for ep in ([full] if (arm, seed) in controls else []) + epochs:
            jobs.append({"arm": arm, "seed": seed, "trial": trial["number"], "epochs": ep, "params": trial["params"],
                         "source_value": trial["value"], "source_epochs": full})
    return jobs


def main() -> None:
    ap = OneLineParser("short_schedule", description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, nargs="?", help="a search_value.py result JSON (not with --quick)")
    ap.add_argument("--epochs", type=csv_list(positive_int, what="of integers ≥ 1"), default=[3, 4],
                    help="shorter schedules to try (default 3,4)")
    ap.add_argument("--control", action="append", default=[], metavar="ARM:SEED",
                    help="also retrain this pair's best at the study's own epochs (repeatable)")
    ap.add_argument("--arms", type=csv_list(str), default=None, help="only these arms of the source (default: all)")
    ap.add_argument("--study", type=Path, default=STUDY, help="the study file the source run started from")
    ap.add_argument("--quick", action="store_true", help="smoke run: the embedded sample, 1 epoch and 2")
    args = ap.parse_args()
    if not args.study.is_file():
        ap.error(f"--study {args.study}: no such file")
    study_source = args.study.read_text()
    if args.quick:
        if args.source:
            ap.error("--quick takes no source: it retrains one fixed configuration")
        study_source = set_keys(study_source, "data", {"dataset": '"fashion-mnist-sample"', "val_size": "500"})
        full, jobs = 2, [{"arm": "quick", "seed": 0, "trial": None, "epochs": ep, "params": QUICK_PARAMS,
                          "source_value": None, "source_epochs": 2} for ep in (2, 1)]
        source = {"dataset": "fashion-mnist-sample"}
    else:
        if not args.source or not args.source.is_file():
            ap.error(f"source {args.source}: no such file" if args.source else "a search_value.py result JSON "
                     "is needed (or --quick)")
        try:
            controls = {(a, int(s)) for a, s in (c.split(":", 1) for c in args.control)}
        except ValueError:
            ap.error(f"`--control` is {args.control}, but each must be ARM:SEED, as random:100")
        full = load_spec(args.study).train.max_epochs
        try:
            source = json.loads(args.source.read_text())
            jobs = plan(source, full, list(args.epochs), controls, args.arms)
        except (ValueError, KeyError, TypeError) as e:
            ap.error(f"source {args.source}: not a search_value.py result JSON ({type(e).__name__}: {e})")
        if not jobs:
            ap.error(f"source {args.source}: no complete trial of the arms asked for")
    threads = threads_per_arm(2)
    print(f"{len(jobs)} trainings, {how_run(2, threads)}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="short_schedule-") as tmp:

        def run(job: dict) -> dict:
            work = Path(tmp) / f"{job['arm']}-{job['seed']}-e{job['epochs']}"
            work.mkdir()
            path = work / "study.toml"
            path.write_text(study_text(study_source, job["params"], job["epochs"]))
            r = run_study(path, work, job["seed"], BUDGET_S, "cpu", threads, extra=("--n-trials", "1"))
            t = r["trials"][0] if r["trials"] else {}
            return {**job, "value": t.get("value"), "state": t.get("state"), "train_s": t.get("wall_s"),
                    "epochs_completed": t.get("epochs")}

        for _, row in side_by_side(jobs, 2, run):
            rows.append(row)
            source_note = "" if row["source_value"] is None else \
                f" (trial {row['trial']} of the source run, at {full} epochs: {row['source_value']}%)"
            print(f"  {row['arm']} seed {row['seed']} at {row['epochs']} epochs: {row['value']}% in {row['train_s']} s"
                  + source_note, flush=True)
    path = write_result("short_schedule", {
        "source": str(args.source) if args.source else None, "source_commit": source.get("commit"),
        "source_machine": source.get("machine"), "dataset": source.get("dataset"), "threads_per_job": threads,
        "study": str(args.study), "quick": args.quick,
        "command": " ".join(["python", "benchmarks/short_schedule.py", *sys.argv[1:]]), "runs": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
