"""Classifying new images with a model file or its ONNX export: decode, resize, batch, top-k.

Both kinds of model take the same input, a batch of images as they are decoded: (N, C, S, S) uint8, RGB for
three channels, ITU-R 601 luma for one. :class:`Normalised` turns that into the normalised floats the network
was trained on; the ONNX export (:mod:`hpsearch.deploy.onnx`) is this same module traced, so the two paths
differ only by the runtime.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from hpsearch.data.imagefolder import IMAGE_EXTENSIONS, decode
from hpsearch.deploy.modelfile import load_model
from hpsearch.errors import HpsearchError


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), best first


@dataclass(frozen=True)
class Classifier:
    """What prediction needs of a model, whichever runtime holds it."""

    image_size: int  # S: images are decoded to S x S
    in_channels: int  # C: 3 (RGB) or 1 (luma)
    classes: list[str]
    logits: Callable[[torch.Tensor], torch.Tensor]  # (N, C, S, S) uint8, CPU -> (N, classes) float32, CPU


class Normalised(nn.Module):
    """A network behind its input normalisation: (N, C, S, S) uint8 (0-255) -> logits, as the training loader
    normalises (``x / 255``, then the training images' per-channel mean and std)."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.float() / 255.0 - self.mean) / self.std)


def normalised(model: nn.Module, meta: dict[str, Any]) -> Normalised:
    """A loaded model file's network (``load_model``) with its normalisation, in eval mode on its device."""
    device = next(model.parameters()).device
    return Normalised(model, meta["mean"], meta["std"]).to(device).eval()


def load_classifier(model_file: str, device: str = "cpu") -> Classifier:
    """A model file, or an ONNX model (a name ending in ``.onnx``, run by onnxruntime)."""
    if Path(model_file).suffix.lower() == ".onnx":
        # imported here: onnx.py imports this module (its export is Normalised, checked on read_images)
        from hpsearch.deploy.onnx import onnx_classifier

        return onnx_classifier(model_file, device)
    dev = torch.device(device)
    model, meta = load_model(model_file, dev)
    net = normalised(model, meta)
    return Classifier(meta["image_size"], meta["in_channels"], meta["classes"],
                      lambda x: net(x.to(dev)).float().cpu())


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


def read_images(inputs: list[str], size: int, in_channels: int, batch_size: int, skipped: list[str],
                stream: TextIO = sys.stderr) -> Iterator[tuple[list[str], torch.Tensor]]:
    """Batches of (paths, (N, in_channels, size, size) uint8) from image files and folders; a file that is not a
    readable image is appended to ``skipped`` and reported once on ``stream``."""
    batch: list[tuple[str, torch.Tensor]] = []
    for path in image_paths(inputs):
        img = decode(path, size) if path.is_file() else None
        if img is None:
            skipped.append(str(path))
            print(f"skipped {path}: not a readable image", file=stream)
            continue
        batch.append((str(path), to_input(img, in_channels)))
        if len(batch) == batch_size:
            yield [p for p, _ in batch], torch.stack([t for _, t in batch])
            batch = []
    if batch:
        yield [p for p, _ in batch], torch.stack([t for _, t in batch])


@torch.inference_mode()
def predict(model_file: str, inputs: list[str], top_k: int = 5, device: str = "cpu", batch_size: int = 256,
            stream: TextIO = sys.stderr) -> tuple[list[Prediction], list[str]]:
    """Returns the predictions and the paths that could not be read (each reported once on ``stream``)."""
    clf = load_classifier(model_file, device)
    k = min(top_k, len(clf.classes))
    out: list[Prediction] = []
    skipped: list[str] = []
    for paths, x in read_images(inputs, clf.image_size, clf.in_channels, batch_size, skipped, stream):
        p, idx = clf.logits(x).softmax(dim=1).topk(k, dim=1)
        for path, pr, ix in zip(paths, p.tolist(), idx.tolist(), strict=True):
            out.append(Prediction(path, [(clf.classes[i], round(v, 6)) for i, v in zip(ix, pr, strict=True)]))
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
