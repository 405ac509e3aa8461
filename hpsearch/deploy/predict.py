"""Classifying new images with a model file: decode, resize, normalise, batch, top-k."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from hpsearch.data.imagefolder import IMAGE_EXTENSIONS, decode
from hpsearch.deploy.modelfile import load_model
from hpsearch.errors import HpsearchError


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first


def image_paths(inputs: list[str]) -> Iterator[Path]:
    """Files as given, and image files found recursively (sorted) in given folders."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            yield p


def to_input(img: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(3, H, W) uint8 RGB → (in_channels, H, W) uint8 (ITU-R 601 luma for one channel)."""
    if in_channels == 3:
        return img
    luma = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).round().clamp(0, 255).to(torch.uint8)
    return luma.unsqueeze(0).expand(in_channels, -1, -1)


@torch.inference_mode()
def predict(model_file: str, inputs: list[str], top_k: int = 5, device: str = "cpu", batch_size: int = 256,
            stream: TextIO = sys.stderr) -> tuple[list[Prediction], list[str]]:
    """Returns the predictions and the paths that could not be read (each reported once on ``stream``)."""
    dev = torch.device(device)
    model, meta = load_model(model_file, dev)
    size, channels, classes = meta["image_size"], meta["in_channels"], meta["classes"]
    mean = torch.tensor(meta["mean"], device=dev).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"], device=dev).view(1, -1, 1, 1)
    k = min(top_k, len(classes))
    out: list[Prediction] = []
    skipped: list[str] = []
    batch: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        x = torch.stack([t for _, t in batch]).to(dev).float().div_(255.0)
        probs = model((x - mean) / std).float().softmax(dim=1)
        p, idx = probs.topk(k, dim=1)
        for (path, _), pr, ix in zip(batch, p.tolist(), idx.tolist(), strict=True):
            out.append(Prediction(path, [(classes[i], round(v, 6)) for i, v in zip(ix, pr, strict=True)]))
        batch.clear()

    for path in image_paths(inputs):
        img = decode(path, size) if path.is_file() else None
        if img is None:
            skipped.append(str(path))
            print(f"skipped {path}: not a readable image", file=stream)
            continue
        batch.append((str(path), to_input(img, channels)))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return out, skipped


def format_predictions(preds: list[Prediction], skipped: list[str], as_json: bool = False) -> str:
    """What ``hpsearch predict`` prints: one line per image (``path: class p, ...``) or JSON; HpsearchError
    (exit 1) when no input was a readable image."""
    if not preds:
        raise HpsearchError(f"no readable image among {len(skipped)} input(s)")
    if as_json:
        return json.dumps({"predictions": [{"path": p.path, "top": [{"class": c, "probability": v} for c, v in p.top]}
                                           for p in preds], "skipped": skipped}, indent=2)
    return "\n".join(f"{p.path}: " + ", ".join(f"{c} {v:.3f}" for c, v in p.top) for p in preds)
