"""A model's classifier head and the rest of it (the backbone), for fine-tuning: a lower learning rate for the
backbone (``backbone_lr_mult``) and head-only training for the first epochs (``freeze_epochs``).

The head is what timm says it is (``get_classifier()``, on the model or the first submodule that has it: a model
may be wrapped); else the model's last ``nn.Linear`` in registration order, which is the classifier of every
registered architecture (lenet, vgg, resnet, alexnet, airbench) and of torchvision's (``fc``, ``classifier[-1]``,
``heads.head``); else, for a model without one (torchvision's SqueezeNet ends in a 1x1 convolution), its last
module that holds parameters. The backbone is every parameter that is not the head's.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["backbone_batchnorms", "head_names", "head_of", "split_params"]


def head_of(model: nn.Module) -> nn.Module:
    """The classifier of ``model`` (see the module docstring); ``ValueError`` when it has no parameters."""
    head = None
    for _, module in model.named_modules():
        get = getattr(module, "get_classifier", None)
        if callable(get):  # timm's models, possibly inside a wrapper
            head = get()
            break
    if head is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        holders = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
        head = linears[-1] if linears else holders[-1] if holders else None
    if head is None or not any(True for _ in head.parameters()):
        raise ValueError(f"{type(model).__name__} has no classifier with parameters to tell from its backbone")
    return head


def head_names(model: nn.Module) -> set[str]:
    """The names (as in ``model.named_parameters()``) of the head's parameters."""
    ids = {id(p) for p in head_of(model).parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(head, backbone) parameters of ``model``, each in ``model.parameters()`` order."""
    ids = {id(p) for p in head_of(model).parameters()}
    params = list(model.parameters())
    return [p for p in params if id(p) in ids], [p for p in params if id(p) not in ids]


def backbone_batchnorms(model: nn.Module) -> list[str]:
    """The names of the backbone's BatchNorm layers (any ``_BatchNorm``, timm's ``BatchNormAct2d`` included): the
    layers whose running statistics a frozen backbone keeps, in eval mode."""
    inside = {id(m) for m in head_of(model).modules()}
    return [n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and id(m) not in inside]
