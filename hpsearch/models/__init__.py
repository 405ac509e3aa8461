"""CNN architectures behind one registry; importing this package registers every built-in model."""

from __future__ import annotations

from hpsearch.models import airbench, alexnet, lenet, resnet, vgg  # noqa: F401  (registration side effect)
from hpsearch.models._registry import (
    AdaptedNet,
    ModelEntry,
    create_model,
    fusable,
    get_model_entry,
    is_external,
    is_known_model,
    list_models,
    register_model,
    takes_unit_range,
)

__all__ = ["AdaptedNet", "ModelEntry", "create_model", "fusable", "get_model_entry", "is_external", "is_known_model",
           "list_models", "register_model", "takes_unit_range"]
