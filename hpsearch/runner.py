"""Running a study in this process: open it, load the data once, optimize until the study holds
``n_trials`` finished trials in total (or the timeout passes), and print a summary."""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import TextIO

import optuna
from optuna.study import MaxTrialsCallback

from hpsearch.data import load_dataset
from hpsearch.device import configure, resolve_device, resolve_precision
from hpsearch.objective import Objective
from hpsearch.progress import Progress, summary
from hpsearch.spec import Spec
from hpsearch.storage import mask_url, open_storage
from hpsearch.study import FINISHED, count_finished, open_study

log = logging.getLogger("hpsearch")


def with_overrides(spec: Spec, n_trials: int | None = None, timeout: float | None = None, device: str | None = None,
                   seed: int | None = None) -> Spec:
    """The spec with command-line overrides applied (they are not stored in the study)."""
    study = dataclasses.replace(
        spec.study,
        n_trials=spec.study.n_trials if n_trials is None else n_trials,
        timeout=spec.study.timeout if timeout is None else timeout,
        seed=spec.study.seed if seed is None else seed,
    )
    train = spec.train if device is None else dataclasses.replace(spec.train, device=device)
    return dataclasses.replace(spec, study=study, train=train)


def run_study(spec: Spec, storage_url: str, study_name: str | None = None, data_dir: str | None = None,
              stream: TextIO = sys.stderr) -> optuna.Study:
    name = study_name or spec.study.name
    device = resolve_device(spec.train.device)
    precision = resolve_precision(spec.train.precision, device)
    configure(device)
    storage = open_storage(storage_url)
    study = open_study(spec, storage, name)
    target = spec.study.n_trials
    done = count_finished(study)
    print(f"study {name} in {mask_url(storage_url)}: {done} of {target} trials finished", file=stream)
    if done >= target:
        print(summary(study), file=stream)
        return study
    dataset = load_dataset(spec.data, spec.study.seed, data_dir)
    print(f"data: {dataset.source}; {len(dataset.train_y)} train / {len(dataset.val_y)} val images; "
          f"device {device}, precision {precision}", file=stream, flush=True)
    progress = Progress(stream)
    objective = Objective(spec, dataset, device, precision, progress)
    study.optimize(
        objective,
        n_trials=target - done,
        timeout=spec.study.timeout,
        catch=(Exception,),
        callbacks=[MaxTrialsCallback(target, states=FINISHED), progress],
        gc_after_trial=False,
    )
    print(summary(study), file=stream, flush=True)
    return study
