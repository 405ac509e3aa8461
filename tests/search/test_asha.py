"""The asha pruner: successive halving by promotion (hpsearch.search.asha). Configurations pause at rung epochs
with their checkpoints kept; the top 1/η of a rung are promoted and continue, from that checkpoint, in a new
trial. The rule is checked on real Optuna studies; the mechanism on real studies run by the CLI (SQLite, and two
workers on PostgreSQL)."""

from __future__ import annotations

import io

import optuna
import pytest
import torch
from conftest import run_cli
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from services import service_url, unique

from hpsearch.data import load_dataset
from hpsearch.data.fidelity import apply_fidelity
from hpsearch.errors import SpecError
from hpsearch.runtime.worker import WorkerOptions, run
from hpsearch.search.scheduler import (
    Rules,
    Rungs,
    checkpoint_bound,
    duplicate_of,
    finished_count,
    paused_to_keep,
    promotable,
    rungs,
)
from hpsearch.search.study import stored_spec
from hpsearch.spec import load_spec
from hpsearch.storage.attrs import CHECKPOINT as ATTR
from hpsearch.storage.attrs import PAUSED_AT, PROMOTED_FROM
from hpsearch.storage.checkpoints import Checkpoints
from hpsearch.storage.urls import open_storage
from hpsearch.training.loop import fit
from hpsearch.training.setup import build_model, device_data, train_config
from studies import write_study

RUNGS = Rungs(steps=(2, 6), eta=3)


def _add(study: optuna.Study, curve: list[float], state=TrialState.PRUNED, paused: int | None = None,
         checkpoint: str | None = "ckpt", promoted_from: int | None = None, x: float | None = None) -> int:
    """Adds a trial with val Top-1 ``curve`` at steps 1, 2, ...; returns its number."""
    attrs = {}
    if paused is not None:
        attrs[PAUSED_AT] = paused
    if checkpoint:
        attrs[ATTR] = f"{checkpoint}-{len(study.trials)}"
    if promoted_from is not None:
        attrs[PROMOTED_FROM] = promoted_from
    value = curve[-1] if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, value=value, params={"x": len(study.trials) if x is None else x},
                                 distributions={"x": FloatDistribution(0, 1000)}, user_attrs=attrs,
                                 intermediate_values=dict(enumerate(curve, start=1))))
    return len(study.trials) - 1


def test_the_top_third_of_a_rung_is_promoted_highest_rung_first():
    study = optuna.create_study(direction="maximize")
    _add(study, [40, 50], paused=2)
    b = _add(study, [40, 70], paused=2)
    assert promotable(study.trials, RUNGS) is None, "two configurations at a rung: ⌊2/3⌋ = 0 promotions"
    _add(study, [40, 60], paused=2)
    assert promotable(study.trials, RUNGS).number == b, "three: the best is promoted"
    # b goes on in a new trial (running, no values of its own yet): its configuration still holds its place
    _add(study, [], state=TrialState.RUNNING, promoted_from=b, checkpoint=None, x=b)
    assert promotable(study.trials, RUNGS) is None, "the top 1 of 3 is promoted already"
    _add(study, [40, 10], paused=2)
    _add(study, [40, 20], paused=2)
    assert promotable(study.trials, RUNGS) is None, "five at the rung: the top 1 is b, promoted"
    c = _add(study, [40, 65], paused=2)
    assert promotable(study.trials, RUNGS).number == c, "six: the top 2 are b and 65 (60 is third)"
    # higher rungs first: three configurations paused at step 6
    study2 = optuna.create_study(direction="maximize")
    for v in (80, 90, 85):
        _add(study2, [40, 60, 70, 75, 78, v], paused=6)
    for v in (50, 70, 60):
        _add(study2, [40, v], paused=2)
    assert promotable(study2.trials, RUNGS).number == 1, "rung 3's best goes before rung 1's"
    # a paused trial whose checkpoint is gone cannot be promoted; a completed configuration is not paused
    study3 = optuna.create_study(direction="maximize")
    _add(study3, [40, 90], paused=2, checkpoint=None)
    _add(study3, [40, 10], paused=2)
    _add(study3, [40, 20], state=TrialState.COMPLETE)
    assert promotable(study3.trials, RUNGS) is None


def test_eager_rungs_promote_the_best_so_far_before_eta_configurations_reach_them():
    """``eager = true``: the top max(1, ⌊n/η⌋) go on, so the first configuration never waits at a rung (as the
    stopping ASHA of Syne Tune and Ray Tune lets its first trial go on) and a later one only when it leads."""
    eager = Rungs(steps=(2, 6), eta=3, eager=True)
    study = optuna.create_study(direction="maximize")
    a = _add(study, [40, 50], paused=2)
    assert promotable(study.trials, RUNGS) is None, "plain asha: one configuration at a rung is not promoted"
    assert promotable(study.trials, eager).number == a, "eager: the first goes on"
    _add(study, [], state=TrialState.RUNNING, promoted_from=a, checkpoint=None, x=a)
    _add(study, [40, 45], paused=2)
    assert promotable(study.trials, eager) is None, "the second is below the first: it waits"
    c = _add(study, [40, 70], paused=2)
    assert promotable(study.trials, eager).number == c, "the third leads the rung: it goes on"
    assert promotable(study.trials, RUNGS).number == c, "plain asha at three: the same"
    # kept checkpoints: a's (its continuation has saved none yet), and at least the rung's best however short
    # the study
    assert paused_to_keep(study.trials, eager, n_trials=2) == {a, c}
    assert paused_to_keep(study.trials, RUNGS, n_trials=2) == {a}
    assert checkpoint_bound(Rules(2, rungs=eager), workers=1, keep_best=1) == 1 + 1 + 2


def test_eager_upper_rungs_wait_at_the_first_rung_only():
    """``eager = "upper"``: the first rung promotes ASHA's ⌊n/η⌋; a higher rung, whose configurations were chosen
    at the first already, lets its best so far go on at once."""
    upper = Rungs(steps=(2, 6), eta=3, eager="upper")
    study = optuna.create_study(direction="maximize")
    a = _add(study, [40, 50], paused=2)
    assert promotable(study.trials, upper) is None, "one at the first rung: it waits"
    _add(study, [40, 45], paused=2)
    _add(study, [40, 30], paused=2)
    assert promotable(study.trials, upper).number == a, "three at the first rung: the best goes on"
    b = _add(study, [40, 50, 60, 70, 72, 74], paused=6, promoted_from=a, x=a)
    assert promotable(study.trials, upper).number == b, "alone at the second rung: it goes on at once"
    assert promotable(study.trials, RUNGS) is None, "plain asha: it waits for two others"
    assert paused_to_keep(study.trials, upper, n_trials=2) == {b}
    assert checkpoint_bound(Rules(2, rungs=upper), workers=1, keep_best=1) == 1 + 1 + 0 + 1


def test_a_configuration_counts_once_and_duplicate_promotions_are_found():
    study = optuna.create_study(direction="maximize")
    p = _add(study, [40, 70], paused=2)
    _add(study, [40, 50], paused=2)
    _add(study, [40, 60], paused=2)
    assert finished_count(study.trials) == 3
    child = _add(study, [40, 70, 75, 80], state=TrialState.COMPLETE, promoted_from=p, x=p)
    assert finished_count(study.trials) == 3, "the promoted paused trial is superseded by its continuation"
    assert duplicate_of(study.trials, child) is None
    copy = _add(study, [], state=TrialState.RUNNING, promoted_from=p, checkpoint=None, x=p)
    assert duplicate_of(study.trials, copy) == child, "a second promotion of the same paused trial"
    # checkpoints: the promoted trial's continuation has its own, the two others may still be promoted
    assert paused_to_keep(study.trials, RUNGS, n_trials=9) == {1, 2}


def test_checkpoints_of_paused_trials_stay_until_their_continuation_saves_its_own():
    study = optuna.create_study(direction="maximize")
    p = _add(study, [40, 70], paused=2)
    _add(study, [], state=TrialState.WAITING, promoted_from=p, checkpoint=None, x=p)
    assert paused_to_keep(study.trials, RUNGS, n_trials=9) == {p}, "the waiting continuation will resume from it"
    study2 = optuna.create_study(direction="maximize")
    p = _add(study2, [40, 70], paused=2)
    q = _add(study2, [40, 70, 72, 74, 76, 78], paused=6, promoted_from=p, x=p)  # promoted, paused again
    assert paused_to_keep(study2.trials, RUNGS, n_trials=9) == {q}


def test_a_paused_checkpoint_goes_once_its_configuration_can_no_longer_be_promoted():
    """At most n_trials configurations reach a rung, so only the top ⌊n_trials/η⌋ there can ever be promoted:
    with n_trials = 6 and η = 3, a paused configuration with two others ranked above it keeps no checkpoint."""
    study = optuna.create_study(direction="maximize")
    a, b = _add(study, [40, 50], paused=2), _add(study, [40, 70], paused=2)
    assert paused_to_keep(study.trials, RUNGS, n_trials=6) == {a, b}, "two at the rung: both may be promoted"
    c = _add(study, [40, 60], paused=2)
    assert paused_to_keep(study.trials, RUNGS, n_trials=6) == {b, c}, "a is third of three: never in the top 2"
    d = _add(study, [40, 65], paused=2)
    assert paused_to_keep(study.trials, RUNGS, n_trials=6) == {b, d}
    assert paused_to_keep(study.trials, RUNGS, n_trials=12) == {a, b, c, d}, "a longer study: all may be"
    # a dropped configuration is never chosen: the promotion takes the best of the top
    assert promotable(study.trials, RUNGS).number == b


def test_rungs_from_the_spec(tmp_path):
    spec = load_spec(write_study(tmp_path / "s.toml", train={"max_epochs": 5, "eval_every": 0.5},
                                 pruner={"name": "asha", "min_resource": 1, "reduction_factor": 3}))
    assert rungs(spec).steps == (1, 3, 9), "eval points 1, 3, 9 of 10"
    assert not rungs(spec).eager
    spec = load_spec(write_study(tmp_path / "e.toml", train={"max_epochs": 6, "eval_every": 0.5},
                                 pruner={"name": "asha", "min_resource": 1, "n_rungs": 2, "eager": True}))
    assert rungs(spec) == Rungs((1, 3), 3, eager=True)
    spec = load_spec(write_study(tmp_path / "u.toml", train={"max_epochs": 6, "eval_every": 0.5},
                                 pruner={"name": "asha", "n_rungs": 2, "eager": "upper"}))
    assert rungs(spec) == Rungs((1, 3), 3, eager="upper")
    with pytest.raises(SpecError) as e:  # named as the study file spells them, not as Python's True and 'lower'
        load_spec(write_study(tmp_path / "w.toml", pruner={"name": "asha", "eager": "lower"}))
    assert str(e.value) == '`pruner.eager` is "lower", but must be one of true, false, "upper"'
    with pytest.raises(SpecError) as e:  # a control character stays escaped: the error is one line
        load_spec(write_study(tmp_path / "n.toml", pruner={"name": "asha", "eager": "up\nper"}))
    assert str(e.value) == '`pruner.eager` is "up\\nper", but must be one of true, false, "upper"'
    spec = load_spec(write_study(tmp_path / "s.toml", train={"max_epochs": 9, "eval_every": 1},
                                 pruner={"name": "asha", "min_resource": 2, "reduction_factor": 2, "n_rungs": 2}))
    assert rungs(spec).steps == (2, 4) and rungs(spec).next_after(2) == 4 and rungs(spec).next_after(4) is None


@pytest.mark.slow
def test_rungs_that_cannot_be_reached_are_usage_errors(tmp_path):
    for pruner, train, says in (
        ({"min_resource": 4}, {"max_epochs": 2}, "`pruner.min_resource` is 4 eval point(s), but a trial has 4"),
        ({"reduction_factor": 1}, {"max_epochs": 3}, "`pruner.reduction_factor` is 1, but must be ≥ 2"),
    ):
        spec = write_study(tmp_path / "s.toml", train=train, pruner={"name": "asha", **pruner})
        r = run_cli("run", str(spec), "--storage", f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path)
        assert r.returncode == 2 and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


ASHA = {"data": {"num_classes": 4, "n_images": 400}, "train": {"max_epochs": 3, "eval_every": 0.5},
        "pruner": {"name": "asha", "min_resource": 1, "reduction_factor": 2, "n_rungs": 2},  # eval points 1, 2
        "space": {"lr": {"low": 1e-3, "high": 0.05, "log": True}, "batch_size": 32, "weight_decay": 5e-4}}


@pytest.mark.slow
def test_a_promoted_configuration_ends_as_if_it_had_never_paused(tmp_path):
    spec_path = write_study(tmp_path / "s.toml", ASHA, name="asha", n_trials=6)
    url = f"sqlite:///{tmp_path / 's.db'}"
    r = run_cli("run", str(spec_path), "--storage", url, "--artifacts", str(tmp_path / "art"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="asha", storage=url)
    trials = study.get_trials()
    assert finished_count(trials) == 6
    promoted = [t for t in trials if PROMOTED_FROM in t.user_attrs]
    assert promoted, "with η = 2 at least one configuration of six is promoted"
    assert len({str(t.params) for t in trials}) == 6, "promotions are no new configurations"
    by_number = {t.number: t for t in trials}
    for t in promoted:
        parent = by_number[t.user_attrs[PROMOTED_FROM]]
        assert parent.state == TrialState.PRUNED and t.params == parent.params
        assert t.user_attrs["resumed_from_trial"] == parent.number
        assert max(parent.intermediate_values) == parent.user_attrs[PAUSED_AT] in (1, 2), "paused at a rung"
        assert abs(t.user_attrs["resumed_at_epoch"] - 0.5 * parent.user_attrs[PAUSED_AT]) < 0.1  # 6 batches an epoch
        assert {k: v for k, v in t.intermediate_values.items() if k in parent.intermediate_values} == \
            parent.intermediate_values, "the learning curve carries over"
        assert f"trial {t.number}: promoted from trial {parent.number} at epoch" in r.stderr
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert done and all(PROMOTED_FROM in t.user_attrs for t in done), "only promoted configurations train to the end"
    # the completed configuration's result equals an uninterrupted run with the first trial's seed
    final = done[0]
    root = final
    while PROMOTED_FROM in root.user_attrs:
        root = by_number[root.user_attrs[PROMOTED_FROM]]
    spec = stored_spec(study)
    values = final.user_attrs["config"]
    ds = apply_fidelity(load_dataset(spec.data, spec.study.seed), 1.0, 0, spec.study.seed)
    seed = spec.study.seed + root.number
    device = torch.device("cpu")
    result = fit(build_model(values, ds, device, seed), device_data(ds, device),
                 train_config(spec, values, seed, "fp32"))
    assert result.top1 == final.value
    assert [p.top1 for p in result.points] == [final.intermediate_values[s] for s in sorted(final.intermediate_values)]
    # checkpoints: of the paused trials not promoted, those that can still be promoted keep theirs (the top
    # ⌊6/2⌋ of each rung), the others do not; a promoted one's goes once its continuation has its own
    files = {f.name for f in (tmp_path / "art").iterdir()}
    keep = paused_to_keep(trials, rungs(spec), n_trials=6)
    for t in trials:
        if t.state == TrialState.PRUNED and PAUSED_AT in t.user_attrs:
            assert (t.user_attrs[ATTR] in files) == (t.number in keep), t.number
    assert not any(by_number[t.user_attrs[PROMOTED_FROM]].user_attrs[ATTR] in files for t in promoted
                   if ATTR in t.user_attrs)


@pytest.mark.slow
def test_a_long_asha_study_keeps_at_most_the_stated_number_of_checkpoints(tmp_path, monkeypatch):
    """12 configurations, η = 3, one rung: after every trial, the checkpoints on disk stay within workers +
    keep_best + n_rungs·⌊n_trials/η⌋ = 1 + 1 + 4 (before the rule, every paused configuration that was never
    promoted kept its checkpoint: 8 of the 12 here)."""
    spec = load_spec(write_study(tmp_path / "s.toml", name="long", n_trials=12, data={"num_classes": 4, "n_images": 200},
                                 train={"max_epochs": 2, "eval_every": 0.5},
                                 pruner={"name": "asha", "min_resource": 1, "reduction_factor": 3, "n_rungs": 1},
                                 space={"lr": {"low": 1e-3, "high": 0.05, "log": True}, "batch_size": 32}))
    art = tmp_path / "art"
    url = f"sqlite:///{tmp_path / 's.db'}"
    counts: list[int] = []
    apply = Checkpoints.apply_retention

    def counted(self, study, also_keep=None):  # after each trial's retention pass: the checkpoints on disk
        apply(self, study, also_keep)
        ids = {t.user_attrs.get(ATTR) for t in study.get_trials(deepcopy=False)}
        counts.append(sum(1 for f in art.iterdir() if f.name in ids))

    monkeypatch.setattr(Checkpoints, "apply_retention", counted)
    assert run(spec, url, opts=WorkerOptions(artifacts=str(art), keep_best=1), stream=io.StringIO()) == 0
    trials = optuna.load_study(study_name="long", storage=url).get_trials()
    assert finished_count(trials) == 12 and len(counts) >= 12
    bound = checkpoint_bound(Rules.of(spec), workers=1, keep_best=1)
    assert bound == 6 and max(counts) <= bound, counts
    paused_for_good = [t for t in trials if t.state == TrialState.PRUNED and PAUSED_AT in t.user_attrs
                       and t.number not in {p.user_attrs.get(PROMOTED_FROM) for p in trials}]
    assert len(paused_for_good) > bound, "the study is longer than the bound"


@pytest.mark.slow
def test_two_workers_on_postgresql_promote_each_configuration_once(tmp_path):
    url = service_url("postgresql")
    name = unique("asha")
    spec = write_study(tmp_path / "s.toml", ASHA, name=name, n_trials=10, data={"n_images": 300})
    try:
        r = run_cli("run", str(spec), "--storage", url, "--workers", "2", "--artifacts", str(tmp_path / "art"),
                    cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr
        trials = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None)).get_trials()
        assert finished_count(trials) == 10 and all(t.state.is_finished() for t in trials)
        counted = [t for t in trials if not t.user_attrs.get("surplus")]
        sources = [t.user_attrs[PROMOTED_FROM] for t in counted if PROMOTED_FROM in t.user_attrs]
        assert sources and len(sources) == len(set(sources)), "no paused trial goes on twice"
        assert len({str(t.params) for t in counted}) == 10
        assert promotable(trials, rungs(load_spec(spec))) is None, "the workers made every promotion due"
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=None))
