"""The study file → a frozen :class:`Spec`: the spec objects (:mod:`.schema`, torch-free) apart from the TOML
reader (:mod:`.reader`, which checks architectures against the model registry and so imports torch; its names
are imported on first use, so ``from hpsearch.spec import Spec`` stays torch-free)."""

from __future__ import annotations

import importlib
from typing import Any

from hpsearch.spec.schema import (
    DATASETS,
    DEVICE_RE,
    INT64,
    MAX_DEPTH,
    PRECISIONS,
    SCHEDULES,
    STUDY_NAME_RE,
    DataSpec,
    Dimension,
    PrunerSpec,
    SamplerSpec,
    Spec,
    StudySpec,
    TrainSpec,
    global_params,
    n_evals,
    structural_names,
    with_overrides,
)

_READER = ("load_spec", "parse_spec", "parse_pack", "MAX_PACK", "NATIVE_SIZE", "SECTIONS")
__all__ = ['DATASETS', 'DEVICE_RE', 'PRECISIONS', 'SCHEDULES', 'STUDY_NAME_RE', 'INT64', 'MAX_DEPTH', 'global_params', 'StudySpec', 'DataSpec', 'TrainSpec', 'SamplerSpec', 'PrunerSpec', 'Dimension', 'Spec', 'n_evals', 'structural_names', 'with_overrides', *_READER]


def __getattr__(name: str) -> Any:
    if name in _READER:
        return getattr(importlib.import_module("hpsearch.spec.reader"), name)
    raise AttributeError(f"module 'hpsearch.spec' has no attribute {name!r}")
