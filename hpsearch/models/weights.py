"""Pretrained weights for ``timm:<name>`` and ``tv:<name>`` models: where they are found, whether they fit, and
loading them into a model built by :func:`hpsearch.models.create_model`.

Lookup order, first match wins (:func:`find_weights`):

1. ``weights_dir/<name>.safetensors`` or ``weights_dir/<name>.pth``: a plain state dict in the library's naming
   (``<name>`` without the prefix, e.g. ``efficientnet_lite0.safetensors``; ``.pth`` is read with
   ``torch.load(weights_only=True)``, which refuses pickled code);
2. the library's own cache, without the network: timm's weights in the Hugging Face hub cache
   (``$HF_HOME/hub``) or torch.hub's checkpoints folder, torchvision's in torch.hub's checkpoints folder;
3. the library's normal download, unless downloads are off (``offline``: ``--offline`` or ``$HF_HUB_OFFLINE``).

Weights that do not fit the model (a tensor missing, left over or of another shape, the classifier aside: it is
sized for the study's classes and keeps its random init) raise one SpecError line naming the first mismatch;
weights that cannot be found raise one naming where they were looked for. Nothing falls back to a random init.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hpsearch.errors import SpecError, first_line
from hpsearch.models._registry import (
    TIMM_PREFIX,
    TV_PREFIX,
    AdaptedNet,
    get_model_entry,
    import_timm,
)

RANDOM = "random"  # what a trial without pretrained weights records as their source
EXTENSIONS = (".safetensors", ".pth")
HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a hub repository, in its order


def offline_env() -> bool:
    """Whether ``$HF_HUB_OFFLINE`` turns downloads off (Hugging Face's own switch, honoured for torchvision too)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Found:
    """Where a model's weights are: ``kind`` is "file" (weights_dir), "cache" or "download"; ``where`` the path
    or the address."""

    arch: str
    kind: str
    where: str

    @property
    def source(self) -> str:
        """What the trial records (user attribute ``weights``): ``file:/path``, ``timm cache:/path``, ..."""
        if self.kind == "file":
            return f"file:{self.where}"
        return f"{library(self.arch)} {self.kind}:{self.where}"


def library(arch: str) -> str:
    return "timm" if arch.startswith(TIMM_PREFIX) else "torchvision"


def file_name(arch: str) -> str:
    """The name of ``arch``'s weights in a weights_dir, without extension: the library's own model name."""
    return arch.removeprefix(TIMM_PREFIX).removeprefix(TV_PREFIX)


# ---------------------------------------------------------------------------------------------------------------
# Finding them


def find_weights(arch: str, weights_dir: str | None, offline: bool) -> Found:
    """Where ``arch``'s pretrained weights are, in the lookup order of the module docstring (``offline`` or
    ``$HF_HUB_OFFLINE``: never the download); SpecError when there are none."""
    if not arch.startswith((TIMM_PREFIX, TV_PREFIX)):
        raise SpecError(f"{arch} has no pretrained weights; `train.pretrained` needs timm:<name> or tv:<name> "
                        "architectures")
    get_model_entry(arch)  # an unknown name says so first
    name = file_name(arch)
    looked = []
    if weights_dir is not None:
        folder = Path(weights_dir).expanduser()
        if not folder.is_dir():
            raise SpecError(f"weights_dir {str(folder)!r} is not a folder")
        for ext in EXTENSIONS:
            if (folder / (name + ext)).is_file():
                return Found(arch, "file", str((folder / (name + ext)).resolve()))
        looked.append(f"no {name}.safetensors or {name}.pth in {folder}")
    else:
        looked.append("no weights_dir ([train] weights_dir, --weights-dir or $HPSEARCH_WEIGHTS)")
    cached, remote, cache_dir = _timm_location(arch) if arch.startswith(TIMM_PREFIX) else _tv_location(arch)
    if remote is None:
        raise SpecError(f"{arch} has no pretrained weights in {library(arch)}; {looked[0]}")
    if cached is not None:
        return Found(arch, "cache", cached)
    looked.append(f"not in {library(arch)}'s cache ({cache_dir})")
    if offline or offline_env():
        raise SpecError(f"pretrained weights for {arch} not found: {'; '.join(looked)}; and downloads are off "
                        "(--offline or $HF_HUB_OFFLINE)")
    return Found(arch, "download", remote)


def _timm_location(arch: str) -> tuple[str | None, str | None, str]:
    """(the cached file or None, the hub repository or URL it comes from or None, the cache folder)."""
    timm = import_timm()
    cfg = timm.models.get_pretrained_cfg(file_name(arch))
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else HF_FILES
        for filename in names:
            path = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(path, str):
                return path, hub_id, constants.HF_HUB_CACHE
        return None, hub_id, constants.HF_HUB_CACHE
    if url:
        return _hub_checkpoint(url), url, str(Path(torch.hub.get_dir()) / "checkpoints")
    return None, None, ""


def _tv_location(arch: str) -> tuple[str | None, str | None, str]:
    from torchvision import models

    try:
        url = models.get_model_weights(file_name(arch)).DEFAULT.url
    except (ValueError, AttributeError, KeyError):
        return None, None, ""
    return _hub_checkpoint(url), url, str(Path(torch.hub.get_dir()) / "checkpoints")


def _hub_checkpoint(url: str) -> str | None:
    """torch.hub's cached copy of the file at ``url`` (what load_state_dict_from_url would read), if present."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
    return str(path) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------------------
# Loading them


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A plain state dict from a ``.safetensors`` or ``.pth`` file (``weights_only``: no pickled code runs)."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpecError(f"cannot read weights file {path}: {type(e).__name__}: {first_line(e)[:200]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = ", ".join(map(repr, list(state)[:3])) if isinstance(state, dict) else type(state).__name__
        raise SpecError(f"weights file {path} is not a plain state dict (names to tensors); it holds {keys}")
    return state


def library_state_dict(model: AdaptedNet, arch: str, found: Found) -> dict[str, torch.Tensor]:
    """The weights as the library itself loads them, from its cache (``found.kind`` "cache": no network) or its
    download, into a copy of the model built alike: timm applies its own checkpoint filters (a ViT's position
    embedding resized to the study's image size, a stem adapted to other channel counts), torchvision its key
    renames (DenseNet)."""
    if arch.startswith(TIMM_PREFIX):
        timm = import_timm()
        overlay = {"file": found.where} if found.kind == "cache" else None
        return timm.create_model(file_name(arch), pretrained=True, pretrained_cfg_overlay=overlay,
                                 **model.kwargs).state_dict()
    from torchvision import models

    name = file_name(arch)
    state = models.get_model(name, weights=models.get_model_weights(name).DEFAULT).state_dict()
    # GoogLeNet's and Inception's auxiliary classifiers, which hpsearch builds without (aux_logits=False)
    return {k: v for k, v in state.items() if k.split(".")[0] not in ("aux1", "aux2", "AuxLogits")}


def check_fit(state: dict[str, torch.Tensor], model: AdaptedNet, what: str, arch: str) -> None:
    """SpecError naming the first tensor of ``state`` that does not fit ``model.net`` (missing, left over, or of
    another shape), the classifier aside; BatchNorm's ``num_batches_tracked`` counters may be missing."""
    target = model.net.state_dict()

    def in_head(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in model.head)

    problems = []
    for key, tensor in target.items():
        if in_head(key):
            continue
        if key not in state:
            if not key.endswith("num_batches_tracked"):
                problems.append(f"it lacks tensor {key!r} {tuple(tensor.shape)}")
        elif tuple(state[key].shape) != tuple(tensor.shape):
            problems.append(f"tensor {key!r} is {tuple(state[key].shape)} there but {tuple(tensor.shape)} in the model")
    problems += [f"it has tensor {key!r}, which the model lacks" for key in state
                 if key not in target and not in_head(key)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SpecError(f"pretrained weights {what} do not fit {arch}: {problems[0]}{more}")


def load_pretrained(model: nn.Module, arch: str, weights_dir: str | None, offline: bool) -> str:
    """Loads ``arch``'s pretrained weights into ``model`` (built by create_model) but for its classifier, and
    returns where they came from (``file:/path``, ``timm cache:/path``, ``torchvision download:URL``, ...)."""
    if not isinstance(model, AdaptedNet):
        raise SpecError(f"{arch} has no pretrained weights; `train.pretrained` needs timm:<name> or tv:<name> "
                        "architectures")
    found = find_weights(arch, weights_dir, offline)
    if found.kind == "file":
        state = read_state_dict(found.where)
    else:
        try:
            state = library_state_dict(model, arch, found)
        except SpecError:
            raise
        except Exception as e:  # a failed download, a damaged cache file: one line
            raise SpecError(f"cannot load {arch}'s pretrained weights from {found.source}: {type(e).__name__}: "
                            f"{first_line(e)[:200]}") from None
    check_fit(state, model, f"in {found.where}" if found.kind == "file" else f"from {found.source}", arch)
    own = model.net.state_dict()
    own.update({k: v for k, v in state.items() if k in own and not any(
        k == h or k.startswith(h + ".") for h in model.head)})
    model.net.load_state_dict(own)
    return found.source
