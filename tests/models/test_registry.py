"""Every registered model trains: forward/backward, output shape, finite outputs, gradients everywhere."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision

from hpsearch.errors import SpecError
from hpsearch.models import create_model, get_model_entry, is_known_model, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (3, 45)])
def test_forward_backward(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=channels, image_size=size)
    x = torch.randn(4, channels, size, size)
    out = model(x)
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without finite gradients: {missing}"


@pytest.mark.parametrize("name", list_models())
def test_declared_params_are_accepted(name):
    entry = get_model_entry(name)
    for pname, p in entry.params.items():
        value = p.choices[0] if p.choices else p.low
        model = create_model(name, 10, 1, 28, **{pname: int(value) if p.kind == "int" else value})
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_name_lists_the_registry():
    listed = re.escape(f"unknown architecture 'alexnet9'; registered: {', '.join(list_models())}")
    with pytest.raises(SpecError, match=listed):
        create_model("alexnet9", 10, 3)


def test_too_small_image_is_refused():
    with pytest.raises(SpecError, match="needs at least 28 px"):
        create_model("resnet", 10, 3, image_size=16)


def test_bad_param_value_is_refused():
    with pytest.raises(SpecError, match="resnet.depth"):
        create_model("resnet", 10, 3, depth=9)


# torchvision models, as tv:<name>

TV_MODELS = ["tv:resnet18", "tv:mobilenet_v3_small", "tv:efficientnet_b0", "tv:convnext_tiny"]


@pytest.mark.parametrize("name", TV_MODELS)
@pytest.mark.parametrize("channels", [1, 3])
def test_tv_model_trains_at_its_min_size(name, channels):
    torch.manual_seed(0)
    size = get_model_entry(name).min_size
    model = create_model(name, num_classes=7, in_channels=channels, image_size=size)
    assert model.training, "create_model hands back the model in training mode after its check pass"
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without finite gradients: {missing}"


def test_tv_models_have_no_params_and_are_not_listed():
    assert get_model_entry("tv:resnet18").params == {}
    assert not any(n.startswith("tv:") for n in list_models())
    assert is_known_model("tv:resnet18") and is_known_model("resnet")
    assert not is_known_model("tv:resnet19") and not is_known_model("resnet18")


def test_tv_too_small_image_is_refused_with_the_min_size():
    with pytest.raises(SpecError, match=r"^images are 32 px, but tv:inception_v3 needs at least 75 px$"):
        create_model("tv:inception_v3", 10, 3, image_size=32)
    with pytest.raises(SpecError, match=r"^images are 16 px, but tv:resnet18 needs at least 28 px$"):
        create_model("tv:resnet18", 10, 3, image_size=16)


def test_tv_size_the_model_cannot_take_is_refused_at_creation():
    # vit_b_16 needs a multiple of its 16 px patch; the check pass turns torchvision's assert into a SpecError
    with pytest.raises(SpecError, match=r"images are 40 px, but tv:vit_b_16 cannot take them: .*patch size"):
        create_model("tv:vit_b_16", 10, 3, image_size=40)


def test_unknown_tv_name_suggests_valid_ones():
    close = r"unknown torchvision model 'tv:resnet19'; valid names include tv:resnet"
    with pytest.raises(SpecError, match=close):
        create_model("tv:resnet19", 10, 3)
    with pytest.raises(SpecError, match=r"include tv:resnet18, .*list_models\(module=torchvision.models\)"):
        get_model_entry("tv:zzz")


class Downloaded(Exception):
    pass


def test_tv_model_is_built_without_downloading(monkeypatch):
    def no_download(*args, **kwargs):
        raise Downloaded("weights were fetched")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(Downloaded):  # the trap works: asking for weights springs it
        torchvision.models.mobilenet_v3_small(weights="DEFAULT")
    model = create_model("tv:mobilenet_v3_small", 10, 3, image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
