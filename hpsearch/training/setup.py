"""One trial's pieces, built from its sampled values: the ``TrainConfig``, the model on its device (with its
pretrained weights when the study asks for them) and the data on its device, normalised as the model takes it.
The search (:mod:`hpsearch.search.objective`) and the final retraining (:mod:`hpsearch.deploy.retrain`) both
build through here, so a trial retrains exactly as it was searched."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from hpsearch.data.base import Dataset
from hpsearch.data.fidelity import apply_fidelity
from hpsearch.data.loader import DeviceData
from hpsearch.models import create_model, get_model_entry, takes_unit_range
from hpsearch.models.weights import RANDOM, load_pretrained
from hpsearch.params import arch_params, train_params
from hpsearch.spec import Spec, TrainSpec
from hpsearch.training.loop import LOOP_SETTINGS, TrainConfig

# channels_last helps convolutions on CUDA and on x86 CPUs alike (1.3x measured on the project's CPU)
CHANNELS_LAST = True


def train_config(spec: Spec, values: dict[str, Any], seed: int, precision: str, **overrides: Any) -> TrainConfig:
    """The trial's hyperparameters (a value a stored config lacks, e.g. from an older hpsearch, takes its
    declared default) plus the study's training settings; ``overrides`` replace any field."""
    t = spec.train
    hparams = {name: values.get(name, p.default) for name, p in train_params().items()}
    cfg = TrainConfig(**hparams, **{name: getattr(t, name) for name in LOOP_SETTINGS}, precision=precision,
                      seed=seed)
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def build_model(values: dict[str, Any], ds: Dataset, device: torch.device, seed: int) -> nn.Module:
    """The trial's architecture, initialised from ``seed``, on ``device``."""
    return build_trial_model(values, ds, device, seed)[0]


def build_trial_model(values: dict[str, Any], ds: Dataset, device: torch.device, seed: int,
                      train: TrainSpec | None = None) -> tuple[nn.Module, str]:
    """The trial's architecture, initialised from ``seed`` and, when ``train.pretrained``, loaded with its
    pretrained weights (all but the classifier), on ``device``; and where its weights came from
    (``hpsearch.models.weights``: ``file:/path``, ``timm cache:/path``, ... or ``random``)."""
    torch.manual_seed(seed)
    model = create_model(values["arch"], ds.num_classes, ds.in_channels, ds.image_size, **arch_params(values))
    source = RANDOM
    if train is not None and train.pretrained:
        source = load_pretrained(model, values["arch"], train.weights_dir, train.offline)
    model = model.to(device, memory_format=torch.channels_last if CHANNELS_LAST else torch.preserve_format)
    return model, source


def device_data(ds: Dataset, device: torch.device) -> DeviceData:
    """``ds`` moved to ``device`` once (uint8), in the memory format the models use."""
    return DeviceData(ds, device, channels_last=CHANNELS_LAST)


class FidelityViews:
    """The study's dataset on the device at a trial's fidelity (``fraction``, ``image_size``), made once for
    all the trials of a process; only the most recent fidelity stays cached (device memory is the limit)."""

    def __init__(self, dataset: Dataset, device: torch.device, seed: int):
        self.dataset, self.device, self.seed = dataset, device, seed
        self._views: dict[tuple[float, int], DeviceData] = {}

    def get(self, fraction: float, image_size: int) -> tuple[DeviceData, Dataset]:
        """The data on the device and the dataset it holds, at this fidelity."""
        ds = apply_fidelity(self.dataset, fraction, image_size, self.seed)
        key = (fraction, image_size)
        if key not in self._views:
            self._views.clear()
            self._views[key] = device_data(ds, self.device)
        return self._views[key], ds


def model_data(data: DeviceData, model: nn.Module) -> DeviceData:
    """``data`` as ``model`` takes it: a model that normalises its input itself (timm:, tv:, with the mean and
    std of its pretrained weights) gets images scaled to [0, 1]; any other the dataset's normalisation."""
    return data.scaled_to_unit() if takes_unit_range(model) else data


def trial_inputs(spec: Spec, views: FidelityViews, values: dict[str, Any], seed: int, precision: str
                 ) -> tuple[DeviceData, Dataset, TrainConfig]:
    """A search trial's data on the device at its fidelity, the dataset it holds, and its ``TrainConfig``."""
    data, ds = views.get(values["fraction"], values["image_size"])
    return data, ds, train_config(spec, values, seed, precision)


def trial_model(values: dict[str, Any], ds: Dataset, data: DeviceData, device: torch.device, seed: int,
                train: TrainSpec | None = None) -> tuple[nn.Module, DeviceData, str]:
    """The trial's model (:func:`build_trial_model`), ``data`` as that model takes it (:func:`model_data`), and
    where the model's weights came from."""
    model, weights = build_trial_model(values, ds, device, seed, train)
    return model, model_data(data, model), weights


def check_pretrained(spec: Spec) -> None:
    """When the study asks for pretrained weights: loads them now into every architecture the space can pick
    (downloading them to the library's cache if that is where they come from), so that weights that cannot be
    found or do not fit are one SpecError line before a study is created rather than failed trials."""
    if not spec.train.pretrained:
        return
    arch = spec.dimension("arch")
    size = spec.dimension("image_size")
    for name in arch.choices if arch.choices is not None else (arch.value,):
        # the classifier's size does not matter (it is never loaded); a fixed image_size sizes a ViT as the trials do
        image_size = size.value if size.fixed and size.value else max(64, get_model_entry(name).min_size)
        model = create_model(name, 10, 3, image_size)
        load_pretrained(model, name, spec.train.weights_dir, spec.train.offline)
