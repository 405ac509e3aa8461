"""hpsearch.training.checkpoint: the one checkpoint format of fit and fit_pack, unchanged on disk since the
checkpoints of tests/fixtures/old_study were written (by the code before the sub-package move)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from hpsearch.data import load_dataset
from hpsearch.spec import load_spec
from hpsearch.training import checkpoint
from hpsearch.training.checkpoint import KEYS, Cursor
from hpsearch.training.loop import TrainConfig, data_generators, fit
from hpsearch.training.setup import build_model, device_data

OLD_STUDY = Path(__file__).resolve().parent.parent / "fixtures" / "old_study"


def old_checkpoints() -> list[dict]:
    """The fixture's checkpoints (its artifact folder also holds PNGs and JSON), by epoch."""
    states = []
    for path in sorted((OLD_STUDY / "artifacts").iterdir()):
        try:
            state = torch.load(path, weights_only=True)
        except Exception:  # an inspection artifact, not a checkpoint
            continue
        if isinstance(state, dict) and "rng_perm" in state:
            states.append(state)
    return sorted(states, key=lambda s: s["epoch"])


class Keep:
    def __init__(self):
        self.states = []

    def on_epoch_end(self, epoch, make):
        self.states.append(make())

    def on_eval_state(self, point, make):
        self.states.append(make())


def test_fit_writes_the_keys_the_old_code_wrote():
    old = old_checkpoints()
    assert old and all(tuple(s) == KEYS for s in old), "the fixture's checkpoints have the documented keys"
    ds = load_dataset(load_spec(OLD_STUDY / "study.toml").data, seed=0)
    keep = Keep()
    cfg = TrainConfig(batch_size=32, max_epochs=1, eval_every=0.5)
    fit(build_model({"arch": "lenet"}, ds, torch.device("cpu"), 0), device_data(ds, torch.device("cpu")), cfg, [keep])
    for state in keep.states:
        assert tuple(state) == KEYS
        assert {k: type(v) for k, v in state.items()} == {k: type(v) for k, v in old[0].items()}


def test_an_old_checkpoint_resumes_where_it_stopped():
    """The epoch-1 checkpoint of a paused trial of the old study: fit resumes it (strict state dicts) with its RNG
    states and eval points, and trains epochs 2 and 3 only."""
    old = next(s for s in old_checkpoints() if s["epoch"] == 1)
    spec = load_spec(OLD_STUDY / "study.toml")
    ds = load_dataset(spec.data, spec.study.seed)
    gens = data_generators(TrainConfig(), torch.device("cpu"))
    at, points = checkpoint.restore(old, gens)
    assert at == Cursor(1, 0, old["step"], old["images"], old["train_s"]) and [p.step for p in points] == [1]
    assert torch.equal(gens[0].get_state(), old["rng_perm"]) and torch.equal(torch.get_rng_state(), old["rng_torch"])

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in old["config"].items() if k in fields})
    model = build_model({"arch": "vgg", "vgg.stages": 2, "vgg.width": 8}, ds, torch.device("cpu"), 1)
    result = fit(model, device_data(ds, torch.device("cpu")), cfg, resume=old)
    assert [p.step for p in result.points] == [1, 2, 3] and result.points[0] == points[0]
    assert result.top1 > 50.0, "it goes on from the trained weights (chance is 25%)"


@pytest.mark.parametrize("batch, saved", [(3, (2, 3)), (10, (3, 0)), (0, (3, 0))])
def test_a_checkpoint_mid_epoch_keeps_the_epochs_data_order(batch, saved):
    """At batch 3 of 10 of epoch 2, the state holds the data order as epoch 2 began, to draw its permutation again;
    at the epoch's end (batch 10, or 0 as fit's epoch-end hook passed it before), the order now and epoch 3."""
    g_perm, g_aug = data_generators(TrainConfig(), torch.device("cpu"))
    began = g_perm.get_state()
    torch.randperm(10, generator=g_perm)
    state = checkpoint.state({}, {}, {}, {}, (g_perm, g_aug), began, Cursor(2, batch, 23, 736, 1.5), [], TrainConfig(),
                             n_batches=10)
    assert (state["epoch"], state["batch"]) == saved and (state["step"], state["images"]) == (23, 736)
    want = began if saved[1] else g_perm.get_state()
    assert torch.equal(state["rng_perm"], want)
    assert Cursor.of(state) == Cursor(*saved, 23, 736, 1.5)
