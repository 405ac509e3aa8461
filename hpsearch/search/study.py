"""Creating and loading studies: sampler and pruner from the spec, study attributes, warm-start trials."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from typing import Any

import optuna

from hpsearch import __version__
from hpsearch.errors import HpsearchError, SpecError, StudyNotFound
from hpsearch.spec import Spec
from hpsearch.storage.attrs import METRIC, SPEC, VERSIONS
from hpsearch.storage.urls import open_storage

log = logging.getLogger("hpsearch")
# Run controls that a rerun may change (--study and other options override them): not part of the comparison.
RUN_CONTROLS = ("study.name", "study.n_trials", "study.timeout", "study.patience", "study.min_delta", "study.target",
                "train.device", "train.pack")


def build_sampler(spec: Spec, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler. ``offset`` (trials already in the study) shifts the seed so a resumed study does
    not replay the random draws of its first run."""
    opts = dict(spec.sampler.options)
    seed = (opts.pop("seed", spec.study.seed) + offset) % 2**32  # numpy's seeds stop at 2**32 - 1
    name = spec.sampler.name
    if name == "tpe":
        opts.setdefault("multivariate", True)
        opts.setdefault("n_startup_trials", 5)
        return optuna.samplers.TPESampler(seed=seed, **opts)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **opts)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False, **opts)
    return optuna.samplers.QMCSampler(seed=seed, **opts)


def build_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    opts = dict(spec.pruner.options)
    name = spec.pruner.name
    if name == "patient":
        wrapped_name = opts.pop("wrapped", "none")
        patience, min_delta = opts.pop("patience"), opts.pop("min_delta", 0.0)
        wrapped = None if wrapped_name == "none" else _simple_pruner(wrapped_name, opts)
        return optuna.pruners.PatientPruner(wrapped, patience=patience, min_delta=min_delta)
    return _simple_pruner(name, opts)


def _simple_pruner(name: str, opts: dict) -> optuna.pruners.BasePruner:
    if name == "median":
        opts.setdefault("n_startup_trials", 3)
        opts.setdefault("n_warmup_steps", 1)
        return optuna.pruners.MedianPruner(**opts)
    if name == "percentile":
        opts.setdefault("n_startup_trials", 3)
        opts.setdefault("n_warmup_steps", 1)
        return optuna.pruners.PercentilePruner(**opts)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**opts)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**opts)
    return optuna.pruners.NopPruner()  # "none", and "asha": its trials pause and are promoted (hpsearch.search.asha)


def fail_stale(study: optuna.Study) -> None:
    """Fails (and, with the heartbeat's retry callback, re-queues) the running trials of dead workers, as
    ``study.optimize`` does before each trial; Optuna's experimental-feature warning is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)


def versions() -> dict[str, str]:
    import torch  # (only a process that creates a study or retrains imports torch here: status stays torch-free)
    import torchvision

    return {"hpsearch": __version__, "optuna": optuna.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": sys.version.split()[0]}


def spec_differences(stored: Any, new: Any, prefix: str = "") -> list[str]:
    """Keys (``space.lr``, ``train.max_epochs``) whose values differ between two raw specs, run controls aside."""
    if prefix == "":
        new = json.loads(json.dumps(new))  # the JSON round trip: the form the study stores
    if not (isinstance(stored, dict) and isinstance(new, dict)):
        return [] if stored == new or prefix in RUN_CONTROLS else [prefix]
    out: list[str] = []
    for k in sorted(stored.keys() | new.keys()):
        out += spec_differences(stored.get(k), new.get(k), f"{prefix}.{k}" if prefix else k)
    return out


def open_study(spec: Spec, storage: optuna.storages.BaseStorage, name: str, force_spec: bool = False
               ) -> optuna.Study:
    """Creates the study (or loads it, when it exists) and records the spec, versions and metric name.

    An existing study keeps its stored spec: a different one is refused (SpecError) unless ``force_spec``,
    which replaces the stored spec for every later trial and worker.
    """
    existing = len(_trials_if_exists(storage, name))
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                sampler=build_sampler(spec, existing), pruner=build_pruner(spec))
    stored = study.user_attrs.get(SPEC)
    if stored is not None and (diff := spec_differences(json.loads(stored), spec.raw)):
        keys = ", ".join(f"`{k}`" for k in diff[:5]) + (f" and {len(diff) - 5} more" if len(diff) > 5 else "")
        if not force_spec:
            raise SpecError(f"study {name!r} already exists with a different spec ({keys} differ); the stored spec "
                            f"wins: join it with `hpsearch worker --study {name}`, choose another --study name, "
                            "or pass --force-spec to replace the stored spec")
        log.warning("study %r: replacing its stored spec (--force-spec; %s differ)", name, keys)
        study.set_user_attr(SPEC, json.dumps(spec.raw, sort_keys=True))
    if stored is None:
        study.set_user_attr(SPEC, json.dumps(spec.raw, sort_keys=True))
        study.set_user_attr(VERSIONS, versions())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC])
    for params in spec.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    return study


def _trials_if_exists(storage: optuna.storages.BaseStorage, name: str) -> list:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return []
    return storage.get_all_trials(study_id, deepcopy=False)


def stored_spec(study: optuna.Study) -> Spec:
    """The spec the study was created with (the source of truth for every worker that joins it)."""
    from hpsearch.spec.reader import parse_spec  # (the reader knows the model registry, which imports torch)

    raw = study.user_attrs.get(SPEC)
    if raw is None:
        raise HpsearchError(f"study {study.study_name!r} was not created by hpsearch (it has no stored spec)")
    return parse_spec(json.loads(raw))


def open_existing(url: str, name: str) -> optuna.Study:
    """An existing study, opened to read or inspect it (no heartbeat); StudyNotFound names the ones there are."""
    return load_study(open_storage(url, heartbeat=None), name)


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise StudyNotFound(f"no study named {name!r}; the storage holds: {', '.join(names) or 'no studies'}") from None
