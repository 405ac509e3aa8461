"""Model files: trained weights plus everything needed to use them, loadable without running code.

A model file is ``torch.save`` of a dict holding only a format tag, a JSON string of metadata
(architecture and its parameters, input size and channels, normalisation mean/std, class names, test
Top-1/Top-5, versions, the configuration) and the model's ``state_dict``. Loading uses
``torch.load(weights_only=True)``, which refuses pickled objects, so a planted file cannot execute anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpsearch.errors import HpsearchError, first_line
from hpsearch.models import create_model

FORMAT = "hpsearch-model"
VERSION = 1


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    required = {"arch", "arch_params", "num_classes", "in_channels", "image_size", "mean", "std", "classes"}
    missing = required - set(meta)
    if missing:
        raise ValueError(f"model metadata lacks {sorted(missing)}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, "meta": json.dumps(meta), "state_dict": state}, tmp)
    tmp.replace(path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Returns (model in eval mode on ``device``, metadata); anything else is one HpsearchError line."""
    path = Path(path)
    if not path.is_file():
        raise HpsearchError(f"model file {str(path)!r} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = first_line(e, type(e).__name__)
        raise HpsearchError(f"{path} is not an hpsearch model file (refused to load it: {first[:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise HpsearchError(f"{path} is not an hpsearch model file (no '{FORMAT}' tag)")
    if blob.get("version") != VERSION:
        raise HpsearchError(f"{path} is an hpsearch model file of version {blob.get('version')}; this hpsearch "
                            f"reads version {VERSION}")
    try:
        meta = json.loads(blob["meta"])
        model = create_model(meta["arch"], meta["num_classes"], meta["in_channels"], meta["image_size"],
                             **meta["arch_params"])
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise HpsearchError(f"{path} is a damaged hpsearch model file: {type(e).__name__}: "
                            f"{first_line(e)[:200]}") from None
    return model.to(device).eval(), meta
