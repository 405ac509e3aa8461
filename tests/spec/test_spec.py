"""The study file parser: shipped studies load; every invalid file gives one SpecError naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.errors import SpecError
from hpsearch.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
BASE = {"study": {"name": "s"}, "data": {"dataset": "synthetic"}}


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_studies_are_valid(path):
    spec = load_spec(path)
    assert spec.study.name
    assert spec.space[0].name == "arch"


def test_defaults_fill_the_space():
    spec = parse_spec(BASE)
    names = [d.name for d in spec.space]
    assert names[:7] == ["arch", "lr", "batch_size", "weight_decay", "optimizer", "label_smoothing", "aug_strength"]
    assert all(d.fixed for d in spec.space), "an empty [space] fixes every parameter at its default"
    assert spec.sampler.name == "tpe" and spec.pruner.name == "median"


def test_ranges_lists_and_enqueue_are_parsed():
    spec = parse_spec(BASE | {
        "space": {"arch": ["lenet", "resnet"], "lr": {"low": 1e-3, "high": 0.1, "log": True},
                  "batch_size": [64, 128], "resnet": {"depth": [8, 14]}},
        "enqueue": [{"arch": "resnet", "lr": 0.01, "batch_size": 64, "resnet": {"depth": 14}}],
    })
    lr = spec.dimension("lr")
    assert (lr.low, lr.high, lr.log) == (1e-3, 0.1, True)
    assert spec.dimension("resnet.depth").choices == (8, 14)
    assert spec.dimension("lenet.width").fixed
    assert spec.enqueue == ({"arch": "resnet", "lr": 0.01, "batch_size": 64, "resnet.depth": 14},)


def with_(section: str, value) -> dict:
    raw = {k: dict(v) for k, v in BASE.items()}
    if isinstance(value, dict) and section in raw:
        raw[section] |= value
    else:
        raw[section] = value
    return raw


INVALID = [
    ({"bogus": 1}, "`bogus`"),
    ({"study": {}, "data": {"dataset": "synthetic"}}, "`study.name`"),
    (with_("study", {"n_trials": 0}), "`study.n_trials`"),
    (with_("study", {"n_trials": "ten"}), "`study.n_trials`"),
    (with_("study", {"timeout": -1}), "`study.timeout`"),
    (with_("study", {"name": "../evil"}), "`study.name`"),
    (with_("study", {"colour": "red"}), "`study.colour`"),
    (with_("data", {"dataset": "imagenet22k"}), "`data.dataset`"),
    (with_("data", {"val_fraction": 1.5}), "`data.val_fraction`"),
    (with_("train", {"max_epochs": 0}), "`train.max_epochs`"),
    (with_("train", {"eval_every": 0}), "`train.eval_every`"),
    (with_("train", {"device": "tpu"}), "`train.device`"),
    (with_("train", {"precision": "fp8"}), "`train.precision`"),
    (with_("train", {"max_epochs": float("nan")}), "`train.max_epochs`"),
    (with_("sampler", {"name": "grid"}), "`sampler.name`"),
    (with_("sampler", {"name": "tpe", "n_startup": 3}), "`sampler.n_startup`"),
    (with_("pruner", {"name": "percentile"}), "`pruner.percentile`"),
    (with_("pruner", {"name": "median", "n_warmup_steps": -1}), "`pruner.n_warmup_steps`"),
    (with_("space", {"arch": "transformer"}), "`space.arch`"),
    (with_("space", {"arch": []}), "`space.arch`"),
    (with_("space", {"lr": {"low": 0.1, "high": 0.01}}), "`space.lr`"),
    (with_("space", {"lr": {"low": 0.1, "high": 0.1}}), "`space.lr`"),
    (with_("space", {"weight_decay": {"low": 0.0, "high": 0.1, "log": True}}), "`space.weight_decay`"),
    (with_("space", {"lr": {"low": 0.01}}), "`space.lr.high`"),
    (with_("space", {"lr": {"low": 0.01, "high": 0.1, "width": 3}}), "`space.lr.width`"),
    (with_("space", {"optimizer": {"low": 0, "high": 1}}), "`space.optimizer`"),
    (with_("space", {"optimizer": ["sgd", "lion"]}), "`space.optimizer`"),
    (with_("space", {"batch_size": [0, 64]}), "`space.batch_size`"),
    (with_("space", {"batch_size": [64, 64]}), "`space.batch_size`"),
    (with_("space", {"aug_strength": 2.0}), "`space.aug_strength`"),
    (with_("space", {"momentum": 0.9}), "`space.momentum`"),
    (with_("space", {"arch": "resnet", "resnet": {"depth": 9}}), "`space.resnet.depth`"),
    (with_("space", {"arch": "resnet", "resnet": {"depth": {"low": 8, "high": 20}}}), "`space.resnet.depth`"),
    (with_("space", {"arch": "resnet", "resnet": {"heads": 4}}), "`space.resnet.heads`"),
    (with_("space", {"arch": "lenet", "vgg": {"width": 16}}), "`space.vgg`"),
    (with_("enqueue", [{"foo": 1}]), "`enqueue[0].foo`"),
    (with_("enqueue", {"lr": 0.1}), "`enqueue`"),
]


@pytest.mark.parametrize("raw,key", INVALID, ids=[k for _, k in INVALID])
def test_invalid_spec_names_the_key(raw, key):
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    msg = str(e.value)
    assert key in msg, msg
    assert "\n" not in msg, "the message is one line"


@pytest.mark.parametrize("item,key", [({"x": {}}, "`enqueue[0].x`"), ({"arch": {"a": {}}}, "`enqueue[0].arch`")])
def test_an_empty_table_in_enqueue_is_refused(item, key):
    with pytest.raises(SpecError) as e:
        parse_spec(BASE | {"enqueue": [item]})
    assert key in str(e.value), str(e.value)


def test_enqueued_value_outside_the_space_is_rejected():
    raw = BASE | {"space": {"lr": {"low": 0.01, "high": 0.1}}, "enqueue": [{"lr": 0.5}]}
    with pytest.raises(SpecError, match=r"`enqueue\[0\]\.lr` is 0.5, outside the space"):
        parse_spec(raw)


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname=1")
    with pytest.raises(SpecError, match="invalid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
