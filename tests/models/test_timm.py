"""timm models as ``timm:<name>`` and the input adapter of timm and torchvision models: they build, train, take
``drop_path`` when the model has it, name close matches for an unknown name, say how to install timm without it,
and normalise [0, 1] images as their pretrained weights expect."""

from __future__ import annotations

import sys

import pytest
import timm
import torch

from hpsearch.data.base import Dataset
from hpsearch.data.loader import DeviceData
from hpsearch.errors import SpecError
from hpsearch.models import AdaptedNet, create_model, fusable, get_model_entry, is_known_model
from hpsearch.models._registry import timm_model_entry
from hpsearch.params import arch_params
from hpsearch.spec import parse_spec
from hpsearch.training.setup import model_data

LITE0 = "timm:efficientnet_lite0"
BASE = {"study": {"name": "s"}, "data": {"dataset": "synthetic"}}


@pytest.mark.parametrize("channels", [1, 3])
def test_timm_model_trains(channels):
    torch.manual_seed(0)
    model = create_model(LITE0, num_classes=7, in_channels=channels, image_size=32)
    assert isinstance(model, AdaptedNet) and model.training
    out = model(torch.rand(2, channels, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without finite gradients: {missing}"
    assert model.get_classifier() is model.net.classifier and model.head == ("classifier",)
    assert model.get_classifier().out_features == 7, "the classifier is sized for the study's classes"


def test_drop_path_is_a_parameter_of_the_models_that_take_it():
    assert set(get_model_entry(LITE0).params) == {"drop_path"}
    assert get_model_entry(LITE0).params["drop_path"].default == 0.0
    rates = [m.drop_prob for m in create_model(LITE0, 10, 3, 32, drop_path=0.2).modules()
             if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2 * 15 / 16), "timm spreads drop_path_rate over the 16 blocks"
    assert get_model_entry("timm:ghostnet_100").params == {}, "GhostNet has no drop_path_rate"
    with pytest.raises(SpecError, match="timm:ghostnet_100 has no parameter 'drop_path'"):
        create_model("timm:ghostnet_100", 10, 3, 32, drop_path=0.1)


def test_drop_path_is_searched_as_arch_dot_drop_path():
    spec = parse_spec(BASE | {"space": {"arch": [LITE0, "lenet"], "image_size": 32,
                                        LITE0: {"drop_path": {"low": 0.0, "high": 0.2}}}})
    d = spec.dimension(f"{LITE0}.drop_path")
    assert (d.low, d.high, d.arch) == (0.0, 0.2, LITE0)
    assert arch_params({"arch": LITE0, f"{LITE0}.drop_path": 0.1, "lenet.width": 2}) == {"drop_path": 0.1}
    with pytest.raises(SpecError, match=r"`space.timm:resnet18` is given, but `space.arch` does not include"):
        parse_spec(BASE | {"space": {"arch": LITE0, "timm:resnet18": {"drop_path": 0.1}}})


def test_unknown_timm_names_list_close_matches():
    with pytest.raises(SpecError, match=r"^unknown timm model 'timm:efficentnet_lite0'; close matches: "
                                        r"timm:efficientnet_lite0.*\(all of them: timm.list_models\(\)\)$"):
        parse_spec(BASE | {"space": {"arch": "timm:efficentnet_lite0"}})
    with pytest.raises(SpecError, match=r"^timm model 'resnet18' has no pretrained tag 'zzz'; it has: .*a1_in1k"):
        create_model("timm:resnet18.zzz", 10, 3)
    assert is_known_model("timm:resnet18.a1_in1k") and not is_known_model("timm:resnet19")


def test_without_timm_one_line_says_how_to_install_it(monkeypatch):
    timm_model_entry.cache_clear()
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    try:
        with pytest.raises(SpecError, match=r'^timm models need: pip install "hpsearch\[timm\]"$'):
            parse_spec(BASE | {"space": {"arch": LITE0}})
        assert parse_spec(BASE).dimension("arch").value == "resnet", "studies without timm models still parse"
    finally:
        timm_model_entry.cache_clear()


def test_other_libraries_models_are_not_fused():
    assert not fusable(LITE0) and not fusable("tv:resnet18") and fusable("resnet")


@pytest.mark.parametrize("arch", [LITE0, "tv:resnet18"])
def test_the_adapter_normalises_as_the_pretrained_weights_expect(arch):
    """The model on [0, 1] images equals its bare network on images normalised with the pretrained mean and std
    (one channel repeated to three): the model file's preprocessing is plain [0, 1] scaling."""
    torch.manual_seed(0)
    model = create_model(arch, 10, 1, 32).eval()
    if arch.startswith("timm:"):
        cfg = timm.models.get_pretrained_cfg("efficientnet_lite0")
        mean, std = cfg.mean, cfg.std
    else:
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.rand(3, 1, 32, 32)
    by_hand = (x.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(by_hand), atol=1e-5)


def test_adapted_models_get_their_data_scaled_to_unit_range():
    x = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    y = torch.arange(20) % 2
    data = DeviceData(Dataset(x, y, x, y, ("a", "b"), False, "test"), torch.device("cpu"))
    assert data.mean.item() > 0.3, "the dataset's own normalisation"
    unit = model_data(data, create_model(LITE0, 2, 1, 28))
    assert (unit.mean.tolist(), unit.std.tolist()) == ([0.0], [1.0]) and unit.train_x is data.train_x
    assert model_data(data, create_model("lenet", 2, 1, 28)) is data
