"""The model registry: ``@register_model`` entry functions and ``create_model(name, ...)``.

An entry function takes ``num_classes``, ``in_channels``, ``image_size`` and its own keyword parameters,
declared with :class:`hpsearch.params.Param` so that study files can search over them as ``<name>.<param>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from hpsearch.errors import SpecError
from hpsearch.params import Param

ModelFn = Callable[..., nn.Module]


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
    return sorted(_MODELS)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except KeyError:
        raise SpecError(f"unknown architecture {name!r}; registered: {', '.join(list_models())}") from None


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
