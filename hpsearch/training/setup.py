"""One trial's pieces, built from its sampled values: the ``TrainConfig``, the model on its device and the data
on its device. The search (:mod:`hpsearch.search.objective`) and the final retraining (:mod:`hpsearch.deploy.retrain`) both
build through here, so a trial retrains exactly as it was searched."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from hpsearch.data.base import Dataset
from hpsearch.data.loader import DeviceData
from hpsearch.models import create_model
from hpsearch.params import arch_params, train_params
from hpsearch.spec import Spec
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
    torch.manual_seed(seed)
    model = create_model(values["arch"], ds.num_classes, ds.in_channels, ds.image_size, **arch_params(values))
    return model.to(device, memory_format=torch.channels_last if CHANNELS_LAST else torch.preserve_format)


def device_data(ds: Dataset, device: torch.device) -> DeviceData:
    """``ds`` moved to ``device`` once (uint8), in the memory format the models use."""
    return DeviceData(ds, device, channels_last=CHANNELS_LAST)
