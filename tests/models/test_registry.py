"""Every registered model trains: forward/backward, output shape, finite outputs, gradients everywhere."""

from __future__ import annotations

import pytest
import torch

from hpsearch.errors import SpecError
from hpsearch.models import create_model, get_model_entry, list_models


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
    with pytest.raises(SpecError, match="unknown architecture 'alexnet9'; registered: lenet, resnet, vgg"):
        create_model("alexnet9", 10, 3)


def test_too_small_image_is_refused():
    with pytest.raises(SpecError, match="needs at least 28 px"):
        create_model("resnet", 10, 3, image_size=16)


def test_bad_param_value_is_refused():
    with pytest.raises(SpecError, match="resnet.depth"):
        create_model("resnet", 10, 3, depth=9)
