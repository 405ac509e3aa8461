"""hpsearch: hyperparameter search for CNN image classifiers, built on Optuna and PyTorch.

The public API, importable from here (each name is imported on first use, so ``import hpsearch`` and the
command line's ``--help`` stay fast; most of these modules import torch)::

    from hpsearch import load_spec, open_storage, open_study, run_worker, ...
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    # study files and the search space
    "load_spec": "hpsearch.spec", "parse_spec": "hpsearch.spec", "Spec": "hpsearch.spec",
    "with_overrides": "hpsearch.spec", "suggest": "hpsearch.search.space", "GLOBAL_PARAMS": "hpsearch.params",
    "Param": "hpsearch.params",
    # models, data and the training loop (no optuna)
    "create_model": "hpsearch.models", "register_model": "hpsearch.models", "list_models": "hpsearch.models",
    "load_dataset": "hpsearch.data", "Dataset": "hpsearch.data.base", "DeviceData": "hpsearch.data.loader",
    "fit": "hpsearch.training.loop", "evaluate": "hpsearch.training.loop", "TrainConfig": "hpsearch.training.loop",
    "EvalPoint": "hpsearch.training.loop", "FitResult": "hpsearch.training.loop", "fit_pack": "hpsearch.training.pack",
    # building a trial, the Optuna objective, studies, storages, workers
    "train_config": "hpsearch.training.setup", "build_model": "hpsearch.training.setup", "Objective": "hpsearch.search.objective",
    "open_study": "hpsearch.search.study", "load_study": "hpsearch.search.study", "stored_spec": "hpsearch.search.study",
    "open_storage": "hpsearch.storage.urls", "mask_url": "hpsearch.storage.urls", "Heartbeat": "hpsearch.storage.urls",
    "WorkerOptions": "hpsearch.runtime.worker", "run_worker": "hpsearch.runtime.worker", "launch_study": "hpsearch.runtime.launcher",
    # after the search
    # (retrain and predict are also module names: use hpsearch.deploy.retrain.retrain, hpsearch.deploy.predict.predict)
    "write_report": "hpsearch.inspect.report", "export_trials": "hpsearch.inspect.export", "load_model": "hpsearch.deploy.modelfile",
    # errors
    "HpsearchError": "hpsearch.errors", "SpecError": "hpsearch.errors", "DataError": "hpsearch.errors",
    "StorageError": "hpsearch.errors", "StudyNotFound": "hpsearch.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
