"""Declarations of tunable parameters: their kind, default and allowed values.

Both the global parameters (``lr``, ``batch_size``, ...) and each architecture's own parameters
(``resnet.depth``) are declared with :class:`Param`, so the spec parser can check a study file's search
space against one source of truth and :mod:`hpsearch.search.space` knows which ``suggest_*`` to call.

:data:`GLOBAL_PARAMS` is the one table of the global parameters. Those whose ``role`` is ``"train"`` are
also the hyperparameter fields of :class:`hpsearch.training.loop.TrainConfig` (built from this table), so a new
training hyperparameter (say ``momentum``) is declared here once and reaches the study file, the search
space, the stored trial config and ``fit``'s config without further edits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from hpsearch.errors import not_one_of, one_of, toml_literal

Kind = Literal["int", "float", "str"]
Role = Literal["model", "train", "fidelity"]
PY_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}


@dataclass(frozen=True)
class Param:
    """One tunable parameter.

    ``low``/``high`` bound numeric values (inclusive); ``choices`` lists the allowed values of a ``str``
    parameter or, for an ``int`` parameter, the only allowed values (e.g. ResNet depths ``6n+2``).
    """

    kind: Kind
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    role: Role | None = None  # global parameters only: what the value configures (see GLOBAL_PARAMS)
    # changes tensor shapes or the step sequence: a trial pack's members share it (architecture parameters all do)
    structural: bool = False

    def check(self, name: str, value: Any) -> str | None:
        """Returns why ``value`` is not allowed for parameter ``name``, or None when it is."""
        if self.kind == "str":
            if not isinstance(value, str):
                return f"`{name}` is {toml_literal(value)}, but must be a string, {one_of(self.choices or ())}"
            if self.choices is not None and value not in self.choices:
                return not_one_of(name, value, self.choices)
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"`{name}` is {value!r}, but must be a number ({self.kind})"
        if self.kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
            return f"`{name}` is {value!r}, but must be an integer"
        if isinstance(value, float) and not math.isfinite(value):  # (math.isfinite of a huge int overflows)
            return f"`{name}` is {value!r}, but must be finite"
        if self.choices is not None and value not in self.choices:
            return not_one_of(name, value, self.choices)
        if self.low is not None and value < self.low:
            return f"`{name}` is {value!r}, but must be ≥ {self.low}"
        if self.high is not None and value > self.high:
            return f"`{name}` is {value!r}, but must be ≤ {self.high}"
        return None


# The global parameters every study has, with their defaults (used when the space omits them). role:
# "model" picks the network, "train" goes into TrainConfig, "fidelity" shapes the trial's data.
GLOBAL_PARAMS: dict[str, Param] = {
    "arch": Param("str", "resnet", help="a registered architecture, or tv:<torchvision model>", role="model",
                  structural=True),
    "lr": Param("float", 0.05, low=1e-7, high=10.0, help="peak learning rate", role="train"),
    "batch_size": Param("int", 128, low=1, high=16384, help="images per step", role="train", structural=True),
    "weight_decay": Param("float", 5e-4, low=0.0, high=1.0, help="decoupled for adamw, L2 for sgd", role="train"),
    "optimizer": Param("str", "sgd", choices=("sgd", "adamw"), help="sgd uses Nesterov momentum 0.9",
                       role="train", structural=True),
    "label_smoothing": Param("float", 0.0, low=0.0, high=0.5, role="train"),
    "aug_strength": Param("float", 0.0, low=0.0, high=1.0, help="0 = no augmentation", role="train"),
    # fine-tuning (hpsearch.models.heads tells a model's classifier head from its backbone): the backbone's lr is
    # lr × backbone_lr_mult; for the first freeze_epochs epochs only the head trains and the backbone's BatchNorm
    # layers keep their running statistics. A pack's members share freeze_epochs (one forward mode per step).
    "backbone_lr_mult": Param("float", 1.0, low=1e-4, high=10.0, help="the backbone's lr relative to the head's",
                              role="train"),
    "freeze_epochs": Param("int", 0, low=0, high=1000, help="epochs that train the head only, at first",
                           role="train", structural=True),
    # fidelities: train on a fraction of the training images, at a lower resolution (0 = native)
    "fraction": Param("float", 1.0, low=0.001, high=1.0, help="of the training images, per trial",
                      role="fidelity", structural=True),
    "image_size": Param("int", 0, low=0, high=1024, help="resize images to this side (0 = native)",
                        role="fidelity", structural=True),
}


def train_params() -> dict[str, Param]:
    """The global parameters that are fields of ``TrainConfig`` (role ``"train"``), in table order."""
    return {name: p for name, p in GLOBAL_PARAMS.items() if p.role == "train"}


def arch_params(values: dict[str, Any]) -> dict[str, Any]:
    """The chosen architecture's own parameters, without their ``<arch>.`` prefix."""
    prefix = values["arch"] + "."
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}


def fmt_params(params: dict[str, Any]) -> str:
    """A trial's parameters on one line: ``lr=0.01 arch=resnet`` (floats to 4 significant digits)."""
    def one(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return " ".join(f"{k}={one(v)}" for k, v in params.items())
