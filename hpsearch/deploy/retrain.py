"""The last step of a search: retrain the best (or a chosen) trial's configuration on training +
validation data, evaluate it once on the test split, and write a model file."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import optuna
import torch
from optuna.trial import TrialState

from hpsearch.data import load_dataset
from hpsearch.data.base import Dataset
from hpsearch.data.fidelity import apply_fidelity
from hpsearch.deploy.modelfile import save_model
from hpsearch.errors import HpsearchError
from hpsearch.inspect.console import Progress
from hpsearch.params import arch_params, fmt_params
from hpsearch.search.study import stored_spec, versions
from hpsearch.spec import with_overrides
from hpsearch.training.device import configure, resolve_device, resolve_precision
from hpsearch.training.loop import fit
from hpsearch.training.setup import device_data, train_config, trial_model


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    if number is None:
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise HpsearchError(f"study {study.study_name!r} has no completed trial to retrain")
        return study.best_trial
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            if "config" not in t.user_attrs:
                raise HpsearchError(f"trial {number} has no recorded configuration (it never started training)")
            return t
    raise HpsearchError(f"study {study.study_name!r} has no trial {number}")


def retrain(study: optuna.Study, out: str, trial_number: int | None = None, epochs: int | None = None,
            device_name: str | None = None, data_dir: str | None = None, stream: TextIO = sys.stderr,
            weights_dir: str | None = None, offline: bool = False) -> dict:
    """Retrains the trial (default: the best) and writes the model file ``out``; a pretrained study's model starts
    from the same weights as its trials (``weights_dir``, ``offline``: as for ``hpsearch run``). The file's mean
    and std are those the model takes: the dataset's, or [0, 1] scaling for a model that normalises its input
    itself (timm:, tv:)."""
    spec = with_overrides(stored_spec(study), weights_dir=weights_dir, offline=offline)
    trial = pick_trial(study, trial_number)
    values = trial.user_attrs["config"]
    device = resolve_device(device_name or spec.train.device)
    precision = resolve_precision(spec.train.precision, device)
    configure(device)
    ds = load_dataset(spec.data, spec.study.seed, data_dir)
    if ds.test_x is None:
        raise HpsearchError(f"dataset {spec.data.dataset} has no test split to evaluate on")
    # train on train + validation; the "validation" of this run is the test split, evaluated once at the end
    full = Dataset(torch.cat([ds.train_x, ds.val_x]), torch.cat([ds.train_y, ds.val_y]), ds.test_x, ds.test_y,
                   ds.classes, ds.hflip, ds.source)
    # the final model trains on every image; a searched or fixed image_size is kept
    full = apply_fidelity(full, 1.0, values.get("image_size", 0), spec.study.seed)
    n_epochs = epochs or spec.train.max_epochs
    cfg = train_config(spec, values, spec.study.seed + trial.number, precision, max_epochs=n_epochs,
                       eval_every=float(n_epochs))
    print(f"retraining trial {trial.number} ({fmt_params(values)}) for {n_epochs} epochs on "
          f"{len(full.train_y)} images; testing on {len(full.val_y)}", file=stream, flush=True)
    model, data, weights = trial_model(values, full, device_data(full, device), device, cfg.seed, spec.train)
    progress = Progress(stream)
    progress.trial_started(trial.number, values, cfg, data.n_train)
    t0 = time.perf_counter()
    result = fit(model, data, cfg, [progress])
    if progress.bar is not None:
        progress.bar.close()
    mean, std = data.mean.cpu(), data.std.cpu()
    summary = {"trial": trial.number, "test_top1": result.top1, "test_top5": result.top5, "epochs": n_epochs,
               "train_images": len(full.train_y), "test_images": len(full.val_y),
               "wall_s": round(time.perf_counter() - t0, 1), "model_file": str(out), "weights": weights}
    meta = {"arch": values["arch"], "arch_params": arch_params(values), "num_classes": ds.num_classes,
            "in_channels": full.in_channels, "image_size": full.image_size, "mean": mean.tolist(), "std": std.tolist(),
            "classes": list(ds.classes), "dataset": spec.data.dataset, "study": study.study_name,
            "config": values, "versions": versions(), **summary}
    save_model(out, model.cpu(), meta)
    study.set_user_attr("hpsearch.retrain", summary)
    print(f"test top1 {result.top1:.2f}%  top5 {result.top5:.2f}%  ({n_epochs} epochs, {summary['wall_s']} s); "
          f"wrote {out}", file=stream, flush=True)
    return summary
