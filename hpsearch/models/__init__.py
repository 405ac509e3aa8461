"""CNN architectures behind one registry; importing this package registers every built-in model."""

from __future__ import annotations

from hpsearch.models import airbench, alexnet, lenet, resnet, vgg  # noqa: F401  (registration side effect)
from hpsearch.models._registry import (
    ModelEntry,
    create_model,
    get_model_entry,
    is_known_model,
    list_models,
    register_model,
)

__all__ = ["ModelEntry", "create_model", "get_model_entry", "is_known_model", "list_models", "register_model"]
