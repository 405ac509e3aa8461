"""Checkpoints: save, load, remove and retention against real storages and a real FileSystemArtifactStore, with
optuna-dashboard's own listing code as the judge of what the dashboard shows (issue 11)."""

from __future__ import annotations

import threading

import pytest
import torch
from optuna.artifacts import get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.study import Study, create_study, delete_study, load_study
from optuna.trial import FrozenTrial, TrialState
from optuna_dashboard.artifact._backend import get_trial_artifact_meta, list_trial_artifacts
from services import service_url, unique

from hpsearch.storage.artifacts import open_artifact_store
from hpsearch.storage.checkpoints import ATTR, Checkpoints, dashboard_artifact_key
from hpsearch.storage.optuna_internals import study_id, study_storage, trial_id
from hpsearch.storage.urls import open_storage

STORAGES = ["sqlite", "postgresql", "mysql", "journal", "redis"]


def state(epoch: int) -> dict:
    """A checkpoint as hpsearch.training.loop.fit makes one: plain tensors and values."""
    return {"model": {"w": torch.full((4, 4), float(epoch))}, "optimizer": {"step": epoch}, "epoch": epoch,
            "points": []}


@pytest.fixture
def study_on(tmp_path):
    """``study_on(kind)``: a fresh maximising study on that storage, opened as workers open it (retry wrapper
    and Optuna's cache in front); deleted afterwards from the shared servers."""
    made: list[tuple[str, str]] = []

    def make(kind: str) -> Study:
        url = {"sqlite": f"sqlite:///{tmp_path / 'db.sqlite'}", "journal": f"journal:///{tmp_path / 'j.log'}"
               }.get(kind) or service_url(kind)
        storage = open_storage(url, heartbeat=None)
        # a study before ours, with a trial, so that our trials' storage ids differ from their numbers
        other = create_study(storage=storage, study_name=unique("other"))
        other.tell(other.ask(), 0.0)
        name = unique("ckpt")
        made.extend([(url, other.study_name), (url, name)])
        return create_study(storage=storage, study_name=name, direction="maximize")

    yield make
    for url, name in made:
        delete_study(study_name=name, storage=open_storage(url, heartbeat=None))


def trial(study: Study, number: int) -> FrozenTrial:
    return study.get_trials(deepcopy=False)[number]


def listed(study: Study, number: int) -> list[str]:
    """Artifact ids optuna-dashboard lists for trial ``number``, computed by its own listing code."""
    t = trial(study, number)
    attrs = study_storage(study).get_study_system_attrs(study_id(study))
    return [a["artifact_id"] for a in list_trial_artifacts(attrs, t.system_attrs, t)]


def downloadable(study: Study, number: int, artifact_id: str) -> bool:
    """Whether the dashboard's download route finds metadata for the artifact (else it answers 404)."""
    t = trial(study, number)
    return get_trial_artifact_meta(study_storage(study), study_id(study), trial_id(t), artifact_id) is not None


def run_trial(study: Study, ckpts: Checkpoints, value: float | None, epochs: int = 2) -> int:
    """One trial that checkpoints every epoch; ``value`` None leaves it pruned."""
    t = study.ask()
    for epoch in range(1, epochs + 1):
        ckpts.save(t, state(epoch))
    study.tell(t, value, state=TrialState.PRUNED if value is None else TrialState.COMPLETE)
    return t.number


def on_disk(art) -> set[str]:
    return {f.name for f in art.iterdir() if f.is_file()}


def test_save_writes_an_unregistered_checkpoint_and_replaces_the_previous_one(study_on, tmp_path):
    study = study_on("sqlite")
    art = tmp_path / "art"
    ckpts = Checkpoints(open_artifact_store(str(art)))
    t = study.ask()
    first = ckpts.save(t, state(1))
    assert t.user_attrs[ATTR] == first and on_disk(art) == {first}
    second = ckpts.save(t, state(2))
    assert t.user_attrs[ATTR] == second, "the trial points at its newest checkpoint"
    assert on_disk(art) == {second}, "the checkpoint it replaces is removed"
    assert ckpts.load(second)["epoch"] == 2 and torch.equal(ckpts.load(second)["model"]["w"], torch.full((4, 4), 2.))
    assert get_all_artifact_meta(t) == [], "a per-epoch checkpoint is not registered as a trial artifact"
    assert listed(study, t.number) == [], "and optuna-dashboard does not list it"
    ckpts.remove(second)
    with pytest.raises(ArtifactNotFound):
        ckpts.store.open_reader(second)


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORAGES)
def test_retention_lists_exactly_the_kept_checkpoints_in_the_dashboard(kind, study_on, tmp_path):
    study = study_on(kind)
    art = tmp_path / "art"
    ckpts = Checkpoints(open_artifact_store(str(art)), keep_best=1)
    low, pruned, high = run_trial(study, ckpts, 50.0), run_trial(study, ckpts, None), run_trial(study, ckpts, 70.0)
    assert listed(study, high) == [], "nothing is listed before retention runs"
    ckpts.apply_retention(study)
    kept = trial(study, high).user_attrs[ATTR]
    assert listed(study, high) == [kept], "the best trial lists the checkpoint retention kept"
    assert downloadable(study, high, kept) and ckpts.load(kept)["epoch"] == 2
    assert listed(study, low) == [] and listed(study, pruned) == [], "removed checkpoints are not listed"
    assert on_disk(art) == {kept}, "disk holds keep_best checkpoints"
    ckpts.apply_retention(study)
    assert listed(study, high) == [kept], "a second pass registers nothing twice"

    best = run_trial(study, ckpts, 90.0)  # `high` falls out of the best 1
    ckpts.apply_retention(study)
    new = trial(study, best).user_attrs[ATTR]
    assert listed(study, high) == [] and not downloadable(study, high, kept), "the dropped one is deregistered"
    assert listed(study, best) == [new] and on_disk(art) == {new}


def test_the_registration_key_uses_the_trials_storage_id(study_on, tmp_path):
    study = study_on("sqlite")
    ckpts = Checkpoints(open_artifact_store(str(tmp_path / "art")), keep_best=1)
    n = run_trial(study, ckpts, 1.0)
    ckpts.apply_retention(study)
    t = trial(study, n)
    assert trial_id(t) != t.number, "the fixture makes ids and numbers differ"
    attrs = study_storage(study).get_study_system_attrs(study_id(study))
    assert dashboard_artifact_key(trial_id(t), t.user_attrs[ATTR]) in attrs


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_workers_that_disagree_never_list_a_removed_checkpoint(kind, study_on, tmp_path):
    """Two workers' retention passes in both orders: one keeps the best 2, the other the best 1 (as a worker
    whose view of the study is older keeps a trial that a newer view has dropped)."""
    study = study_on(kind)
    store = open_artifact_store(str(tmp_path / "art"))
    wide, narrow = Checkpoints(store, keep_best=2), Checkpoints(store, keep_best=1)
    second, first = run_trial(study, wide, 60.0), run_trial(study, wide, 80.0)
    dropped = trial(study, second).user_attrs[ATTR]

    wide.apply_retention(study)  # registers both
    assert listed(study, second) == [dropped]
    narrow.apply_retention(study)  # removes `second`'s file and deregisters it
    wide.apply_retention(study)  # still counts it among its best: must not list it again
    narrow.apply_retention(study)
    assert listed(study, second) == [], "a removed checkpoint stays unlisted"
    with pytest.raises(ArtifactNotFound):
        store.open_reader(dropped)
    assert listed(study, first) == [trial(study, first).user_attrs[ATTR]]

    third = run_trial(study, wide, 70.0)  # now second of three, never registered
    narrow.apply_retention(study)  # the narrow worker removes it before the wide one has listed it
    Checkpoints(store, keep_best=2).apply_retention(study)  # a fresh wide worker (no memory of removals)
    assert listed(study, third) == []


def test_a_registration_whose_file_is_gone_is_withdrawn(study_on, tmp_path):
    """A worker registers a checkpoint that another has just removed (its null not yet written): the
    registering worker finds the file missing and withdraws the entry itself."""
    study = study_on("sqlite")
    ckpts = Checkpoints(open_artifact_store(str(tmp_path / "art")), keep_best=1)
    n = run_trial(study, ckpts, 1.0)
    ckpts.store.remove(trial(study, n).user_attrs[ATTR])  # the other worker's first step
    ckpts.apply_retention(study)
    assert listed(study, n) == []


def test_a_settled_study_costs_retention_no_writes(study_on, tmp_path):
    """Retention runs after every trial in every worker: once the listing matches the rule, a pass, even a fresh
    worker's (no memory of earlier removals), writes nothing. The journal file grows with every write."""
    study = study_on("journal")
    log = tmp_path / "j.log"
    store = open_artifact_store(str(tmp_path / "art"))
    ckpts = Checkpoints(store, keep_best=1)
    for value in (10.0, None, 30.0, 20.0):
        run_trial(study, ckpts, value)
        ckpts.apply_retention(study)
    size = log.stat().st_size
    for keep_best in (1, 2):  # a wide worker too: it must not re-list what the narrow one removed
        Checkpoints(store, keep_best=keep_best).apply_retention(study)
    assert log.stat().st_size == size


@pytest.mark.slow
def test_concurrent_workers_leave_only_existing_checkpoints_listed(study_on, tmp_path):
    """Four workers (each its own storage connection and memory, keep_best 1 to 3) run retention over and over
    while trials complete; afterwards every listed checkpoint exists and the best one is listed."""
    study = study_on("postgresql")
    url, store = service_url("postgresql"), open_artifact_store(str(tmp_path / "art"))
    done = threading.Event()
    errors: list[BaseException] = []

    def worker(keep_best: int) -> None:
        ckpts = Checkpoints(store, keep_best=keep_best)
        mine = load_study(study_name=study.study_name, storage=open_storage(url, heartbeat=None))
        try:
            while not done.is_set():
                ckpts.apply_retention(mine)
            ckpts.apply_retention(mine)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2, 3, 1)]
    for th in threads:
        th.start()
    writer = Checkpoints(store)
    for value in (40.0, 60.0, 50.0, 80.0, 70.0, 90.0, 85.0, 30.0):
        run_trial(study, writer, value, epochs=1)
    done.set()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    best = max(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value)
    for t in study.get_trials():
        for artifact_id in listed(study, t.number):
            with store.open_reader(artifact_id) as f:  # raises ArtifactNotFound for a listed, removed file
                assert f.read(1)
    assert listed(study, best.number) == [best.user_attrs[ATTR]]
    assert sum(len(listed(study, t.number)) for t in study.get_trials()) == 1, "keep_best 1 won everywhere"
