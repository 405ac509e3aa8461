"""The model registry: ``@register_model`` entry functions and ``create_model(name, ...)``.

An entry function takes ``num_classes``, ``in_channels``, ``image_size`` and its own keyword parameters,
declared with :class:`hpsearch.params.Param` so that study files can search over them as ``<name>.<param>``.
Any torchvision classification model is also available as ``tv:<name>`` (e.g. ``tv:resnet18``), randomly
initialised, with its first conv adapted to ``in_channels`` and no tunable parameters.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from hpsearch.errors import SpecError, first_line
from hpsearch.params import Param

ModelFn = Callable[..., nn.Module]

TV_PREFIX = "tv:"

# Smallest input side (px) of the torchvision models that need more than the registry's 28 px, by name prefix,
# first match wins. Measured with a batch-1 forward pass under torchvision 0.29; build_tv_model repeats that
# pass, so a model this table gets wrong fails at creation with a clear error rather than during training.
TV_MIN_SIZES = (
    ("alexnet", 63),
    ("convnext_", 32),
    ("densenet", 29),
    ("inception_v3", 75),
    ("maxvit_", 221),  # and only 221-224, 445-448, ...: its feature maps must split into 7x7 windows
    ("vgg", 32),
    ("vit_h_", 28),  # ViTs are built for the image size, which must be a multiple of the patch size
    ("vit_", 32),
)
TV_EXAMPLES = ("tv:resnet18", "tv:mobilenet_v3_small", "tv:efficientnet_b0", "tv:convnext_tiny")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: ModelFn
    params: dict[str, Param] = field(default_factory=dict)
    min_size: int = 28  # smallest input side (px) the network accepts
    doc: str = ""


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, params: dict[str, Param] | None = None, min_size: int = 28):
    """Decorator that registers ``fn`` under ``name`` with its tunable ``params``."""

    def wrap(fn: ModelFn) -> ModelFn:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _MODELS[name] = ModelEntry(name, fn, dict(params or {}), min_size, doc)
        return fn

    return wrap


def list_models() -> list[str]:
    """The registered architectures; torchvision's ``tv:<name>`` models are not listed."""
    return sorted(_MODELS)


def is_known_model(name: str) -> bool:
    """Whether ``name`` is a registered architecture or ``tv:`` and a torchvision classification model."""
    if name.startswith(TV_PREFIX):
        return name.removeprefix(TV_PREFIX) in tv_model_names()
    return name in _MODELS


def get_model_entry(name: str) -> ModelEntry:
    if name.startswith(TV_PREFIX):
        return tv_model_entry(name)
    try:
        return _MODELS[name]
    except KeyError:
        raise SpecError(
            f"unknown architecture {name!r}; registered: {', '.join(list_models())}, "
            f"or {TV_PREFIX}<name> for a torchvision model (e.g. {TV_EXAMPLES[0]})"
        ) from None


def create_model(name: str, num_classes: int, in_channels: int, image_size: int = 32, **params) -> nn.Module:
    """Builds the registered model ``name``; missing parameters take their declared defaults."""
    entry = get_model_entry(name)
    unknown = sorted(set(params) - set(entry.params))
    if unknown:
        raise SpecError(f"{name} has no parameter {unknown[0]!r}; it takes: {', '.join(sorted(entry.params))}")
    if image_size < entry.min_size:
        raise SpecError(f"images are {image_size} px, but {name} needs at least {entry.min_size} px")
    kwargs = {k: p.default for k, p in entry.params.items()} | params
    for key, value in kwargs.items():
        problem = entry.params[key].check(f"{name}.{key}", value)
        if problem:
            raise SpecError(problem)
    return entry.fn(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# torchvision models as tv:<name>


@functools.cache
def tv_model_names() -> frozenset[str]:
    """torchvision's classification models (imported on first use: torchvision takes a while to load)."""
    from torchvision import models

    return frozenset(models.list_models(module=models))


def tv_model_entry(name: str) -> ModelEntry:
    """The entry for ``tv:<model>``; an unknown model raises :class:`SpecError` naming a few that exist."""
    tv_name = name.removeprefix(TV_PREFIX)
    if tv_name not in tv_model_names():
        close = difflib.get_close_matches(tv_name, sorted(tv_model_names()), n=4)
        examples = [TV_PREFIX + n for n in close] or list(TV_EXAMPLES)
        raise SpecError(
            f"unknown torchvision model {name!r}; valid names include {', '.join(examples)} "
            "(all of them: torchvision.models.list_models(module=torchvision.models))"
        )
    min_size = next((size for prefix, size in TV_MIN_SIZES if tv_name.startswith(prefix)), 28)
    fn = functools.partial(build_tv_model, tv_name)
    return ModelEntry(name, fn, {}, min_size, f"torchvision {tv_name}, random init")


def build_tv_model(tv_name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's ``tv_name`` with random weights (never downloaded), checked by one forward pass."""
    from torchvision import models

    kwargs: dict = {}
    if tv_name in ("googlenet", "inception_v3"):
        # Without the auxiliary heads the model returns plain logits in training mode too.
        kwargs |= {"aux_logits": False, "init_weights": True}
    elif tv_name.startswith("vit_"):
        kwargs["image_size"] = image_size  # sizes the position embedding
    elif tv_name.startswith("maxvit_"):
        kwargs["input_size"] = (image_size, image_size)
    try:
        model = models.get_model(tv_name, weights=None, num_classes=num_classes, **kwargs)
        if in_channels != 3:
            replace_first_conv(model, in_channels)
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except (RuntimeError, ValueError, AssertionError) as e:  # torch._assert raises AssertionError
        reason = first_line(e, type(e).__name__)
        problem = f"images are {image_size} px, but {TV_PREFIX}{tv_name} cannot take them: {reason}"
        raise SpecError(problem) from None
    return model.train()


def replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swaps the model's first ``Conv2d`` (its input layer) for a fresh one taking ``in_channels``."""
    path, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)
