"""Search efficiency at equal budget: best validation Top-1 against wall-clock time, three arms side by side.

    python benchmarks/search_efficiency.py [--quick] [--budget-min 12] [--seeds 0,1]
                                           [--arms hpsearch,handwritten,random]

Every arm gets the same wall-clock budget on real Fashion-MNIST (Debian's files; 50,000 training / 10,000
validation images held out of the training set with the seed, test set untouched):

(hpsearch)     ``hpsearch run studies/fashion_mnist.toml`` with its defaults (TPE, median pruner, the enqueued
               warm-start configuration, checkpoints), a fresh SQLite file and ``--seed``;
(handwritten)  ``handwritten_baseline.py``: plain Optuna TPE + MedianPruner, per-epoch reports, torchvision
               DataLoader with PIL transforms, the same search space and architectures;
(random)       the same study file with ``[sampler] name = "random"`` and ``[pruner] name = "none"``.

Arms run strictly one after another (never side by side, so they do not share the CPU), interleaved by seed:
a0, b0, c0, a1, b1, c1. Each arm is a subprocess started at t = 0 (start-up and data loading count against the
budget) and stopped at the budget: SIGTERM to its process group (hpsearch checkpoints the running trial and
exits), SIGKILL after a grace period. Only trials finished by the budget count. The curve of an arm is
(seconds since its start, best val Top-1 of the completed trials so far).

``--quick`` is a smoke run: the embedded Fashion-MNIST sample (4,000 / 500), 1 epoch, 20 s per arm, seed 0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_result  # noqa: E402

from hpsearch.data.idx import write_idx  # noqa: E402
from hpsearch.data.mnist import load_sample  # noqa: E402
from hpsearch.spec import load_spec  # noqa: E402

HERE = Path(__file__).resolve().parent
STUDY = HERE.parent / "studies" / "fashion_mnist.toml"
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
ARMS = ("hpsearch", "handwritten", "random")
GRACE_S = 60.0  # seconds an arm gets after SIGTERM before SIGKILL
GOAL_FRACTION, GOAL_POINTS = 1 / 3, 1.0  # (a) reaches (b)'s best in <= 1/3 of the budget, ends >= 1 point higher


# ----------------------------------------------------------------------------------------------------------
# Study files and data


def set_keys(text: str, section: str, values: dict[str, str], drop_others: bool = False) -> str:
    """Sets ``key = value`` (values as TOML source) in ``[section]`` of a TOML text; with ``drop_others`` every
    other key of that section is removed. Line-based: enough for the repository's own study files."""
    out: list[str] = []
    current = None
    for line in text.splitlines():
        header = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if header or re.match(r"\s*\[\[", line):
            current = header.group(1).strip() if header else None
            out.append(line)
            if current == section:
                out += [f"{k} = {v}" for k, v in values.items()]
            continue
        key = re.match(r"\s*([A-Za-z0-9_.\"-]+)\s*=", line)
        if current == section and key and (key.group(1) in values or drop_others):
            continue
        out.append(line)
    if f"[{section}]" not in text:
        out += ["", f"[{section}]", *(f"{k} = {v}" for k, v in values.items())]
    return "\n".join(out) + "\n"


def study_file(arm: str, quick: bool, tmp: Path) -> Path:
    text = STUDY.read_text()
    if arm == "random":
        text = set_keys(text, "sampler", {"name": '"random"'}, drop_others=True)
        text = set_keys(text, "pruner", {"name": '"none"'}, drop_others=True)
    if quick:
        text = set_keys(text, "data", {"dataset": '"fashion-mnist-sample"', "val_size": "500"})
        text = set_keys(text, "train", {"max_epochs": "1"})
    path = tmp / f"{arm}.toml"
    path.write_text(text)
    load_spec(path)  # a broken edit fails here, before any budget is spent
    return path


def torchvision_root(quick: bool, tmp: Path) -> Path:
    """The training images in torchvision's FashionMNIST layout (``root/FashionMNIST/raw``), for arm (b)."""
    raw = tmp / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    if quick:  # the embedded sample: the same training images, in the same order, that hpsearch splits
        arrays, _ = load_sample()
        for prefix, split in (("train", "train"), ("t10k", "test")):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", arrays[f"{split}_images"])
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", arrays[f"{split}_labels"])
    else:
        for f in DEBIAN.glob("*.gz"):
            with gzip.open(f) as src, open(raw / f.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return tmp / "tv"


# ----------------------------------------------------------------------------------------------------------
# Running one arm


def run_for(cmd: list[str], budget: float, log: Path, t0: float) -> dict:
    """Runs ``cmd`` in its own process group until it exits or ``budget`` seconds after ``t0`` have passed."""
    env = os.environ | {"HPSEARCH_NO_LIVE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        stopped = None
        try:
            proc.wait(timeout=max(0.0, t0 + budget - time.time()))
        except subprocess.TimeoutExpired:
            stopped = "SIGTERM"
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                stopped = "SIGKILL"
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if stopped is None and proc.returncode != 0:
        raise SystemExit(f"{log.stem}: {Path(cmd[1]).name} exited with {proc.returncode} before its budget; log:\n"
                         + log.read_text()[-3000:])
    return {"returncode": proc.returncode, "stopped": stopped, "wall_s": round(time.time() - t0, 1)}


def run_hpsearch(arm: str, seed: int, budget: float, quick: bool, device: str, tmp: Path) -> dict:
    work = tmp / f"{arm}-{seed}"
    work.mkdir()
    db = work / "study.db"
    cmd = [sys.executable, "-m", "hpsearch.cli", "run", str(study_file(arm, quick, work)),
           "--storage", f"sqlite:///{db}", "--seed", str(seed), "--timeout", str(budget), "--n-trials", "100000",
           "--artifacts", str(work / "artifacts"), "--device", device]
    t0 = time.time()
    run = run_for(cmd, budget, work / "log.txt", t0)
    study = optuna.load_study(study_name="fashion_mnist", storage=f"sqlite:///{db}")
    trials = [{"number": t.number, "state": t.state.name, "value": t.value,
               "completed": t.datetime_complete.timestamp() if t.datetime_complete else None}
              for t in study.get_trials(deepcopy=False)]
    return {**run, "trials": trials, "t0": t0}


def run_handwritten(seed: int, budget: float, quick: bool, device: str, root: Path, tmp: Path) -> dict:
    out = tmp / f"handwritten-{seed}.json"
    cmd = [sys.executable, str(HERE / "handwritten_baseline.py"), "--data-root", str(root), "--budget", str(budget),
           "--seed", str(seed), "--out", str(out), "--device", device]
    if quick:
        cmd += ["--epochs", "1", "--val-size", "500"]
    t0 = time.time()
    run = run_for(cmd, budget, tmp / f"handwritten-{seed}.log", t0)
    trials = json.loads(out.read_text())["trials"] if out.is_file() else []
    return {**run, "trials": trials, "t0": t0}


# ----------------------------------------------------------------------------------------------------------
# Curves and the summary (pure)


def curve(trials: list[dict], t0: float, budget: float) -> list[tuple[float, float]]:
    """(seconds since the arm's start, best val Top-1 so far) at each completion that improved the best."""
    points: list[tuple[float, float]] = []
    for t in sorted((t for t in trials if t["state"] == "COMPLETE" and t["completed"] is not None),
                    key=lambda t: t["completed"]):
        s = t["completed"] - t0
        if s <= budget and (not points or t["value"] > points[-1][1]):
            points.append((round(s, 1), t["value"]))
    return points


def counts(trials: list[dict], t0: float, budget: float) -> dict[str, int]:
    done = [t for t in trials if t["completed"] is not None and t["completed"] - t0 <= budget]
    return {k: sum(t["state"] == k.upper() for t in done) for k in ("complete", "pruned", "fail")}


def time_to_reach(points: list[tuple[float, float]], target: float | None) -> float | None:
    if target is None:
        return None
    return next((s for s, v in points if v >= target), None)


def summarise(runs: list[dict], arms: list[str], seeds: list[int], budget: float) -> dict:
    by = {(r["arm"], r["seed"]): r for r in runs}
    for r in runs:
        b = by.get(("handwritten", r["seed"]))
        r["time_to_handwritten_best_s"] = time_to_reach(r["curve"], b["best"] if b else None)
    summary = {}
    for arm in arms:
        rs = [by[(arm, s)] for s in seeds]
        bests = [r["best"] for r in rs if r["best"] is not None]
        reach = [math.inf if r["time_to_handwritten_best_s"] is None else r["time_to_handwritten_best_s"]
                 for r in rs]
        summary[arm] = {
            "best_median": median(bests) if bests else None,
            "time_to_handwritten_best_median_s": (None if "handwritten" not in arms or median(reach) == math.inf
                                                  else median(reach)),
            "complete_median": median([r["counts"]["complete"] for r in rs]),
            "pruned_median": median([r["counts"]["pruned"] for r in rs]),
            "fail_median": median([r["counts"]["fail"] for r in rs]),
        }
    goal = None
    if "hpsearch" in arms and "handwritten" in arms:
        a, b = summary["hpsearch"], summary["handwritten"]
        gains = [by[("hpsearch", s)]["best"] - by[("handwritten", s)]["best"] for s in seeds
                 if by[("hpsearch", s)]["best"] is not None and by[("handwritten", s)]["best"] is not None]
        reach = a["time_to_handwritten_best_median_s"]
        gain = median(gains) if gains else None
        met = reach is not None and reach <= GOAL_FRACTION * budget and gain is not None and gain >= GOAL_POINTS
        goal = {"statement": f"hpsearch reaches handwritten's final best in <= {GOAL_FRACTION:.3g} of the budget "
                             f"({GOAL_FRACTION * budget:.0f} s) and ends >= {GOAL_POINTS} point higher",
                "time_to_handwritten_best_median_s": reach, "gain_points_median": gain,
                "handwritten_best_median": b["best_median"], "met": met}
    return {"arms": summary, "goal": goal}


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


# ----------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: embedded sample, 1 epoch, 20 s per arm")
    ap.add_argument("--budget-min", type=float, help="wall-clock minutes per arm and seed (default 12; --quick 1/3)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda, for every arm")
    ap.add_argument("--keep", metavar="DIR", help="keep every arm's study file, database and log in DIR")
    ap.add_argument("--seeds", default="0,1", help="comma-separated study seeds")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    args = ap.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if bad := [a for a in arms if a not in ARMS]:
        ap.error(f"--arms has {','.join(bad)}, but the arms are {','.join(ARMS)}")
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    budget = 60.0 * args.budget_min if args.budget_min else 20.0 if args.quick else 720.0
    if not args.quick and not DEBIAN.is_dir():
        raise SystemExit(f"search_efficiency: Fashion-MNIST not found in {DEBIAN}; install Debian's "
                         "dataset-fashion-mnist (or run --quick on the embedded sample)")
    dataset = "fashion-mnist-sample" if args.quick else "fashion-mnist"
    print(f"{len(arms)} arms x {len(seeds)} seeds x {budget:.0f} s on {dataset}: about "
          f"{len(arms) * len(seeds) * budget / 60:.0f} min", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="search_efficiency-") as tmp_name:
        tmp = Path(args.keep) if args.keep else Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        root = torchvision_root(args.quick, tmp) if "handwritten" in arms else None
        for seed in seeds:
            for arm in arms:
                r = (run_handwritten(seed, budget, args.quick, args.device, root, tmp) if arm == "handwritten"
                     else run_hpsearch(arm, seed, budget, args.quick, args.device, tmp))
                points = curve(r["trials"], r["t0"], budget)
                row = {"arm": arm, "seed": seed, "curve": points, "best": points[-1][1] if points else None,
                       "counts": counts(r["trials"], r["t0"], budget), "stopped": r["stopped"],
                       "wall_s": r["wall_s"]}
                runs.append(row)
                print(f"  seed {seed} {arm:11s} best {fmt(row['best'])}%  completed {row['counts']['complete']:3d}"
                      f"  pruned {row['counts']['pruned']:3d}  failed {row['counts']['fail']:2d}  "
                      f"(stopped: {r['stopped'] or 'exited'})", flush=True)
    result = summarise(runs, arms, seeds, budget)
    print(f"\n{'arm':11s} {'best Top-1':>10s} {'to (b) best':>12s} {'completed':>9s} {'pruned':>7s}   per seed")
    for arm in arms:
        s = result["arms"][arm]
        per_seed = "  ".join(f"s{r['seed']}: {fmt(r['best'])}% @ {fmt(r['time_to_handwritten_best_s'], '.0f')} s"
                             for r in runs if r["arm"] == arm)
        print(f"{arm:11s} {fmt(s['best_median']):>9s}% {fmt(s['time_to_handwritten_best_median_s'], '.0f'):>10s} s "
              f"{s['complete_median']:9.1f} {s['pruned_median']:7.1f}   {per_seed}")
    if goal := result["goal"]:
        print(f"\ngoal: {goal['statement']}: {'met' if goal['met'] else 'not met'} (median time "
              f"{fmt(goal['time_to_handwritten_best_median_s'], '.0f')} s, median gain "
              f"{fmt(goal['gain_points_median'], '+.2f')} points)")
    path = write_result("search_efficiency", {
        "dataset": dataset, "device": args.device, "quick": args.quick, "budget_s": budget, "seeds": seeds, "arms": arms,
        "command": " ".join(["python", "benchmarks/search_efficiency.py", *sys.argv[1:]]),
        "runs": runs, **result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
