"""The tools a user would pick instead of hpsearch, as arms of ``search_value.py``: Syne Tune and Ray Tune.

    python benchmarks/peers.py --tuner syne-asha|syne-bohb|ray-asha|ray-user --study STUDY --seed 0
                               --budget 900 --out trials.json [--data-root DIR] [--device cpu]

Only the search policy differs from the hpsearch arms: the same search space (read from STUDY, the arm's own
study file), the same data and validation split (``hpsearch.load_dataset`` with the study's seed), the same
training function (``hpsearch.fit`` on the device-resident data, with the trial's ``train_config`` and model,
seeded ``study seed + trial index`` as hpsearch seeds its trials), the same eval points (every ``eval_every``
epochs of the study: half an epoch for the shipped study) and rungs at the same eval points: successive halving
with the first rung at eval point 1 and reduction factor 3, up to ``max_epochs`` (1, 3 and 9 of 12; the shipped
study pauses at 1 and 3 and trains the survivors of 3 to the end):

(syne-asha)  Syne Tune's ``ASHA`` (random configurations); its scheduler is driven in this process: each eval
             point goes to ``on_trial_result``, which answers continue or stop. Syne Tune 0.16 (the version this
             benchmark installs) has only the stopping variant of ASHA: the promotion variant (pause, then resume
             from a checkpoint), MOBSTER and Hyper-Tune were removed in 0.15 (0.14.2, the last release with them,
             needs numpy < 1.27, which torch 2.14's environment does not have);
(syne-bohb)  Syne Tune's ``BOHB``: the same ASHA with a kernel-density model choosing the configurations (one of
             the model-based multi-fidelity methods 0.16 ships; its ``ASHABORE`` and ``ASHACQR`` are not run
             yet);
(ray-asha)   Ray Tune as its docs show it: ``Tuner`` + ``ASHAScheduler`` + ``OptunaSearch`` (TPE, hpsearch's
             own search-space function as its define-by-run space), one trial at a time (``ray.init(num_cpus=1)``,
             one CPU a trial), ``tune.report`` at every eval point;
(ray-user)   the same Ray Tune search, but training with the hand-written script's loop
             (``handwritten_baseline.py``: torchvision dataset, PIL transforms, a DataLoader, SGD + OneCycleLR),
             reporting at the same half epochs: the platform's loop speed apart from its search.

The whole of this process counts against the arm's budget (Ray's start-up included; it is reported apart as
``startup_s``). Every started trial is written to ``--out`` (a JSON file rewritten at each event, so that it is
complete when the harness stops this process at its budget) with the fields ``search_value.py`` reads: number,
state (COMPLETE: trained to ``max_epochs``; PRUNED: stopped by the scheduler; FAIL), value (val Top-1 at its
last eval point), params, started, completed, and the eval points reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

T_START = time.time()  # the arm's own clock: start-up counts

HERE = Path(__file__).resolve().parent
TUNERS = ("syne-asha", "syne-bohb", "ray-asha", "ray-user")
METRIC, RESOURCE = "val_top1", "eval_point"
REDUCTION = 3


class Log:
    """The trials so far, rewritten to ``path`` at every event."""

    def __init__(self, path: Path, tuner: str):
        self.path, self.trials = path, {}
        self.doc = {"tuner": tuner, "pid": os.getpid(), "started": T_START, "startup_s": None, "trials": []}
        self.write()

    def ready(self) -> None:
        if self.doc["startup_s"] is None:
            self.doc["startup_s"] = round(time.time() - T_START, 1)
            self.write()

    def start(self, key, params: dict) -> None:
        self.ready()
        self.trials[key] = {"number": len(self.trials), "state": "RUNNING", "value": None, "params": params,
                            "started": time.time(), "completed": None, "points": 0}
        self.write()

    def point(self, key, step: int, top1: float) -> None:
        t = self.trials[key]
        t["points"], t["value"] = step, top1
        self.write()

    def end(self, key, state: str) -> None:
        t = self.trials[key]
        if t["completed"] is None:
            t["state"], t["completed"] = state, time.time()
            self.write()

    def write(self) -> None:
        self.doc["trials"] = list(self.trials.values())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc))
        tmp.replace(self.path)


# ----------------------------------------------------------------------------------------------------------
# The training function: hpsearch's fit on the device-resident data


class Trainer:
    """Loads the study's data once (as an hpsearch worker does) and trains one configuration as an hpsearch trial
    is trained (``hpsearch.training.setup``: the same data views, config, model and seed), calling ``report(step,
    top1)`` at every eval point; ``report`` returns False to stop the trial."""

    def __init__(self, study: str, device: str):
        import torch

        from hpsearch import load_dataset, load_spec
        from hpsearch.training.device import configure, resolve_device, resolve_precision
        from hpsearch.training.setup import FidelityViews

        self.spec = load_spec(study)
        self.device = resolve_device(device)
        configure(self.device)
        if threads := os.environ.get("HPSEARCH_THREADS"):
            torch.set_num_threads(int(threads))
        self.precision = resolve_precision(self.spec.train.precision, self.device)
        self.views = FidelityViews(load_dataset(self.spec.data, self.spec.study.seed), self.device,
                                   self.spec.study.seed)

    def train(self, config: dict, index: int, report) -> float:
        from hpsearch import fit
        from hpsearch.training.setup import trial_inputs, trial_model

        values = spec_values(self.spec, config)
        seed = self.spec.study.seed + index
        data, ds, cfg = trial_inputs(self.spec, self.views, values, seed, self.precision)
        model, data, _ = trial_model(values, ds, data, self.device, seed, self.spec.train)

        class Hook:
            def on_eval(self, point) -> None:
                if not report(point.step, point.top1):
                    raise Stopped

        return fit(model, data, cfg, [Hook()]).top1

    def max_points(self) -> int:
        from hpsearch.spec import n_evals

        return n_evals(self.spec.train.max_epochs, self.spec.train.eval_every)


class Stopped(Exception):
    """The scheduler stopped the trial."""


# ----------------------------------------------------------------------------------------------------------
# Syne Tune: its scheduler driven in this process


def syne_space(spec) -> dict:
    """The study's search space in Syne Tune's terms (flat: an arch's parameters are sampled whatever the arch,
    and only the chosen arch's are used; Syne Tune has no conditional spaces)."""
    from syne_tune.config_space import choice, lograndint, loguniform, randint, uniform

    space = {}
    for d in spec.space:
        if d.fixed:
            continue
        if d.choices is not None:
            space[d.name] = choice(list(d.choices))
        elif d.param.kind == "int":
            space[d.name] = (lograndint if d.log else randint)(int(d.low), int(d.high))
        else:
            space[d.name] = (loguniform if d.log else uniform)(d.low, d.high)
    return space


def run_syne(tuner: str, trainer: Trainer, seed: int, log: Log, budget: float) -> None:
    from syne_tune.backend.trial_status import Trial
    from syne_tune.optimizer.baselines import ASHA, BOHB
    from syne_tune.optimizer.scheduler import SchedulerDecision

    cls = ASHA if tuner == "syne-asha" else BOHB
    scheduler = cls(syne_space(trainer.spec), metric=METRIC, do_minimize=False, time_attr=RESOURCE,
                    max_t=trainer.max_points(), grace_period=1, reduction_factor=REDUCTION, random_seed=seed)
    index, max_points = 0, trainer.max_points()
    while time.time() - T_START < budget:
        suggestion = scheduler.suggest()
        if suggestion is None:
            break
        trial = Trial(trial_id=index, config=suggestion.config, creation_time=None)
        scheduler.on_trial_add(trial)
        log.start(index, suggestion.config)
        last: dict = {}

        def report(step: int, top1: float, trial=trial, index=index, last=last) -> bool:
            last.update({METRIC: top1, RESOURCE: step})
            log.point(index, step, top1)
            decision = scheduler.on_trial_result(trial, dict(last))
            # at the last eval point ASHA answers "stop" too (the trial is done), which is no pruning
            return step >= max_points or decision != SchedulerDecision.STOP

        try:
            trainer.train(suggestion.config, index, report)
        except Stopped:
            log.end(index, "PRUNED")
        except Exception as e:  # noqa: BLE001 - a failing trial never ends the arm
            print(f"trial {index} failed: {type(e).__name__}: {e}", flush=True)
            scheduler.on_trial_error(trial)
            log.end(index, "FAIL")
        else:
            scheduler.on_trial_complete(trial, dict(last))
            log.end(index, "COMPLETE")
        index += 1


# ----------------------------------------------------------------------------------------------------------
# Ray Tune: Tuner + ASHAScheduler + OptunaSearch, as its docs show


def run_ray(tuner: str, study: str, seed: int, log: Log, budget: float, device: str, data_root: str | None,
            work: Path) -> None:
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from hpsearch import load_spec
    from hpsearch.spec import n_evals

    spec = load_spec(study)
    max_points = n_evals(spec.train.max_epochs, spec.train.eval_every)
    threads = int(os.environ.get("HPSEARCH_THREADS", "1"))
    # the trainables are imported by reference from this folder (module ``peers``), so that a Ray worker process
    # keeps its loaded data between the trials it runs
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"HPSEARCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
                                       "PYTHONPATH": path}})
    import peers

    if tuner == "ray-asha":
        trainable = tune.with_parameters(peers.ray_hpsearch, study=study, device=device)
    else:
        trainable = tune.with_parameters(peers.ray_handwritten, study=study, device=device, data_root=data_root,
                                         max_points=max_points)

    class Record(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            log.start(trial.trial_id, {k: v for k, v in trial.config.items()})

        def on_trial_result(self, iteration, trials, trial, result, **info):
            log.point(trial.trial_id, int(result[RESOURCE]), float(result[METRIC]))

        def on_trial_complete(self, iteration, trials, trial, **info):
            points = log.trials[trial.trial_id]["points"] if trial.trial_id in log.trials else 0
            log.end(trial.trial_id, "COMPLETE" if points >= max_points else "PRUNED")

        def on_trial_error(self, iteration, trials, trial, **info):
            log.end(trial.trial_id, "FAIL")

    search = OptunaSearch(peers.Space(study), metric=METRIC, mode="max", sampler=optuna.samplers.TPESampler(seed=seed))
    scheduler = ASHAScheduler(time_attr=RESOURCE, max_t=max_points, grace_period=1, reduction_factor=REDUCTION)
    t = tune.Tuner(
        tune.with_resources(trainable, {"cpu": threads}),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", search_alg=search, scheduler=scheduler,
                                    num_samples=-1, time_budget_s=max(1.0, budget - (time.time() - T_START))),
        run_config=tune.RunConfig(name="peers", storage_path=str(work.resolve()), callbacks=[Record()], verbose=0),
    )
    log.ready()
    t.fit()


class Space:
    """hpsearch's own space function as OptunaSearch's define-by-run space (Ray records every ``suggest_*``
    call); a class, so that Ray can pickle the searcher's state."""

    def __init__(self, study: str):
        self.study = study

    def __call__(self, trial) -> None:
        from hpsearch import load_spec, suggest

        suggest(trial, load_spec(self.study).space)


def ray_hpsearch(config: dict, study: str, device: str) -> None:
    from ray import tune

    trainer = _trainer(study, device)
    number = trial_number(tune.get_context().get_trial_id())

    def report(step: int, top1: float) -> bool:
        tune.report({METRIC: top1, RESOURCE: step})
        return True  # Ray stops a trial itself, by ending this function

    trainer.train(config, number, report)


_TRAINER: dict = {}


def _trainer(study: str, device: str) -> Trainer:
    """One Trainer per Ray worker process (its data loaded once, as Ray reuses the process for later trials)."""
    if study not in _TRAINER:
        _TRAINER[study] = Trainer(study, device)
    return _TRAINER[study]


def ray_handwritten(config: dict, study: str, device: str, data_root: str, max_points: int) -> None:
    """The hand-written script's loop (``handwritten_baseline.train_trial``: torchvision dataset, PIL transforms,
    a DataLoader with 2 worker processes, SGD + OneCycleLR), evaluated and reported at the study's eval points."""
    import torch
    from handwritten_baseline import split_indices, train_trial, val_loader
    from ray import tune
    from torchvision import datasets

    from hpsearch import load_spec
    from hpsearch.params import arch_params

    spec = load_spec(study)
    values = spec_values(spec, config)
    dev = torch.device(device)
    torch.set_num_threads(int(os.environ.get("HPSEARCH_THREADS", "1")))
    n = len(datasets.FashionMNIST(data_root, train=True, download=False))
    train_idx, val_idx = split_indices(n, spec.data.val_size, spec.study.seed)
    seed = spec.study.seed + trial_number(tune.get_context().get_trial_id())
    epochs = spec.train.max_epochs

    def on_eval(point: int, top1: float) -> None:
        tune.report({METRIC: top1, RESOURCE: point + 1})

    train_trial(values | {"model": arch_params(values)}, data_root, train_idx, val_loader(data_root, val_idx, 2, dev),
                epochs, seed, 2, dev, on_eval, evals_per_epoch=max_points // epochs)


def spec_values(spec, config: dict) -> dict:
    """The configuration as hpsearch's ``suggest`` returns it: fixed values filled in, only the chosen arch's own
    parameters (a flat space such as Syne Tune's samples every arch's)."""
    return {d.name: d.value if d.fixed else config[d.name] for d in spec.space
            if d.arch is None or d.arch == config["arch"]}


def trial_number(trial_id: str) -> int:
    """Ray's trial id ``abcde_00003`` → 3 (the trial's index, which seeds it as hpsearch seeds trial 3)."""
    tail = trial_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tuner", required=True, choices=TUNERS)
    ap.add_argument("--study", required=True, help="the arm's study file (its space, data, epochs, eval points)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, required=True, help="seconds from this process's start")
    ap.add_argument("--out", required=True, type=Path, help="JSON file of the trials, rewritten at every event")
    ap.add_argument("--data-root", help="ray-user: the folder holding FashionMNIST/raw/*-ubyte")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    log = Log(args.out, args.tuner)
    if args.tuner.startswith("syne-"):
        run_syne(args.tuner, Trainer(args.study, args.device), args.seed, log, args.budget)
    else:
        sys.path.insert(0, str(HERE))
        run_ray(args.tuner, args.study, args.seed, log, args.budget, args.device, args.data_root,
                args.out.parent / f"ray-{args.tuner}")


if __name__ == "__main__":
    main()
