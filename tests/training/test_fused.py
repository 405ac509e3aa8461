"""hpsearch.training.fused: the HFTA-style fused forward of a pack against vmap over the same stacked members.

Per registered architecture, one training step and one evaluation through the fused layers give vmap's outputs,
gradients and BatchNorm running statistics (fp32, within 1e-5 of the largest value: the grouped convolutions sum
in another order). A model with a layer that has no fused form, or whose forward mixes channels, keeps vmap.
"""

from __future__ import annotations

import re

import pytest
import torch
from test_pack import ARCHS  # every registered architecture, at test size
from torch import nn

from hpsearch.data import load_dataset
from hpsearch.models import list_models
from hpsearch.spec import DataSpec
from hpsearch.training.pack import PackError, StackedModel
from hpsearch.training.setup import build_model

K = 3


@pytest.fixture(scope="module")
def ds():
    return load_dataset(DataSpec("synthetic", val_size=20, image_size=28, channels=1, num_classes=4, n_images=60),
                        seed=0)


def test_every_registered_architecture_is_checked():
    assert sorted(ARCHS) == list_models()


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=0, atol=1e-4 * (1 + b.abs().max().item()))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_the_fused_forward_trains_each_member_as_itself(ds, arch):
    """One training step and one evaluation of a fused pack against each member's own model (and vmap):
    outputs, gradients and BatchNorm running statistics within 1e-4 of the largest value."""
    members = [build_model({"arch": arch, **ARCHS[arch]}, ds, torch.device("cpu"), seed) for seed in range(K)]
    fused = StackedModel(members, "auto", example=torch.zeros(2, 1, 28, 28))
    mapped = StackedModel(members, "vmap")
    assert fused.forward_kind == "fused" and fused.fallback is None
    x = torch.randn(K, 8, 1, 28, 28, generator=torch.Generator().manual_seed(1))  # one batch per member
    out = fused(x)
    solo = torch.stack([m.train()(x[i]) for i, m in enumerate(members)])
    assert out.shape == (K, 8, 4) and close(out, solo) and close(mapped(x), solo)
    assert not torch.allclose(out[0], out[1]), "each member has its own weights"
    (out ** 2).sum().backward()
    (solo ** 2).sum().backward()
    grads = torch.stack([torch.cat([p.grad.reshape(-1) for p in m.parameters()]) for m in members])
    assert close(fused.flat.grad, grads)
    for name, buf in fused.buffers.items():  # running means/variances and num_batches_tracked, per member
        want = torch.stack([m.get_buffer(name) for m in members])
        assert buf.dtype == want.dtype and close(buf.float(), want.float()), name
    shared = torch.randn(5, 1, 28, 28)  # evaluation: one batch seen by every member
    with torch.no_grad():
        assert close(fused.evaluate(shared), torch.stack([m.eval()(shared) for m in members]))


class GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.head = nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)).mean((2, 3)))


class HardCodedView(nn.Module):
    """Flattens with a fixed feature count, as many hand-written nets do: under the fused layout it folds the
    members into the batch dimension, so the fused forward cannot be right."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 2, 3, stride=4), nn.Linear(2 * 7 * 7, 3)

    def forward(self, x):
        return self.head(self.conv(x).view(-1, 2 * 7 * 7))


class ChannelMean(nn.Module):
    """Centres its features over the channels: under the fused layout that mean would mix the members' channels
    without any shape error; the probe against vmap catches it."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3, stride=4), nn.Linear(4 * 7 * 7, 3)

    def forward(self, x):
        x = self.conv(x)
        return self.head((x - x.mean(1, keepdim=True)).flatten(1))


@pytest.mark.parametrize("net, why", [(GroupNormNet, "norm \\(GroupNorm\\) holds weight, bias"),
                                      (HardCodedView, "fused forward fails"),
                                      (ChannelMean, "outputs differ from vmap's")])
def test_a_model_that_cannot_be_fused_keeps_vmap(net, why):
    torch.manual_seed(0)
    members = [net() for _ in range(K)]
    example = torch.zeros(2, 1, 28, 28)
    model = StackedModel(members, "auto", example=example)
    assert model.forward_kind == "vmap"
    assert model.fallback is not None
    assert re.search(why, model.fallback), model.fallback
    x = torch.randn(K, 4, 1, 28, 28)
    solo = torch.stack([m(x[i]) for i, m in enumerate(members)])
    assert torch.allclose(model(x), solo, atol=1e-5), "vmap trains each member as itself"
    with pytest.raises(PackError, match="cannot fuse"):
        StackedModel(members, "fused", example=example)
