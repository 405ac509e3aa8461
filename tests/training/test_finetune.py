"""Fine-tuning knobs in the solo loop (hpsearch.training.loop.fit): ``freeze_epochs`` trains the classifier head
alone at first (the backbone's weights and BatchNorm statistics bit-identical), then everything; ``backbone_lr_mult``
scales the backbone's learning rate and not the head's; a run resumed inside the frozen epochs freezes exactly as
the uninterrupted one. The pack's version is compared with these solo runs in tests/training/test_pack.py."""

from __future__ import annotations

import io

import pytest
import torch

from hpsearch.data import load_dataset
from hpsearch.models.heads import backbone_batchnorms, head_names, split_params
from hpsearch.spec import DataSpec
from hpsearch.training.loop import TrainConfig, fit, make_optimizer
from hpsearch.training.setup import build_model, device_data

ARCHS = {"resnet": {"resnet.depth": 8, "resnet.width": 8}, "timm:efficientnet_lite0": {}}


@pytest.fixture(scope="module")
def data():
    ds = load_dataset(DataSpec("synthetic", val_size=64, image_size=28, channels=1, num_classes=4, n_images=320),
                      seed=0)
    return ds, device_data(ds, torch.device("cpu"))


def model_for(arch: str, ds, seed: int = 0):
    return build_model({"arch": arch, **ARCHS[arch]}, ds, torch.device("cpu"), seed)


class EpochStates:
    """The model's state (weights and buffers) after each epoch, and each epoch's checkpoint, as bytes read back."""

    def __init__(self):
        self.models, self.checkpoints = {}, {}

    def on_epoch_end(self, epoch, checkpoint):
        buf = io.BytesIO()
        torch.save(checkpoint(), buf)
        state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
        self.checkpoints[epoch], self.models[epoch] = state, state["model"]


@pytest.mark.parametrize("arch", ARCHS)
def test_freeze_epochs_keeps_the_backbone_bit_identical_then_trains_it(data, arch):
    ds, dd = data
    model = model_for(arch, ds)
    init = {n: t.clone() for n, t in model.state_dict().items()}
    head = head_names(model)
    norms = backbone_batchnorms(model)
    assert head and norms, "a head to train and BatchNorm layers whose statistics a frozen backbone keeps"
    cfg = TrainConfig(batch_size=32, optimizer="adamw", lr=3e-3, weight_decay=0.05, max_epochs=2, eval_every=1.0,
                      freeze_epochs=1, data_seed=1)
    states = EpochStates()
    fit(model, dd, cfg, [states])
    backbone = [n for n, t in init.items() if n not in head and t.is_floating_point()]
    running = [n for n in backbone if n.endswith(("running_mean", "running_var"))]
    assert running and len(backbone) > len(running)
    after1, after2 = states.models[1], states.models[2]
    assert all(torch.equal(after1[n], init[n]) for n in backbone), "epoch 1: weights and BN statistics untouched"
    assert all(not torch.equal(after1[n], init[n]) for n in head), "epoch 1: the head trains"
    moved = [n for n in backbone if not torch.equal(after2[n], init[n])]
    assert set(moved) >= set(running) and len(moved) > 0.9 * len(backbone), "epoch 2: the backbone trains"
    assert all(p.requires_grad for p in model.parameters()), "the model leaves trainable, as it came"
    assert all(model.get_submodule(n).training for n in norms)


def test_backbone_lr_mult_scales_the_backbones_step_and_not_the_heads(data):
    """One SGD step from the same weights and batch: with backbone_lr_mult 0.1 the backbone moves 0.1x as far as
    with 1, the head as far."""
    ds, dd = data
    x, y = dd.train_x[:32].double() / 255, dd.train_y[:32]  # float64: p - move rounds far below the gaps tested
    moves = {}
    for mult in (1.0, 0.1):
        model = model_for("resnet", ds).double()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        cfg = TrainConfig(lr=0.05, weight_decay=0.0, backbone_lr_mult=mult)
        opt = make_optimizer(model, cfg)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        moves[mult] = {n: p.detach() - before[n] for n, p in model.named_parameters()}
    head = head_names(model)
    for n, move in moves[1.0].items():
        want = move if n in head else 0.1 * move
        gap = float((moves[0.1][n] - want).norm() / want.norm())  # measured < 3e-12
        assert gap < 1e-8, (n, gap)
    assert len(split_params(model)[0]) == len(head) == 2


def test_a_run_resumed_inside_the_frozen_epochs_equals_the_uninterrupted_one(data):
    """Resumed from the checkpoint after epoch 1 of freeze_epochs = 2 (the backbone has no AdamW state yet), the
    run freezes epoch 2 and trains everything in epoch 3 exactly as the uninterrupted run (CPU, bit for bit)."""
    ds, dd = data
    cfg = TrainConfig(batch_size=32, optimizer="adamw", lr=3e-3, max_epochs=3, eval_every=1.0, freeze_epochs=2,
                      backbone_lr_mult=0.3, data_seed=2)
    straight = EpochStates()
    straight_model = model_for("resnet", ds)
    fit(straight_model, dd, cfg, [straight])
    resumed_model = model_for("resnet", ds, seed=5)  # other weights: the checkpoint restores them
    fit(resumed_model, dd, cfg, [EpochStates()], resume=straight.checkpoints[1])
    for n, t in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[n], t), n
