"""ONNX export of a model file, checked against PyTorch on real images, and ONNX models as ``predict`` classifiers.

The exported graph is :class:`~hpsearch.deploy.predict.Normalised` traced: its input ``image`` is exactly what
``predict`` feeds a model file, (batch, C, S, S) uint8 0-255 (RGB, or luma for one channel), with the training
images' mean/std baked into the graph; its output ``logits`` is (batch, classes). What comes before the graph
(decode, shorter side resized to S bilinear with antialiasing, centre crop, colour), the class names and the
model file's own metadata are recorded as JSON in the model's ``metadata_props`` under ``hpsearch``, so any ONNX
runtime can use the file without hpsearch. The exporter is torch's TorchScript-based one (``dynamo=False``): the
torch.export-based default needs onnxscript, which hpsearch does not depend on; the legacy exporter is
deprecated, and moving off it is ``dynamo=True`` plus onnxscript in the ``onnx`` extra. onnx and onnxruntime
(``pip install "hpsearch[onnx]"``) are imported only when a function here needs them.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import torch

from hpsearch.data.mnist import load_sample
from hpsearch.deploy.modelfile import load_model
from hpsearch.deploy.predict import Classifier, Normalised, normalised, read_images, to_input
from hpsearch.errors import HpsearchError, SpecError, first_line

METADATA_KEY = "hpsearch"  # the metadata_props entry holding the JSON below
FORMAT = "hpsearch-onnx"
VERSION = 1
INPUT, OUTPUT = "image", "logits"
OPSET = 17  # run by ONNX Runtime ≥ 1.13 and by most other runtimes; the CNNs here need nothing newer
RTOL = 1e-3  # largest allowed |logit difference|, relative to the largest |logit| (at least 1)
CHECK_BATCH = 64  # the check runs batches of 64 and of the remainder, not the export's dummy batch of 2


def _need(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise HpsearchError(f'ONNX models need {module}, which is not installed: pip install "hpsearch[onnx]"') \
            from None


def onnx_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON recorded in an exported model: its input and output, the preprocessing before the graph, the
    class names, and the model file's metadata (``model``: architecture, configuration, test Top-1, versions)."""
    size, channels, n = meta["image_size"], meta["in_channels"], len(meta["classes"])
    colour = "RGB" if channels == 3 else f"ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B, rounded) x {channels}"
    return {"format": FORMAT, "version": VERSION,
            "input": {"name": INPUT, "dtype": "uint8", "layout": "NCHW", "shape": ["batch", channels, size, size],
                      "range": [0, 255], "colour": colour},
            "preprocessing": {"image_size": size, "in_channels": channels,
                              "decode": "any image, as RGB (alpha dropped)", "resize": f"shorter side to {size} px", "interpolation": "bilinear", "antialias": True,
                              "crop": f"centre {size}x{size}", "colour": colour,
                              "normalisation": "in the graph: (image / 255 - mean) / std per channel",
                              "mean": meta["mean"], "std": meta["std"]},
            "output": {"name": OUTPUT, "dtype": "float32", "shape": ["batch", n],
                       "probabilities": "softmax over axis 1"},
            "classes": meta["classes"], "model": meta}


def to_onnx(net: Normalised, meta: dict[str, Any]) -> Any:
    """``net`` as an ``onnx.ModelProto`` with a dynamic batch axis and :func:`onnx_metadata`, checked by onnx."""
    onnx = _need("onnx")
    size, channels = meta["image_size"], meta["in_channels"]
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():  # the legacy exporter's deprecation notice (see the module docstring)
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(2, channels, size, size, dtype=torch.uint8),), buf, dynamo=False,
                              opset_version=OPSET, input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    except Exception as e:
        raise HpsearchError(f"torch.onnx.export cannot export {meta['arch']}: {type(e).__name__}: "
                            f"{first_line(e)[:200]}") from None
    proto = onnx.load_model_from_string(buf.getvalue())
    proto.doc_string = f"hpsearch model ({meta['arch']}, {len(meta['classes'])} classes); see metadata_props"
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(onnx_metadata(meta))
    onnx.checker.check_model(proto)
    return proto


def sample_images(size: int, channels: int) -> torch.Tensor:
    """The embedded Fashion-MNIST sample's 500 test images as a model's input: (500, channels, size, size) uint8,
    resized as ``decode`` resizes (bilinear, antialiased; the images are square, so nothing is cropped)."""
    from torchvision.transforms.v2.functional import resize

    x = torch.tensor(load_sample()[0]["test_images"]).unsqueeze(1).expand(-1, 3, -1, -1)  # (500, 3, 28, 28)
    if x.shape[-1] != size:
        x = resize(x, [size, size], antialias=True)
    return torch.stack([to_input(img, channels) for img in x])


def check_images(meta: dict[str, Any], images: list[str] | None, stream: TextIO) -> tuple[torch.Tensor, str]:
    """(N, C, S, S) uint8 images to check an export on, and a description of them."""
    size, channels = meta["image_size"], meta["in_channels"]
    if not images:
        return sample_images(size, channels), "the embedded Fashion-MNIST sample's test images"
    skipped: list[str] = []
    batches = [x for _, x in read_images(images, size, channels, 256, skipped, stream)]
    if not batches:
        raise HpsearchError(f"no readable image among {len(skipped)} input(s) to check the export on")
    return torch.cat(batches), f"{', '.join(images)}"


@torch.inference_mode()
def compare(net: Normalised, session: Any, x: torch.Tensor) -> dict[str, Any]:
    """PyTorch (``net``) against onnxruntime (``session``) on ``x``: the largest |logit difference|, the tolerance
    (``RTOL`` x the largest |logit|, at least 1) and on how many images their top-1 classes agree."""
    diff, scale, agree = 0.0, 1.0, 0
    for start in range(0, len(x), CHECK_BATCH):
        xb = x[start:start + CHECK_BATCH].contiguous()
        ref = net(xb).float()
        got = torch.from_numpy(session.run([OUTPUT], {INPUT: xb.numpy()})[0])
        diff = max(diff, float((got - ref).abs().max()))
        scale = max(scale, float(ref.abs().max()))
        agree += int((got.argmax(1) == ref.argmax(1)).sum())
    return {"images": len(x), "max_abs_diff": diff, "tolerance": RTOL * scale, "top1_agree": agree}


def export_onnx(model_file: str, out: str, images: list[str] | None = None, stream: TextIO = sys.stderr) -> dict:
    """Writes ``model_file`` as the ONNX model ``out`` once onnxruntime's logits match PyTorch's on ``images``
    (files or folders; default: the embedded sample's 500 test images). A difference above the tolerance is an
    HpsearchError and writes nothing. Returns the check's numbers."""
    path = Path(out)
    if path.suffix.lower() != ".onnx":
        raise SpecError(f"output is {out!r}, but must end in .onnx (predict recognises ONNX models by it)")
    if not path.parent.is_dir():
        raise HpsearchError(f"cannot write {out}: folder {str(path.parent)!r} does not exist")
    ort = _need("onnxruntime")
    model, meta = load_model(model_file)
    net = normalised(model, meta)
    blob = to_onnx(net, meta).SerializeToString()
    x, source = check_images(meta, images, stream)
    result = compare(net, ort.InferenceSession(blob, providers=["CPUExecutionProvider"]), x)
    line = (f"largest absolute logit difference, onnxruntime vs PyTorch, on {result['images']} images "
            f"({source}): {result['max_abs_diff']:.3g} (tolerance {result['tolerance']:.3g}); top-1 agrees on "
            f"{result['top1_agree']}/{result['images']}")
    if not result["max_abs_diff"] <= result["tolerance"]:  # (also a NaN)
        raise HpsearchError(f"the ONNX export differs from the model file: {line}; nothing written")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    print(f"{line}\nwrote {out} ({len(blob) / 1e6:.2f} MB, opset {OPSET}, input {INPUT!r} uint8 "
          f"(batch, {meta['in_channels']}, {meta['image_size']}, {meta['image_size']}))", file=stream)
    return result | {"source": source, "path": str(out)}


def read_metadata(path: str, session: Any) -> dict[str, Any]:
    """The hpsearch JSON of an ONNX model opened as ``session``; one HpsearchError line if it has none."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise HpsearchError(f"{path} is an ONNX model without hpsearch metadata (write one with "
                            "`hpsearch export-model`)")
    try:
        info = json.loads(raw)
        tag, version = info["format"], info["version"]
    except (ValueError, TypeError, KeyError):
        raise HpsearchError(f"{path} has damaged hpsearch metadata (not the JSON `hpsearch export-model` "
                            "writes)") from None
    if tag != FORMAT or version != VERSION:
        raise HpsearchError(f"{path} holds hpsearch metadata of format {tag!r} version {version}; this hpsearch "
                            f"reads {FORMAT!r} version {VERSION}")
    try:  # what predict reads, checked once here
        feed, fetch, pre = info["input"]["name"], info["output"]["name"], info["preprocessing"]
        inputs, outputs = {i.name for i in session.get_inputs()}, {o.name for o in session.get_outputs()}
        if feed not in inputs or fetch not in outputs:
            raise ValueError(f"the graph has no input {feed!r} or no output {fetch!r}")
        info["classes"] = [str(c) for c in info["classes"]]
        pre["image_size"], pre["in_channels"] = int(pre["image_size"]), int(pre["in_channels"])
    except (KeyError, TypeError, ValueError) as e:
        raise HpsearchError(f"{path} has damaged hpsearch metadata: {type(e).__name__}: {first_line(e)[:200]}") \
            from None
    return info


def _providers(ort: ModuleType, device: str) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise HpsearchError(f"device {device!r}: this onnxruntime runs on {', '.join(ort.get_available_providers())}; "
                        "use --device cpu (or install onnxruntime-gpu for cuda)")


def load_onnx(path: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(onnxruntime session, hpsearch metadata) of an ONNX model written by :func:`export_onnx`."""
    if not Path(path).is_file():
        raise HpsearchError(f"model file {str(path)!r} does not exist")
    ort = _need("onnxruntime")
    providers = _providers(ort, device)
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as e:  # onnxruntime's InvalidProtobuf, Fail, InvalidGraph...
        detail = first_line(e, type(e).__name__)[:200]
        raise HpsearchError(f"{path} is not an ONNX model (onnxruntime: {detail})") from None
    return session, read_metadata(path, session)


def onnx_classifier(path: str, device: str = "cpu") -> Classifier:
    """An ONNX model written by :func:`export_onnx` as a :class:`Classifier` for ``predict``."""
    session, info = load_onnx(path, device)
    pre, feed, fetch = info["preprocessing"], info["input"]["name"], info["output"]["name"]

    def logits(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([fetch], {feed: x.contiguous().numpy()})[0]).float()

    return Classifier(pre["image_size"], pre["in_channels"], info["classes"], logits)
