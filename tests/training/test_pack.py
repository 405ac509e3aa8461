"""hpsearch.training.pack: K trials trained as one fused model, checked against the same trials trained solo.

Tolerance (fp32, CPU): each member's eval points match its solo run with the same seed and data order: the mean
training loss of the first eval point (the first 5 steps) within 1e-4 relative, later ones within 1e-2 (the
grouped convolutions sum in another order, and the difference grows with training), and val Top-1/Top-5 within
0.5 points (one image in 200) at every eval point. The members draw no
augmentation here (aug_strength 0; dropout 0): with augmentation a pack draws its members' augmentations from
one generator, so they are not the draws of the solo runs.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hpsearch.data import load_dataset
from hpsearch.spec import DataSpec
from hpsearch.training.loop import Diverged, FitResult, TrainConfig, fit
from hpsearch.training.pack import PackError, fit_pack
from hpsearch.training.setup import build_model, device_data

ARCHS = {"lenet": {}, "vgg": {"vgg.stages": 2, "vgg.width": 8}, "resnet": {"resnet.depth": 8, "resnet.width": 8},
         "alexnet": {"alexnet.width": 0.25, "alexnet.hidden": 64, "alexnet.dropout": 0.0},
         "airbench": {"airbench.width": 0.25}}
K = 4


@pytest.fixture(scope="module")
def data():
    ds = load_dataset(DataSpec("synthetic", val_size=200, image_size=28, channels=1, num_classes=4, n_images=520),
                      seed=0)
    return ds, device_data(ds, torch.device("cpu"))


def configs(optimizer: str = "sgd", **shared) -> list[TrainConfig]:
    base = TrainConfig(batch_size=32, optimizer=optimizer, max_epochs=1, eval_every=0.5, data_seed=100, **shared)
    return [dataclasses.replace(base, lr=lr, weight_decay=wd, label_smoothing=ls, seed=100 + i)
            for i, (lr, wd, ls) in enumerate([(0.02, 5e-4, 0.0), (0.05, 1e-3, 0.1), (0.01, 0.0, 0.05),
                                              (0.03, 2e-4, 0.0)][:K])]


class Points:
    def __init__(self):
        self.points = []

    def on_eval(self, p):
        self.points.append(p)


def models_for(arch, ds, cfgs):
    return [build_model({"arch": arch, **ARCHS[arch]}, ds, torch.device("cpu"), c.seed) for c in cfgs]


def assert_same_curve(pack_points, solo_points):
    assert len(pack_points) == len(solo_points) > 0
    for a, b in zip(pack_points, solo_points, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4 if a.step == 1 else 1e-2)
        assert abs(a.top1 - b.top1) <= 0.5 and abs(a.top5 - b.top5) <= 0.5


@pytest.mark.parametrize("arch, forward", [*((a, "fused") for a in sorted(ARCHS)), ("lenet", "vmap")])
def test_each_member_trains_as_it_would_solo(data, arch, forward):
    """The shipped forward (fused layers, which every registered architecture gets) and the vmap fallback."""
    ds, dd = data
    cfgs = configs()
    recs = [Points() for _ in cfgs]
    kinds = []
    outcomes = fit_pack(models_for(arch, ds, cfgs), dd, cfgs, [[r] for r in recs],
                        stacked=lambda m: kinds.append(m.forward_kind), forward="auto" if forward == "fused" else forward)
    assert kinds == [forward]
    assert all(isinstance(o, FitResult) for o in outcomes)
    for i, c in enumerate(cfgs):
        solo = Points()
        fit(models_for(arch, ds, [c])[0], dd, c, [solo])
        assert_same_curve(recs[i].points, solo.points)


def test_adamw_members_train_as_they_would_solo(data):
    ds, dd = data
    cfgs = configs("adamw")
    recs = [Points() for _ in cfgs]
    fit_pack(models_for("lenet", ds, cfgs), dd, cfgs, [[r] for r in recs])
    solo = Points()
    fit(models_for("lenet", ds, [cfgs[2]])[0], dd, cfgs[2], [solo])
    assert_same_curve(recs[2].points, solo.points)


def test_a_nan_member_leaves_and_touches_no_other(data):
    ds, dd = data
    cfgs = configs()
    clean = [Points() for _ in cfgs]
    fit_pack(models_for("resnet", ds, cfgs), dd, cfgs, [[r] for r in clean])
    sizes = []

    def poison(model):  # member 1's logits turn NaN at its 3rd step, as a diverging trial's would
        count = [0]

        def hook(stacked, _x, out):
            count[0] += 1
            sizes.append(stacked.size)
            if count[0] == 3:
                row = stacked.members.index(1)
                out = out.clone()
                out[row] = float("nan")
                return out
            return None

        model.output_hooks.append(hook)

    recs = [Points() for _ in cfgs]
    outcomes = fit_pack(models_for("resnet", ds, cfgs), dd, cfgs, [[r] for r in recs], stacked=poison)
    assert isinstance(outcomes[1], Diverged)
    assert sizes[0] == K and sizes[-1] == K - 1, "the diverged member stopped costing compute"
    for i in (0, 2, 3):
        assert isinstance(outcomes[i], FitResult)
        assert_same_curve(recs[i].points, clean[i].points)


def test_a_member_whose_hook_raises_leaves_while_the_others_go_on(data):
    ds, dd = data
    cfgs = configs()

    class PruneAtFirstEval(Points):
        def on_eval(self, p):
            super().on_eval(p)
            raise RuntimeError("pruned here")

    recs = [Points(), PruneAtFirstEval(), Points(), Points()]
    outcomes = fit_pack(models_for("lenet", ds, cfgs), dd, cfgs, [[r] for r in recs])
    assert isinstance(outcomes[1], RuntimeError) and len(recs[1].points) == 1
    assert [len(r.points) for i, r in enumerate(recs) if i != 1] == [2, 2, 2]


class KeepCheckpoint(Points):
    """Records the member's points and keeps its checkpoint at the end of epoch 1 (``at_step`` None) or at eval
    point ``at_step``, which may fall in the middle of an epoch."""

    def __init__(self, at_step: int | None = None):
        super().__init__()
        self.at_step, self.state = at_step, None

    def on_epoch_end(self, epoch, checkpoint):
        if self.at_step is None and epoch == 1:
            self.state = checkpoint()

    def on_eval_state(self, point, checkpoint):
        if point.step == self.at_step:
            self.state = checkpoint()


@pytest.mark.parametrize("at_step", [None, 3])  # the end of epoch 1; eval point 3, half-way through epoch 2
def test_a_pack_checkpoint_resumes_solo(data, at_step):
    """A member's checkpoint is in fit's format: resumed solo (mid-epoch: at the next batch), it trains on as it
    would have in the pack."""
    ds, dd = data
    cfgs = [dataclasses.replace(c, max_epochs=2) for c in configs()]
    recs = [KeepCheckpoint(at_step) for _ in range(K)]
    fit_pack(models_for("vgg", ds, cfgs), dd, cfgs, [[r] for r in recs])
    state = recs[2].state
    done = at_step or 2
    assert state["epoch"] == 1 and len(state["points"]) == done and (state["batch"] > 0) == (at_step is not None)
    resumed = Points()
    result = fit(models_for("vgg", ds, [cfgs[2]])[0], dd, cfgs[2], [resumed], resume=state)
    assert len(result.points) == 4 and [p.step for p in resumed.points] == list(range(done + 1, 5))
    assert_same_curve(resumed.points, recs[2].points[done:])


def test_members_must_share_shapes_and_steps(data):
    ds, dd = data
    cfgs = configs()
    cfgs[1] = dataclasses.replace(cfgs[1], batch_size=64)
    with pytest.raises(PackError, match="member 1 differs from member 0 in batch_size"):
        fit_pack(models_for("lenet", ds, cfgs), dd, cfgs, [[] for _ in cfgs])
