"""Trial packs through the real CLI: `[train] pack = 4` on a real SQLite study. Every member is a complete
trial of its own (intermediate values, attributes, pruning decision), members share the structural parameters
and not the others, and an injected NaN in one member prunes it as diverged while its pack-mates complete."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import optuna
import pytest
from conftest import run_cli
from optuna.trial import TrialState

from hpsearch.search.packs import _last_checkpoints
from hpsearch.storage.artifacts import open_artifact_store
from hpsearch.storage.checkpoints import Checkpoints
from studies import PRUNED, write_study

SPACE = {"lr": {"low": 1e-4, "high": 0.05, "log": True}, "batch_size": [32, 64],
         "label_smoothing": {"low": 0.0, "high": 0.1}, "aug_strength": {"low": 0.0, "high": 0.5}}


PERCENTILE = {"name": "percentile", "percentile": 80.0, "n_startup_trials": 2, "n_warmup_steps": 0}


def run_packed(tmp_path, name: str, n_trials: int, env: dict | None = None, pruner: dict = PERCENTILE):
    spec = write_study(tmp_path / f"{name}.toml", PRUNED, name=name, n_trials=n_trials, train={"pack": 4},
                       space=SPACE, pruner=pruner)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    r = run_cli("run", str(spec), "--storage", url, "--artifacts", str(tmp_path / "art"), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    return r, optuna.load_study(study_name=name, storage=url).get_trials()


@pytest.mark.slow
def test_a_packed_study_holds_complete_trials_of_their_own(tmp_path):
    r, trials = run_packed(tmp_path, "packed", 8)
    assert len(trials) == 8 and all(t.state.is_finished() for t in trials), "the target is exact"
    packs = defaultdict(list)
    for t in trials:
        a = t.user_attrs
        assert a["pack_size"] == len([u for u in trials if u.user_attrs["pack_id"] == a["pack_id"]])
        assert t.intermediate_values, "each member reports its own eval points"
        assert {"config", "device", "n_params", "val_top1", "epochs_completed", "wall_s"} <= set(a)
        assert a["pack_forward"] == "fused", "lenet's layers all have fused forms"
        packs[a["pack_id"]].append(t)
    assert sorted(len(p) for p in packs.values()) == [4, 4]
    for members in packs.values():
        assert sorted(t.user_attrs["pack_member"] for t in members) == [0, 1, 2, 3]
        assert len({t.params["batch_size"] for t in members}) == 1, "structural parameters are shared"
        assert len({t.params["lr"] for t in members}) == 4, "the others are each member's own"
    second = max(packs.values(), key=lambda p: min(t.number for t in p))
    states = {t.state for t in second}
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states, \
        "the pruner stopped a member while its pack-mates went on"
    for t in second:
        if t.state == TrialState.PRUNED:
            assert len(t.intermediate_values) < 4 and t.user_attrs["reason"].startswith("pruned at eval point")
    assert "trial packs of up to 4 (train.pack)" in r.stderr


@pytest.mark.slow
def test_an_injected_nan_prunes_one_member_and_the_others_complete(tmp_path):
    # diverge=0.3,seed=2 makes exactly trial 0 of the pack (seeds 0-3) diverge in its first epoch, at either batch size
    r, trials = run_packed(tmp_path, "nan", 4, env={"HPSEARCH_FAULTS": "diverge=0.3,seed=2"})
    by_state = defaultdict(list)
    for t in trials:
        by_state[t.state].append(t)
    diverged = [t for t in trials if t.user_attrs.get("reason") == "diverged"]
    assert len(diverged) == 1 and diverged[0].state == TrialState.PRUNED
    assert len(by_state[TrialState.COMPLETE]) == 3, "a NaN in one member never touches another"
    assert len({t.user_attrs["pack_id"] for t in trials}) == 1


@pytest.mark.slow
def test_out_of_memory_halves_the_pack_and_every_member_still_finishes(tmp_path):
    r, trials = run_packed(tmp_path, "oom", 4, env={"HPSEARCH_FAULTS": "oom_above_pack=2"}, pruner={"name": "none"})
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, r.stderr
    assert [t.user_attrs["pack_size"] for t in trials] == [2, 2, 2, 2]
    assert all(t.user_attrs["pack_halved_from"] == 4 for t in trials)
    assert all(len(t.intermediate_values) == 4 for t in trials)
    assert "a pack of 4 ran out of memory" in r.stderr and "going on as packs of 2 and 2" in r.stderr


@pytest.mark.slow
def test_out_of_memory_in_epoch_two_resumes_the_halves_from_their_epoch_one_checkpoints(tmp_path):
    spec = write_study(tmp_path / "oom2.toml", PRUNED, name="oom2", n_trials=4, train={"pack": 4, "max_epochs": 2},
                       space=SPACE, pruner={"name": "none"})
    url = f"sqlite:///{tmp_path / 'p.db'}"
    r = run_cli("run", str(spec), "--storage", url, "--artifacts", str(tmp_path / "art"), cwd=tmp_path,
                env={"HPSEARCH_FAULTS": "oom_above_pack=2,oom_pack_epoch=2"})
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="oom2", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, r.stderr
    assert [t.user_attrs["pack_size"] for t in trials] == [2, 2, 2, 2]
    assert [t.user_attrs["pack_resumed_epoch"] for t in trials] == [1, 1, 1, 1], "epoch 1 was not trained again"
    assert all(sorted(t.intermediate_values) == [1, 2, 3, 4] for t in trials)
    assert "going on as packs of 2 and 2" in r.stderr
    assert not [t.number for t in trials if t.user_attrs.get("fallback")], "they resumed: no fallback recorded"


@pytest.mark.slow
def test_a_torchvision_model_is_not_fused_and_its_members_train_one_after_another(tmp_path):
    spec = write_study(tmp_path / "tv.toml", name="tv", n_trials=2, train={"pack": 2},
                       data={"n_images": 120, "image_size": 32}, space={"arch": "tv:resnet18"})
    url = f"sqlite:///{tmp_path / 'tv.db'}"
    r = run_cli("run", str(spec), "--storage", url, "--artifacts", str(tmp_path / "art"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="tv", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert {t.user_attrs["pack_id"] for t in trials} == {trials[0].user_attrs["pack_id"]}
    assert "tv:resnet18 is not fused; its 2 members train one after another" in r.stderr
    assert [t.user_attrs["pack_forward"] for t in trials] == ["solo", "solo"]



def test_a_halved_pack_that_cannot_resume_says_why(tmp_path):
    """The halves go on from the members' checkpoints; when that is not possible, the reason is returned (the
    members record it as ``fallback``), except in the first epoch, where nothing had been saved to lose."""
    store = open_artifact_store(str(tmp_path / "art"))
    objective = SimpleNamespace(checkpoints=Checkpoints(store))
    study = optuna.create_study()
    good = [study.ask() for _ in range(2)]
    for epoch, trial in enumerate(good):
        objective.checkpoints.save(trial, {"model": {}, "optimizer": {}, "epoch": 1 + epoch, "batch": 0, "step": 0,
                                          "images": 0, "train_s": 0.0, "points": []})

    def runs(*trials):
        return [SimpleNamespace(trial=t) for t in trials]

    fresh = [study.ask() for _ in range(2)]
    assert _last_checkpoints(objective, runs(*fresh)) == (None, None), "epoch 1: nothing saved, nothing lost"
    assert _last_checkpoints(objective, runs(good[0], fresh[0])) == (None, "not every member had a checkpoint")
    assert _last_checkpoints(objective, runs(*good)) == (None, "the members' checkpoints are of different epochs")
    broken = study.ask()
    broken.set_user_attr("checkpoint", "missing")
    states, why = _last_checkpoints(objective, runs(good[0], broken))
    assert states is None and why.startswith("cannot load a member's checkpoint: checkpoint missing cannot be loaded")
    states, why = _last_checkpoints(objective, runs(good[0], good[0]))
    assert why is None and [s["epoch"] for s in states] == [1, 1]
