"""Sampling the space with Optuna's FixedTrial: conditional parameters appear only for their arch."""

from __future__ import annotations

import optuna

from hpsearch.params import arch_params
from hpsearch.search.space import suggest
from hpsearch.spec import parse_spec

SPEC = parse_spec({
    "study": {"name": "s"}, "data": {"dataset": "synthetic"},
    "space": {"arch": ["lenet", "vgg", "resnet"], "lr": {"low": 1e-3, "high": 0.1, "log": True},
              "batch_size": [64, 128], "label_smoothing": 0.1,
              "vgg": {"stages": {"low": 1, "high": 3}, "width": [16, 32]}, "resnet": {"depth": [8, 14]}},
})


def test_only_the_chosen_arch_parameters_are_sampled():
    values = suggest(optuna.trial.FixedTrial({"arch": "vgg", "lr": 0.01, "batch_size": 64, "vgg.stages": 2,
                                              "vgg.width": 32}), SPEC.space)
    assert values["arch"] == "vgg"
    assert values["vgg.stages"] == 2 and values["vgg.width"] == 32
    assert not any(k.startswith(("resnet.", "lenet.")) for k in values)
    assert arch_params(values) == {"stages": 2, "width": 32}


def test_fixed_parameters_take_their_value_without_suggest():
    trial = optuna.trial.FixedTrial({"arch": "lenet", "lr": 0.01, "batch_size": 128})
    values = suggest(trial, SPEC.space)
    assert values["label_smoothing"] == 0.1
    assert values["lenet.width"] == 1, "lenet.width is not in the space: its default"
    assert "label_smoothing" not in trial.params, "fixed values are not Optuna parameters"
    assert set(trial.params) == {"arch", "lr", "batch_size"}


def test_a_real_study_records_only_relevant_parameters():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(12):
        t = study.ask()
        values = suggest(t, SPEC.space)
        study.tell(t, 0.0)
        for name in t.params:
            if "." in name:
                assert name.startswith(values["arch"] + "."), (name, values["arch"])
    assert {t.params["arch"] for t in study.trials} == {"lenet", "vgg", "resnet"}
    # lenet has no searched parameter here; vgg and resnet trials each record theirs
    recorded = {t.params["arch"]: {n for n in t.params if "." in n} for t in study.trials}
    assert recorded == {"lenet": set(), "vgg": {"vgg.stages", "vgg.width"}, "resnet": {"resnet.depth"}}
