"""Resolving ``device`` and ``precision`` settings to what this machine can do."""

from __future__ import annotations

import torch

from hpsearch.errors import SpecError


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA GPU if there is one, else the CPU; an unavailable device is a SpecError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"device {name!r} was asked for, but CUDA is not available here; use cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SpecError(f"device {name!r} was asked for, but there are {torch.cuda.device_count()} GPUs")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SpecError("device 'mps' was asked for, but MPS is not available here; use cpu or auto")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 autocast on GPUs that support it (fp16 on older ones), fp32 on the CPU.

    On this project's reference CPU, bf16 autocast made small conv nets 5-10x slower (see README), so the
    CPU default stays fp32; bf16 can still be forced.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def configure(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
