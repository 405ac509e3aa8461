"""The frozen spec objects a study file is read into, and the numbers derived from them (how many eval
points a trial has). Torch-free: the console, status and report read a stored spec through these classes
without importing a model; :mod:`hpsearch.spec.reader` parses and validates the TOML."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from hpsearch.params import GLOBAL_PARAMS, Param

DATASETS = ("fashion-mnist", "mnist", "fashion-mnist-sample", "cifar10", "cifar100", "imagefolder", "synthetic")
# \Z, not $: "$" also matches before a trailing newline ("cpu\n"); [0-9], not \d: no other scripts' digits
DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:[0-9]{1,4}|mps)\Z")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("onecycle", "linear", "constant")
STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
INT64 = (-(2**63), 2**63 - 1)  # TOML integers are 64-bit; tomllib reads any size, so the spec checks
MAX_DEPTH = 8  # tables nested deeper than any valid key (space.resnet.depth.low is 4 deep) are refused


def global_params() -> dict[str, Param]:
    """The parameters every study has, with their defaults (used when the space omits them)."""
    return dict(GLOBAL_PARAMS)


# ----------------------------------------------------------------------------------------------------------
# Frozen spec objects


@dataclass(frozen=True)
class StudySpec:
    name: str
    seed: int = 0
    n_trials: int = 20  # finished trials the study should hold in total
    timeout: float | None = None  # seconds for one `hpsearch run`
    # stop rules, checked by every worker before each trial (hpsearch.search.scheduler.stop_reason):
    patience: int | None = None  # stop when N finished trials in a row did not improve the best by min_delta
    min_delta: float = 0.0  # val Top-1 points
    target: float | None = None  # stop once a trial reaches this val Top-1 (%)


@dataclass(frozen=True)
class DataSpec:
    dataset: str
    root: str | None = None
    val_fraction: float = 1 / 6  # of the training set, held out for validation (10k of Fashion-MNIST's 60k)
    val_size: int | None = None  # overrides val_fraction when set
    # imagefolder only: a class count or names, a fraction of each class's images (scan time)
    classes: int | tuple[str, ...] | None = None
    fraction: float = 1.0
    # synthetic and imagefolder: image side in px (imagefolder default 64, synthetic 32)
    image_size: int = 32
    channels: int = 3
    num_classes: int = 10
    n_images: int = 2000


@dataclass(frozen=True)
class TrainSpec:
    max_epochs: int = 5
    eval_every: float = 0.5  # epochs between validation points
    device: str = "auto"
    precision: str = "auto"
    schedule: str = "onecycle"
    warmup: float = 0.2  # fraction of all steps spent warming up
    eval_batch_size: int = 1024
    max_trial_seconds: float | None = None  # wall seconds of training per trial; then pruned (time_limit)
    pack: int | str = "auto"  # trials trained as one fused model (hpsearch.training.pack); "auto": 1 on the CPU
    # timm:/tv: models start from their pretrained weights (hpsearch.models.weights: weights_dir, the library's
    # cache, its download); offline forbids the download: set by --offline or $HF_HUB_OFFLINE, not by the study
    # file (whether a host may download is the host's business)
    pretrained: bool = False
    weights_dir: str | None = None
    offline: bool = False


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrunerSpec:
    name: str = "median"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dimension:
    """One parameter of the search space: fixed, categorical or a numeric range."""

    name: str  # Optuna parameter name: "lr", "resnet.depth"
    param: Param
    value: Any = None  # fixed value
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    arch: str | None = None  # set for architecture parameters: sampled only when this arch is chosen

    @property
    def fixed(self) -> bool:
        return self.choices is None and self.low is None

    def contains(self, value: Any) -> bool:
        if self.fixed:
            return value == self.value
        if self.choices is not None:
            return value in self.choices
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.fixed:
            return f"= {self.value!r}"
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        extra = " log" if self.log else (f" step {self.step}" if self.step else "")
        return f"{self.param.kind} in [{self.low}, {self.high}]{extra}"


@dataclass(frozen=True)
class Spec:
    study: StudySpec
    data: DataSpec
    train: TrainSpec
    sampler: SamplerSpec
    pruner: PrunerSpec
    space: tuple[Dimension, ...]
    enqueue: tuple[dict[str, Any], ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def dimension(self, name: str) -> Dimension:
        return next(d for d in self.space if d.name == name)



def n_evals(max_epochs: float, eval_every: float) -> int:
    """How many eval points a trial of ``max_epochs`` epochs has when it is evaluated every ``eval_every``
    epochs and at the end: ⌈max_epochs / eval_every⌉, with a float tolerance (3 / 0.3 is 10.000000000000002 in
    floating point, and 10 points, not 11). The one place this number is computed: the loop, the console, asha's
    rungs and pack trials all call it."""
    return max(1, math.ceil(max_epochs / eval_every - 1e-9))

def structural_names(spec: Spec) -> set[str]:
    """The searched parameters that a trial pack's members share (they change tensor shapes or steps)."""
    return {d.name for d in spec.space if not d.fixed and (d.arch is not None or d.param.structural)}


def with_overrides(spec: Spec, n_trials: int | None = None, timeout: float | None = None, device: str | None = None,
                   seed: int | None = None, pack: int | str | None = None, patience: int | None = None,
                   min_delta: float | None = None, target: float | None = None, weights_dir: str | None = None,
                   offline: bool = False) -> Spec:
    """``spec`` with command-line overrides applied (they apply to one command and are not stored in the study);
    ``offline`` only ever turns downloads off."""
    study = dataclasses.replace(
        spec.study,
        n_trials=spec.study.n_trials if n_trials is None else n_trials,
        timeout=spec.study.timeout if timeout is None else timeout,
        seed=spec.study.seed if seed is None else seed,
        patience=spec.study.patience if patience is None else patience,
        min_delta=spec.study.min_delta if min_delta is None else min_delta,
        target=spec.study.target if target is None else target,
    )
    train = spec.train if device is None else dataclasses.replace(spec.train, device=device)
    train = train if pack is None else dataclasses.replace(train, pack=pack)
    train = train if weights_dir is None else dataclasses.replace(train, weights_dir=weights_dir)
    train = dataclasses.replace(train, offline=True) if offline else train
    return dataclasses.replace(spec, study=study, train=train)
