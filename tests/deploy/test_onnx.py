"""ONNX export and prediction through onnxruntime (hpsearch.deploy.onnx): the export gives PyTorch's logits on
real images, predict gives the same classes through the model file and the ONNX model, the metadata round-trips,
and every bad input is one line and an exit code.

The model files are trained in-process for one epoch (a lenet on 2,000 images of the embedded Fashion-MNIST
sample, 67% val Top-1; a three-channel lenet on 500 synthetic colour images, 61% on 4 classes), so the
comparisons are made on models that learned. The reference logits are computed here from ``load_model``'s
network and the metadata's mean/std, not through ``Normalised``, so a wrong normalisation or channel order in
the exported graph fails these tests even though the export's own check would compare it against itself.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys

import pytest
import torch
from PIL import Image

from hpsearch.cli import main
from hpsearch.data import load_dataset
from hpsearch.data.loader import DeviceData
from hpsearch.deploy import onnx as deploy_onnx
from hpsearch.deploy.modelfile import load_model, save_model
from hpsearch.deploy.predict import Normalised, format_predictions, predict
from hpsearch.errors import HpsearchError
from hpsearch.models import create_model
from hpsearch.spec import DataSpec
from hpsearch.training.loop import TrainConfig, fit

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'hpsearch[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'hpsearch[onnx]'")

# measured largest |logit difference| onnxruntime vs PyTorch: 2.9e-6 (gray lenet, logits up to 16), 2.1e-7
# (colour lenet); asserted: 1e-4 x the largest |logit|, 30x above, and far below the 1e-2-size changes a
# wrong std (10%) or swapped channels make
RTOL = 1e-4
DATA = {"gray": DataSpec("fashion-mnist-sample", val_size=500),
        "rgb": DataSpec("synthetic", image_size=32, channels=3, num_classes=4, n_images=600)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """kind -> (model file, its ONNX export, the export's check, the dataset), trained and exported once."""
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fast for a lenet, and 10x faster than 2 threads on a busy 2-core machine
    for kind, spec in DATA.items():
        ds = load_dataset(spec, seed=0)
        ds = dataclasses.replace(ds, train_x=ds.train_x[:2000], train_y=ds.train_y[:2000])
        torch.manual_seed(0)
        model = create_model("lenet", ds.num_classes, ds.in_channels, ds.image_size)
        cfg = TrainConfig(lr=3e-3, batch_size=64, weight_decay=5e-4, optimizer="adamw", label_smoothing=0.0,
                          aug_strength=0.0, max_epochs=1, eval_every=1.0)
        result = fit(model, DeviceData(ds, torch.device("cpu")), cfg)
        mean, std = ds.channel_stats()
        meta = {"arch": "lenet", "arch_params": {}, "num_classes": ds.num_classes, "in_channels": ds.in_channels,
                "image_size": ds.image_size, "mean": mean.tolist(), "std": std.tolist(), "classes": list(ds.classes),
                "dataset": spec.dataset, "config": {"arch": "lenet", "lr": 3e-3}, "test_top1": result.top1}
        folder = tmp_path_factory.mktemp(kind)
        save_model(folder / "model.hpsm", model, meta)
        check = deploy_onnx.export_onnx(str(folder / "model.hpsm"), str(folder / "model.onnx"), stream=io.StringIO())
        out[kind] = (folder / "model.hpsm", folder / "model.onnx", check, ds)
    torch.set_num_threads(threads)
    return out


def reference_logits(model_file, x: torch.Tensor) -> torch.Tensor:
    """PyTorch's logits for (N, C, S, S) uint8 images, normalised here from the model file's metadata."""
    model, meta = load_model(model_file)
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        return model((x.float() / 255 - mean) / std)


def run_onnx(onnx_file, x: torch.Tensor, batch: int) -> torch.Tensor:
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return torch.cat([torch.from_numpy(session.run(["logits"], {"image": x[i:i + batch].numpy()})[0])
                      for i in range(0, len(x), batch)])


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_export_gives_pytorchs_logits_on_test_images(trained, kind):
    model_file, onnx_file, check, ds = trained[kind]
    x, y = ds.test_x, ds.test_y  # (N, C, S, S) uint8: the sample's 500 real test images, or 120 colour ones
    ref = reference_logits(model_file, x)
    tol = RTOL * float(ref.abs().max())
    for batch in (len(x), 7, 1):  # the batch axis is dynamic (the export traced a batch of 2)
        got = run_onnx(onnx_file, x, batch)
        assert got.shape == ref.shape
        assert float((got - ref).abs().max()) <= tol, f"batch {batch}"
        assert torch.equal(got.argmax(1), ref.argmax(1)), f"top-1 differs on some images (batch {batch})"
    accuracy = float((ref.argmax(1) == y).float().mean())
    assert accuracy > (0.6 if kind == "gray" else 0.5), f"the model learned: test Top-1 {accuracy:.1%}"
    # the export's own check, on the sample's 500 test images (as 28 px gray or 32 px three-channel input)
    largest = check["tolerance"] / deploy_onnx.RTOL  # the largest |logit| it saw
    assert check["images"] == 500 and check["top1_agree"] == 500 and check["max_abs_diff"] <= RTOL * largest


def test_channel_order_and_normalisation_change_the_logits(trained):
    """What the test above would see if the graph swapped channels or baked in another std: changes far above
    its tolerance (so it can fail)."""
    model_file, _, _, ds = trained["rgb"]
    x = ds.test_x
    ref = reference_logits(model_file, x)
    tol = RTOL * float(ref.abs().max())
    assert float((reference_logits(model_file, x.flip(1)) - ref).abs().max()) > 100 * tol
    model, meta = load_model(model_file)
    wrong_std = Normalised(model, meta["mean"], [s * 1.1 for s in meta["std"]]).eval()
    with torch.no_grad():
        assert float((wrong_std(x) - ref).abs().max()) > 100 * tol


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_predict_gives_the_same_classes_through_both_paths(trained, kind, tmp_path):
    model_file, onnx_file, _, ds = trained[kind]
    paths = []
    for i in range(24):
        path = tmp_path / f"img{i:02d}.png"
        img = ds.test_x[i].permute(1, 2, 0).numpy()  # (S, S, C) uint8
        Image.fromarray(img[:, :, 0] if kind == "gray" else img).save(path)
        paths.append(str(path))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    runs = {}
    for name, f in (("pt", model_file), ("onnx", onnx_file)):
        runs[name] = predict(str(f), [str(tmp_path)], top_k=3, stream=io.StringIO())
    (pt, pt_skipped), (ox, ox_skipped) = runs["pt"], runs["onnx"]
    assert [s.endswith("broken.png") for s in ox_skipped] == [True] and ox_skipped == pt_skipped
    assert [p.path for p in ox] == [p.path for p in pt] == paths
    for a, b in zip(pt, ox, strict=True):
        assert [c for c, _ in a.top] == [c for c, _ in b.top], a.path
        assert max(abs(u - v) for (_, u), (_, v) in zip(a.top, b.top, strict=True)) <= 1e-5, a.path
    ref = reference_logits(model_file, ds.test_x[:24]).argmax(1)  # the same pixels: PNG is lossless
    assert [p.top[0][0] for p in ox] == [ds.classes[i] for i in ref], "PyTorch's top-1, normalised here"
    printed = json.loads(format_predictions(ox, ox_skipped, as_json=True))["predictions"]
    assert [[t["class"] for t in p["top"]] for p in printed] == [[c for c, _ in p.top] for p in pt]


def test_metadata_round_trips(trained):
    model_file, onnx_file, _, _ = trained["gray"]
    _, meta = load_model(model_file)
    proto = onnx.load(str(onnx_file))
    props = {p.key: p.value for p in proto.metadata_props}
    info = json.loads(props["hpsearch"])
    assert info["model"] == meta, "the model file's metadata, whole"
    assert info["classes"] == meta["classes"] and len(info["classes"]) == 10
    pre = info["preprocessing"]
    assert (pre["image_size"], pre["in_channels"], pre["mean"], pre["std"]) == (28, 1, meta["mean"], meta["std"])
    assert pre["interpolation"] == "bilinear" and pre["antialias"] is True
    assert info["input"] == {"name": "image", "dtype": "uint8", "layout": "NCHW", "shape": ["batch", 1, 28, 28],
                             "range": [0, 255], "colour": pre["colour"]}
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("image", "tensor(uint8)", ["batch", 1, 28, 28])
    assert (out.name, out.type, out.shape) == ("logits", "tensor(float)", ["batch", 10])
    assert deploy_onnx.load_onnx(str(onnx_file))[1] == info


def test_an_export_that_differs_is_refused_and_writes_nothing(trained, tmp_path, monkeypatch):
    """An exporter that baked in another std than the model file's: the check finds it, one error, no file."""
    model_file = trained["gray"][0]
    real = deploy_onnx.to_onnx
    monkeypatch.setattr(deploy_onnx, "to_onnx", lambda net, meta: real(
        Normalised(net.net, meta["mean"], [s * 1.1 for s in meta["std"]]).eval(), meta))
    with pytest.raises(HpsearchError, match="differs from the model file.*nothing written"):
        deploy_onnx.export_onnx(str(model_file), str(tmp_path / "m.onnx"), stream=io.StringIO())
    assert list(tmp_path.iterdir()) == []


def plain_onnx(path, props: dict[str, str] | None = None) -> str:
    """A valid ONNX model (an identity on a uint8 image) with the given metadata_props."""
    h = onnx.helper
    graph = h.make_graph([h.make_node("Identity", ["image"], ["logits"])], "g",
                         [h.make_tensor_value_info("image", onnx.TensorProto.UINT8, [None, 1, 28, 28])],
                         [h.make_tensor_value_info("logits", onnx.TensorProto.UINT8, [None, 1, 28, 28])])
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    proto.ir_version = 8
    for k, v in (props or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))
    return str(path)


BAD = {  # name -> (argv with {pt}, {onnx}, {tmp} filled in; exit code; what the line says)
    "predict: missing file": (["predict", "--model", "{tmp}/missing.onnx", "{tmp}"], 1, "does not exist"),
    "predict: not ONNX": (["predict", "--model", "{tmp}/junk.onnx", "{tmp}"], 1, "is not an ONNX model"),
    "predict: no metadata": (["predict", "--model", "{tmp}/plain.onnx", "{tmp}"], 1, "without hpsearch metadata"),
    "predict: newer metadata": (["predict", "--model", "{tmp}/newer.onnx", "{tmp}"], 1,
                                "reads 'hpsearch-onnx' version 1"),
    "predict: damaged metadata": (["predict", "--model", "{tmp}/damaged.onnx", "{tmp}"], 1,
                                  "damaged hpsearch metadata"),
    "predict: no onnxruntime": (["predict", "--model", "{onnx}", "{tmp}"], 1, 'pip install "hpsearch[onnx]"'),
    "export: missing model file": (["export-model", "--model", "{tmp}/missing.hpsm", "-o", "{tmp}/m.onnx"], 1,
                                   "does not exist"),
    "export: an ONNX model as input": (["export-model", "--model", "{onnx}", "-o", "{tmp}/m.onnx"], 1,
                                       "not an hpsearch model file"),
    "export: output not .onnx": (["export-model", "--model", "{pt}", "-o", "{tmp}/m.bin"], 2, "must end in .onnx"),
    "export: output folder missing": (["export-model", "--model", "{pt}", "-o", "{tmp}/no/m.onnx"], 1,
                                      "does not exist"),
    "export: no check image": (["export-model", "--model", "{pt}", "-o", "{tmp}/m.onnx", "--images", "{tmp}"], 1,
                               "no readable image"),
    "export: no onnx": (["export-model", "--model", "{pt}", "-o", "{tmp}/m.onnx"], 1, 'pip install "hpsearch[onnx]"'),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_are_one_line_each(trained, case, tmp_path, monkeypatch, capsys):
    argv, code, says = BAD[case]
    model_file, onnx_file, _, _ = trained["gray"]
    (tmp_path / "junk.onnx").write_bytes(os.urandom(256))
    plain_onnx(tmp_path / "plain.onnx")
    plain_onnx(tmp_path / "newer.onnx", {"hpsearch": json.dumps({"format": "hpsearch-onnx", "version": 2})})
    plain_onnx(tmp_path / "damaged.onnx", {"hpsearch": json.dumps({"format": "hpsearch-onnx", "version": 1})})
    if case.endswith("no onnxruntime"):
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    if case.endswith("no onnx"):
        monkeypatch.setitem(sys.modules, "onnx", None)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_:
        main([a.format(pt=model_file, onnx=onnx_file, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == code, err
    assert err.count("\n") == 1 and err.startswith("hpsearch") and says in err, err
    assert sorted(tmp_path.iterdir()) == before, "nothing was written"


@pytest.mark.slow
def test_cli_export_then_predict_through_both_paths(trained, tmp_path, cli):
    model_file, _, _, ds = trained["gray"]
    for i in range(8):
        Image.fromarray(ds.test_x[i, 0].numpy()).save(tmp_path / f"img{i}.png")
    out = tmp_path / "model.onnx"
    r = cli("export-model", "--model", str(model_file), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "largest absolute logit difference" in r.stderr and "top-1 agrees on 500/500" in r.stderr
    r = cli("predict", "--model", str(out), str(tmp_path), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    printed = [[t["class"] for t in p["top"]] for p in json.loads(r.stdout)["predictions"]]
    preds, _ = predict(str(model_file), [str(tmp_path)], stream=io.StringIO())  # the model file, in-process
    assert len(printed) == 8 and printed == [[c for c, _ in p.top] for p in preds]
