"""Does the search earn its keep? Cold-start search value at equal wall-clock budget, arms side by side.

    python benchmarks/search_value.py [--quick] [--budget-min 15] [--seeds 0,1,2]
                                      [--arms default,random,handwritten,median,sha,asha,asha2,hyperband,topk,
                                              syne-asha,syne-bohb,ray-asha,ray-user]
                                      [--study studies/fashion_mnist.toml] [--device cpu] [--keep DIR]

Every arm starts COLD: the study file's ``[[enqueue]]`` warm start is removed, so no arm is handed a known
configuration. Every arm gets the same search space (the study file's), the same data (real Fashion-MNIST:
Debian's files, 50,000 training / 10,000 validation images held out of the training set, test set untouched),
the same wall-clock budget and the same ``--seed``:

(default)      ``hpsearch run STUDY`` with the study file's own sampler, pruner and budget policy: what a user
               gets from the shipped study;
(random)       the same study file with ``[sampler] name = "random"`` and ``[pruner] name = "none"``;
(handwritten)  ``handwritten_baseline.py``: plain Optuna TPE + MedianPruner, per-epoch reports, torchvision
               DataLoader with PIL transforms, the space of studies/fashion_mnist.toml, the same model code
               (one seed is enough: ``--handwritten-seeds``);
(median, sha, asha, asha2, asha2-eager, asha2-upper, hyperband, topk)  the study file with only its
               sampler/pruner replaced (see ``VARIANTS``): the candidates the shipped default is chosen from.
               ``asha``/``asha2``: hpsearch's promotion-based successive halving with one rung (half an epoch)
               or two (0.5 and 1.5 epochs); ``asha2-eager``: two rungs, and a rung's best so far goes on before
               η configurations reach it; ``asha2-upper`` (shipped): the same at the second rung only;
(syne-asha, syne-bohb, ray-asha, ray-user)  the tools a user would pick instead, Syne Tune and Ray Tune
               (``peers.py``; ``pip install -e '.[bench]'``): the same space, data, training function and eval
               points as (default), and its rungs (eval points 1 and 3; the peers' stopping ASHA also has 9);
               only the search policy differs; ray-user trains with the hand-written script's DataLoader loop
               instead. Each counts its own start-up (``startup_s``).

Arms run one after another by default, interleaved by seed: all arms of seed 0, then of seed 1, ... On a
machine that other work shares, ``--side-by-side N`` runs N arms of a seed at once with the cores split evenly
between them (``HPSEARCH_THREADS`` / ``OMP_NUM_THREADS``), so that a noisy spell hits every arm of the group
alike; the budget is then N-times-fewer cores per arm, and every row says how many threads it had. Each arm is a subprocess started at t = 0 (start-up and data loading
count against the budget) and stopped at the budget: SIGTERM to its process group (hpsearch checkpoints the
running trial and exits), SIGKILL after a grace period. Only trials finished by the budget count. An arm may
also end sooner by itself (a plateau or target stop in its study file): its curve then simply ends.

Per arm and seed: the best-so-far curve (seconds since start, best val Top-1 of the completed trials), the
final best, the time to reach (random)'s final best of the same seed, configurations tried (distinct
parameter sets started), trials completed / pruned / failed (a paused trial that was promoted is not counted:
its configuration went on), promotions, and the share of training time spent in configurations that were
pruned. The summary gives
medians and ranges over seeds. ``--quick`` is a smoke run: the embedded Fashion-MNIST sample (4,000 / 500),
1 epoch, 20 s per arm, seed 0, arms default and random.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
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
from _common import how_run, median, side_by_side, threads_per_arm, write_result  # noqa: E402

from hpsearch.data.idx import write_idx  # noqa: E402
from hpsearch.data.mnist import load_sample  # noqa: E402
from hpsearch.spec import load_spec  # noqa: E402

HERE = Path(__file__).resolve().parent
STUDY = HERE.parent / "studies" / "fashion_mnist.toml"
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
GRACE_S = 60.0  # seconds an arm gets after SIGTERM before SIGKILL
# the issue's goals: (default) reaches (random)'s final best in <= 1/3 of the budget, ends >= 0.5 points higher
GOAL_FRACTION, GOAL_POINTS, GOAL_TOP1 = 1 / 3, 0.5, 93.5
# arm -> {section: {key: TOML value}}: the study file's sampler and pruner sections replaced by these
VARIANTS: dict[str, dict[str, dict[str, str]]] = {
    "random": {"sampler": {"name": '"random"'}, "pruner": {"name": '"none"'}},
    "median": {"sampler": {"name": '"tpe"', "n_startup_trials": "5"},
               "pruner": {"name": '"median"', "n_startup_trials": "2", "n_warmup_steps": "2"}},
    "sha": {"sampler": {"name": '"tpe"', "n_startup_trials": "5"},
            "pruner": {"name": '"successive_halving"', "min_resource": "1", "reduction_factor": "3"}},
    # hpsearch's successive halving by promotion: one rung at half an epoch (the best third goes on to the end),
    # or two (eval points 1 and 3: 0.5 and 1.5 epochs)
    "asha": {"sampler": {"name": '"tpe"', "n_startup_trials": "4", "multivariate": "true", "group": "true"},
             "pruner": {"name": '"asha"', "min_resource": "1", "reduction_factor": "3", "n_rungs": "1"}},
    "asha2": {"sampler": {"name": '"tpe"', "n_startup_trials": "4", "multivariate": "true", "group": "true"},
              "pruner": {"name": '"asha"', "min_resource": "1", "reduction_factor": "3", "n_rungs": "2"}},
    # eager: a rung's best so far goes on even before three configurations reached it (the first configuration
    # trains to the end at once, as in the peers' stopping ASHA); two rungs, 0.5 and 1.5 epochs
    "asha2-eager": {"sampler": {"name": '"tpe"', "n_startup_trials": "4", "multivariate": "true", "group": "true"},
                    "pruner": {"name": '"asha"', "min_resource": "1", "reduction_factor": "3", "n_rungs": "2",
                               "eager": "true"}},
    # eager above the first rung only: the first complete trial is still the best of three at half an epoch, and
    # a later promotion is checked again at 1.5 epochs, where it goes on at once only if it leads that rung
    "asha2-upper": {"sampler": {"name": '"tpe"', "n_startup_trials": "4", "multivariate": "true", "group": "true"},
                    "pruner": {"name": '"asha"', "min_resource": "1", "reduction_factor": "3", "n_rungs": "2",
                               "eager": '"upper"'}},
    "hyperband": {"sampler": {"name": '"tpe"', "n_startup_trials": "5"},
                  "pruner": {"name": '"hyperband"', "min_resource": "1", "reduction_factor": "3"}},
    # the multi-fidelity literature's baseline: random configurations, only the top quarter after one epoch go on
    "topk": {"sampler": {"name": '"random"'},
             "pruner": {"name": '"percentile"', "percentile": "25.0", "n_startup_trials": "3",
                        "n_warmup_steps": "1"}},
}
# the tools a user would pick instead (benchmarks/peers.py; the `bench` extra): only the search policy differs
PEERS = ("syne-asha", "syne-bohb", "ray-asha", "ray-user")
# peers the issue asked for that the installed tools do not have: the arm's name -> why, and what to run instead
UNAVAILABLE = {"syne-mobster": "Syne Tune 0.16 has no MOBSTER, Hyper-Tune or promotion ASHA (removed in 0.15); "
                               "its model-based multi-fidelity arm here is syne-bohb"}
ARMS = ("default", "handwritten", *VARIANTS, *PEERS)


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


def drop_enqueued(text: str) -> str:
    """The study text without its ``[[enqueue]]`` tables (each runs up to the next table header)."""
    out, inside = [], False
    for line in text.splitlines():
        if re.match(r"\s*\[", line):
            inside = bool(re.match(r"\s*\[\[\s*enqueue\s*\]\]", line))
        if not inside:
            out.append(line)
    return "\n".join(out) + "\n"


def study_file(study: Path, arm: str, quick: bool, tmp: Path) -> Path:
    text = drop_enqueued(study.read_text())
    for section, values in VARIANTS.get(arm, {}).items():
        text = set_keys(text, section, values, drop_others=True)
    if quick:
        text = set_keys(text, "data", {"dataset": '"fashion-mnist-sample"', "val_size": "500"})
        text = set_keys(text, "train", {"max_epochs": "1"})
    path = tmp / f"{arm}.toml"
    path.write_text(text)
    spec = load_spec(path)  # a broken edit fails here, before any budget is spent
    if spec.enqueue:
        raise SystemExit(f"search_value: {path} still enqueues {len(spec.enqueue)} configuration(s)")
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


def run_for(cmd: list[str], budget: float, log: Path, t0: float, threads: int | None) -> dict:
    """Runs ``cmd`` in its own process group until it exits or ``budget`` seconds after ``t0`` have passed;
    ``threads``: its torch intra-op threads (hpsearch's ``HPSEARCH_THREADS``, and ``OMP_NUM_THREADS``)."""
    env = os.environ | {"HPSEARCH_NO_LIVE": "1", "PYTHONUNBUFFERED": "1"}
    if threads:
        env |= {"HPSEARCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
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


def run_hpsearch(study: Path, arm: str, seed: int, budget: float, quick: bool, device: str, tmp: Path,
                 threads: int | None) -> dict:
    work = tmp / f"{arm}-{seed}"
    work.mkdir()
    return run_study(study_file(study, arm, quick, work), work, seed, budget, device, threads)


def run_study(path: Path, work: Path, seed: int, budget: float, device: str, threads: int | None,
              extra: tuple[str, ...] = ()) -> dict:
    """``hpsearch run PATH`` (and ``extra`` arguments) in ``work`` for ``budget`` seconds, on a fresh SQLite
    database: how it ended, and every trial's state, value, params and times."""
    db = work / "study.db"
    cmd = [sys.executable, "-m", "hpsearch.cli", "run", str(path), "--storage", f"sqlite:///{db}",
           "--seed", str(seed), "--timeout", str(budget), "--n-trials", "100000",
           "--artifacts", str(work / "artifacts"), "--device", device, *extra]
    t0 = time.time()
    run = run_for(cmd, budget, work / "log.txt", t0, threads)
    try:
        stored = optuna.load_study(study_name=load_spec(path).study.name, storage=f"sqlite:///{db}")
    except KeyError:  # stopped at the budget before it created the study (a slow start): it tried nothing
        return {**run, "trials": [], "t0": t0, "stop_reason": "budget spent before the study was created"}
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "started": t.datetime_start.timestamp() if t.datetime_start else None,
               "completed": t.datetime_complete.timestamp() if t.datetime_complete else None,
               "wall_s": t.user_attrs.get("wall_s"), "epochs": t.user_attrs.get("epochs_completed"),
               "promoted_from": t.user_attrs.get("promoted_from"), "weights": t.user_attrs.get("weights")}
              for t in stored.get_trials(deepcopy=False)]
    return {**run, "trials": trials, "t0": t0, "stop_reason": stored.user_attrs.get("stop_reason")}


def run_peer(study: Path, arm: str, seed: int, budget: float, quick: bool, device: str, root: Path | None,
             tmp: Path, threads: int | None) -> dict:
    """A peer tuner (``peers.py``) on the arm's study file: the (default) arm's space, data, epochs and eval
    points, the seed written into it (it seeds the validation split, as ``hpsearch run --seed`` does)."""
    work = tmp / f"{arm}-{seed}"
    work.mkdir()
    path = study_file(study, "default", quick, work)
    path.write_text(set_keys(path.read_text(), "study", {"seed": str(seed)}))
    out = work / "trials.json"
    cmd = [sys.executable, str(HERE / "peers.py"), "--tuner", arm, "--study", str(path), "--seed", str(seed),
           "--budget", str(budget), "--out", str(out), "--device", device]
    if root is not None:
        cmd += ["--data-root", str(root)]
    t0 = time.time()
    run = run_for(cmd, budget, work / "log.txt", t0, threads)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    return {**run, "trials": doc.get("trials", []), "t0": t0, "startup_s": doc.get("startup_s")}


def run_handwritten(seed: int, budget: float, quick: bool, device: str, root: Path, tmp: Path,
                    threads: int | None) -> dict:
    out = tmp / f"handwritten-{seed}.json"
    cmd = [sys.executable, str(HERE / "handwritten_baseline.py"), "--data-root", str(root), "--budget", str(budget),
           "--seed", str(seed), "--out", str(out), "--device", device]
    if quick:
        cmd += ["--epochs", "1", "--val-size", "500"]
    t0 = time.time()
    run = run_for(cmd, budget, tmp / f"handwritten-{seed}.log", t0, threads)
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
    # configurations tried: distinct parameter sets started in the budget (a trial interrupted at the budget is
    # re-queued as a WAITING copy of itself, and a retried one runs again: neither is a new configuration)
    tried = {json.dumps(t.get("params"), sort_keys=True) for t in trials
             if t.get("started") is None or t["started"] - t0 <= budget}
    promoted = {t["promoted_from"] for t in trials if t.get("promoted_from") is not None}
    return {"tried": len(tried), **{k: sum(t["state"] == k.upper() and t["number"] not in promoted for t in done)
                                    for k in ("complete", "pruned", "fail")},
            "promotions": sum(t.get("promoted_from") is not None and t.get("started") is not None
                              and t["started"] - t0 <= budget for t in trials)}


def pruned_share(trials: list[dict], t0: float, budget: float) -> float | None:
    """The share of the finished trials' training wall time that went into configurations that were then pruned
    (a trial paused and then promoted is not wasted: its configuration went on from its checkpoint)."""
    done = [t for t in trials if t["completed"] is not None and t["completed"] - t0 <= budget
            and t.get("wall_s") is not None]
    promoted = {t["promoted_from"] for t in trials if t.get("promoted_from") is not None}
    total = sum(t["wall_s"] for t in done)
    return None if not total else sum(t["wall_s"] for t in done if t["state"] == "PRUNED"
                                      and t["number"] not in promoted) / total


def time_to_reach(points: list[tuple[float, float]], target: float | None) -> float | None:
    if target is None:
        return None
    return next((s for s, v in points if v >= target), None)


def spread(xs: list[float]) -> dict | None:
    return {"median": median(xs), "min": min(xs), "max": max(xs)} if xs else None


def summarise(runs: list[dict], arms: list[str], budget: float) -> dict:
    """Per-seed times to (random)'s final best, then per arm medians and ranges over its seeds, and the goals."""
    by = {(r["arm"], r["seed"]): r for r in runs}
    for r in runs:
        b = by.get(("random", r["seed"]))
        r["time_to_random_best_s"] = time_to_reach(r["curve"], b["best"] if b else None)
    summary = {}
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        reach = [math.inf if r["time_to_random_best_s"] is None else r["time_to_random_best_s"] for r in rs]
        reach_median = median(reach) if "random" in arms and reach else None
        summary[arm] = {
            "seeds": [r["seed"] for r in rs],
            "best": spread([r["best"] for r in rs if r["best"] is not None]),
            "no_trial_completed": sum(r["best"] is None for r in rs),
            "time_to_random_best_median_s": None if reach_median in (None, math.inf) else reach_median,
            **{f"{k}_median": median([r["counts"][k] for r in rs]) for k in ("tried", "complete", "pruned", "fail")},
            "pruned_share_median": median(shares) if (shares := [r["pruned_share"] for r in rs
                                                                 if r["pruned_share"] is not None]) else None,
        }
    goal = None
    if "default" in arms and "random" in arms:
        a, b = summary["default"], summary["random"]
        seeds = [s for s in a["seeds"] if ("random", s) in by]
        gains = [by[("default", s)]["best"] - by[("random", s)]["best"] for s in seeds
                 if by[("default", s)]["best"] is not None and by[("random", s)]["best"] is not None]
        reach = a["time_to_random_best_median_s"]
        gain = median(gains) if gains else None
        best = a["best"]["median"] if a["best"] else None
        checks = {"reach": reach is not None and reach <= GOAL_FRACTION * budget,
                  "gain": gain is not None and gain >= GOAL_POINTS,
                  "top1": best is not None and best >= GOAL_TOP1}
        goal = {"statement": f"(default) reaches (random)'s final best in <= {GOAL_FRACTION:.3g} of the budget "
                             f"({GOAL_FRACTION * budget:.0f} s) at the median over seeds, its median final best "
                             f"is >= (random)'s + {GOAL_POINTS} points and >= {GOAL_TOP1}%",
                "time_to_random_best_median_s": reach, "gain_points_median": gain, "default_best_median": best,
                "random_best_median": b["best"]["median"] if b["best"] else None, **checks,
                "met": all(checks.values())}
    return {"arms": summary, "goal": goal}


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


# ----------------------------------------------------------------------------------------------------------


def run_arm(job: tuple[int, str], args: argparse.Namespace, budget: float, root: Path | None, tmp: Path,
            threads: int | None) -> dict:
    seed, arm = job
    if arm == "handwritten":
        return run_handwritten(seed, budget, args.quick, args.device, root, tmp, threads)
    if arm in PEERS:
        return run_peer(args.study, arm, seed, budget, args.quick, args.device, root if arm == "ray-user" else None,
                        tmp, threads)
    return run_hpsearch(args.study, arm, seed, budget, args.quick, args.device, tmp, threads)


def arm_row(seed: int, arm: str, r: dict, dataset: str, budget: float, threads: int | None) -> dict:
    points = curve(r["trials"], r["t0"], budget)
    return {"arm": arm, "seed": seed, "dataset": dataset, "budget_s": budget, "threads": threads, "curve": points,
            "best": points[-1][1] if points else None, "counts": counts(r["trials"], r["t0"], budget),
            "time_to_92_s": time_to_reach(points, 92.0),
            "pruned_share": pruned_share(r["trials"], r["t0"], budget), "stopped": r["stopped"],
            "stop_reason": r.get("stop_reason"), "wall_s": r["wall_s"], "startup_s": r.get("startup_s"),
            "first_start_s": first_start(r["trials"], r["t0"]), "loadavg_1min": os.getloadavg()[0],
            "trials": r["trials"], "t0": r["t0"]}


def first_start(trials: list[dict], t0: float) -> float | None:
    """Seconds from the arm's process start to its first trial's start: every arm's start-up by one definition
    (imports, data loading, study creation; Ray's start as well). A peer's own ``startup_s`` is when its tuner
    was ready, which for Ray comes before its first trial is placed."""
    starts = [t["started"] for t in trials if t.get("started")]
    return round(min(starts) - t0, 1) if starts else None


def write_plot(runs: list[dict], budget: float, path: Path) -> None:
    """The best-so-far curves of every arm and seed as one self-contained plotly HTML page."""
    import plotly.graph_objects as go

    fig = go.Figure()
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
    arms = list(dict.fromkeys(r["arm"] for r in runs))
    for r in runs:
        if not r["curve"]:
            continue
        xs = [s for s, _ in r["curve"]] + [budget]
        ys = [v for _, v in r["curve"]] + [r["curve"][-1][1]]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", line_shape="hv",
                                 name=f"{r['arm']} seed {r['seed']}", legendgroup=r["arm"],
                                 line={"color": colours[arms.index(r["arm"]) % len(colours)]}))
    fig.update_layout(title=f"best val Top-1 so far, cold start, {runs[0]['dataset']}, {budget:.0f} s per arm",
                      xaxis_title="seconds since the arm started", yaxis_title="best val Top-1 (%)",
                      width=1000, height=560, template="plotly_white")
    fig.write_html(path, include_plotlyjs=True, full_html=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: embedded sample, 1 epoch, 20 s per arm")
    ap.add_argument("--budget-min", type=float, help="wall-clock minutes per arm and seed (default 15; --quick 1/3)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda, for every arm")
    ap.add_argument("--keep", metavar="DIR", help="keep every arm's study file, database and log in DIR")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated study seeds")
    ap.add_argument("--handwritten-seeds", default="0", help="seeds of the (handwritten) arm (default: 0 only)")
    ap.add_argument("--arms", default=None, help=f"comma-separated subset of {','.join(ARMS)} "
                    "(default: default,random,handwritten; --quick: default,random)")
    ap.add_argument("--side-by-side", type=int, default=1, metavar="N",
                    help="run N arms at once, the cores split between them (default 1: one after another)")
    ap.add_argument("--study", type=Path, default=STUDY, help="the shipped study file the arms start from")
    args = ap.parse_args()
    arms = [a.strip() for a in (args.arms or ("default,random" if args.quick else "default,random,handwritten"))
            .split(",") if a.strip()]
    if gone := [a for a in arms if a in UNAVAILABLE]:
        ap.error("; ".join(f"--arms {a}: {UNAVAILABLE[a]}" for a in gone))
    if bad := [a for a in arms if a not in ARMS]:
        ap.error(f"--arms has {','.join(bad)}, but the arms are {','.join(ARMS)}")
    if peers := [a for a in arms if a in PEERS]:
        missing = [m for m, names in (("syne_tune", "syne"), ("ray", "ray")) if any(a.startswith(names) for a in peers)
                   and importlib.util.find_spec(m) is None]
        if missing:
            ap.error(f"--arms {','.join(peers)} need {' and '.join(missing)}: pip install -e '.[bench]'")
    if not args.study.is_file():
        ap.error(f"--study {args.study}: no such file")
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    hand_seeds = {int(s) for s in args.handwritten_seeds.split(",")}
    budget = 60.0 * args.budget_min if args.budget_min else 20.0 if args.quick else 900.0
    dataset = "fashion-mnist-sample" if args.quick else load_spec(args.study).data.dataset
    if dataset == "fashion-mnist" and not DEBIAN.is_dir():
        raise SystemExit(f"search_value: Fashion-MNIST not found in {DEBIAN}; install Debian's "
                         "dataset-fashion-mnist (or run --quick on the embedded sample)")
    if {"handwritten", "ray-user"} & set(arms) and dataset != "fashion-mnist" and not args.quick:
        ap.error(f"the handwritten arm trains on Debian's Fashion-MNIST, but {args.study} uses {dataset}")
    plan = [(seed, arm) for seed in seeds for arm in arms if arm != "handwritten" or seed in hand_seeds]
    n = args.side_by_side
    threads = threads_per_arm(n)
    print(f"{len(plan)} arm runs x {budget:.0f} s on {dataset} (cold: no [[enqueue]]), {how_run(n, threads)}: "
          f"about {math.ceil(len(plan) / n) * budget / 60:.0f} min", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="search_value-") as tmp_name:
        tmp = Path(args.keep) if args.keep else Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        root = torchvision_root(args.quick, tmp) if {"handwritten", "ray-user"} & set(arms) else None
        for (seed, arm), r in side_by_side(plan, n, lambda job: run_arm(job, args, budget, root, tmp, threads)):
            row = arm_row(seed, arm, r, dataset, budget, threads)
            runs.append(row)
            share = row["pruned_share"]
            print(f"  seed {seed} {arm:11s} best {fmt(row['best'])}%  tried {row['counts']['tried']:3d}  "
                  f"completed {row['counts']['complete']:3d}  pruned {row['counts']['pruned']:3d}  failed "
                  f"{row['counts']['fail']:2d}  promotions {row['counts']['promotions']:2d}  first complete at "
                  f"{fmt(row['curve'][0][0] if row['curve'] else None, '.0f')} s  to 92% "
                  f"{fmt(row['time_to_92_s'], '.0f')} s  first trial started at "
                  f"{fmt(row['first_start_s'], '.1f')} s (tuner ready {fmt(row['startup_s'], '.1f')} s)  in pruned "
                  f"{fmt(None if share is None else 100 * share, '.0f')}%"
                  f"  (stopped: {r['stopped'] or r.get('stop_reason') or 'exited'})", flush=True)
    result = summarise(runs, arms, budget)
    print(f"\n{'arm':11s} {'best Top-1 (median, range)':>27s} {'to (random) best':>16s} {'tried':>6s} "
          f"{'done':>5s} {'pruned':>7s}   per seed")
    for arm in arms:
        s = result["arms"][arm]
        b = s["best"]
        best = f"{fmt(b['median'])}% ({fmt(b['min'])}-{fmt(b['max'])})" if b else "-"
        per_seed = "  ".join(f"s{r['seed']}: {fmt(r['best'])}% @ {fmt(r['time_to_random_best_s'], '.0f')} s"
                             for r in runs if r["arm"] == arm)
        print(f"{arm:11s} {best:>27s} {fmt(s['time_to_random_best_median_s'], '.0f'):>14s} s "
              f"{s['tried_median']:6.1f} {s['complete_median']:5.1f} {s['pruned_median']:7.1f}   {per_seed}")
    if goal := result["goal"]:
        print(f"\ngoal: {goal['statement']}: {'met' if goal['met'] else 'not met'} (median time "
              f"{fmt(goal['time_to_random_best_median_s'], '.0f')} s, median gain "
              f"{fmt(goal['gain_points_median'], '+.2f')} points, median best {fmt(goal['default_best_median'])}%)")
    path = write_result("search_value", {
        "dataset": dataset, "device": args.device, "quick": args.quick, "budget_s": budget, "seeds": seeds,
        "arm_order": arms, "study": str(args.study), "side_by_side": n, "threads_per_arm": threads,
        "variants": {a: VARIANTS[a] for a in arms if a in VARIANTS},
        "command": " ".join(["python", "benchmarks/search_value.py", *sys.argv[1:]]),
        "runs": runs, **result})
    write_plot(runs, budget, path.with_suffix(".html"))
    print(f"wrote {path} and {path.with_suffix('.html')}")


if __name__ == "__main__":
    main()
