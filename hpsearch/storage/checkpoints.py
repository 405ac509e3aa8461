"""Trial checkpoints in Optuna's artifact store: save after every epoch, load without unpickling, keep few, and
list in optuna-dashboard only the ones that still exist.

A checkpoint is ``torch.save`` of plain tensors and values (the format of ``hpsearch.training.checkpoint``); loading uses
``torch.load(weights_only=True)``, which refuses pickled objects, so a planted file cannot run code.
Per-epoch checkpoints are written with the store's own ``write`` under a uuid4 id and are not registered as
trial artifacts (a trial's system attributes could not be cleaned once it finished); the newest one's id is
recorded on the trial (user attribute ``checkpoint``), which is what resume reads.

Retention: a running trial keeps only its newest checkpoint; a pruned or failed-for-good trial keeps none;
completed trials keep theirs only while they rank among the best ``keep_best``; the caller names the finished
trials whose checkpoints must stay besides (``hpsearch.search.scheduler.checkpoints_to_keep``: failed trials
whose retry has not finished, and asha's paused trials that can still be promoted, at most ⌊n_trials/η⌋ per
rung). So a study's disk use is bounded by (running workers + keep_best + n_rungs·⌊n_trials/η⌋) checkpoints,
whatever its length (``scheduler.checkpoint_bound``). Retention also keeps optuna-dashboard
true: a kept checkpoint is registered where the dashboard lists a finished trial's artifacts (the study's system
attributes, :func:`dashboard_artifact_key`), and a removed one is set to null there, as the dashboard's own
delete does. Workers run retention concurrently, so both steps are idempotent (the same value written twice)
and ordered so that a listing never outlives its file: deregistering removes the file, then writes null;
registering writes the entry, then checks that the file is still there (and writes null if not). A null is
final: a completed trial that fell out of the best never comes back. Each worker reads the listing once and
then remembers what it wrote, so a pass over a settled study writes nothing.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import uuid
from collections.abc import Callable

import optuna
import torch
from optuna.artifacts import ArtifactMeta
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import HpsearchError
from hpsearch.storage import attrs, optuna_internals
from hpsearch.storage.artifacts import ARTIFACT_ID_RE, check_artifact_id

log = logging.getLogger("hpsearch")
ATTR = attrs.CHECKPOINT  # trial user attribute: artifact id of the newest checkpoint
# mimetypes guesses application/vnd.snesdev-page-table for '.pt'; a checkpoint is plain bytes to a browser
CHECKPOINT_MIMETYPE = "application/octet-stream"
# optuna-dashboard stores an artifact's metadata as a JSON string (json.dumps of ArtifactMeta) and deletes it by
# storing json.dumps(None), which list_trial_artifacts json.loads to None and skips
DEREGISTERED = json.dumps(None)


def dashboard_artifact_key(trial_id: int, artifact_id: str) -> str:
    """The study system attribute under which optuna-dashboard lists an artifact of a trial (by storage id).

    optuna-dashboard 0.21 reads it in ``optuna_dashboard/artifact/_backend.py``: ``_dashboard_artifact_prefix``
    builds ``dashboard:artifacts:<trial_id>:``, ``list_trial_artifacts`` and ``get_trial_artifact_meta`` read the
    study's system attributes under that prefix (JSON of ``ArtifactMeta``; null entries are skipped), and
    ``delete_trial_artifact`` deletes one by setting it to JSON null. Study system attributes stay writable after
    a trial finishes, its own system attributes do not. ``tests/storage/test_checkpoints.py`` checks the dashboard's own
    ``list_trial_artifacts`` lists what this key registers.
    """
    return f"dashboard:artifacts:{trial_id}:{artifact_id}"


class Checkpoints:
    """One worker's view of the checkpoint store: save, load, and apply the retention rule."""

    def __init__(self, store, keep_best: int = 3):
        self.store = store
        self.keep_best = keep_best
        self._removed: set[str] = set()  # finished trials' attributes cannot change: remember removals here
        # dashboard_artifact_key → True (registered) / False (deregistered), as this worker last wrote or read it.
        # Read once, on the first pass: a long study's system attributes (its notes too) take 0.2-0.5 s to read
        # at 2,000 trials on SQLite, too much for every pass; the write order in _register makes acting on this
        # memory safe when other workers change the listing meanwhile.
        self._listed: dict[str, bool] | None = None

    def save(self, trial: optuna.Trial, state: dict) -> str:
        """Writes ``state`` as this trial's newest checkpoint (unregistered) and removes the one it replaces."""
        old = trial.user_attrs.get(ATTR)
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        artifact_id = str(uuid.uuid4())  # as optuna.artifacts.upload_artifact names artifacts
        self.store.write(artifact_id, buf)
        trial.set_user_attr(ATTR, artifact_id)
        if old:
            self.remove(old)
        return artifact_id

    def load(self, artifact_id: str) -> dict:
        """Reads a checkpoint without unpickling objects; a foreign or damaged file raises HpsearchError."""
        check_artifact_id(artifact_id)
        try:
            with self.store.open_reader(artifact_id) as f:
                data = f.read()
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise HpsearchError(f"checkpoint {artifact_id} cannot be loaded safely: {type(e).__name__}: {text}"
                                ) from None
        if not isinstance(state, dict) or not {"model", "optimizer", "epoch"} <= set(state):
            raise HpsearchError(f"artifact {artifact_id} is not an hpsearch checkpoint")
        return state

    def remove(self, artifact_id: str) -> None:
        if artifact_id in self._removed:
            return
        self._removed.add(artifact_id)
        try:
            self.store.remove(check_artifact_id(artifact_id))
        except Exception as e:  # already gone, or a store hiccup: never fail a trial over clean-up
            log.debug("could not remove artifact %s: %s", artifact_id, e)

    def exists(self, artifact_id: str) -> bool:
        try:
            with self.store.open_reader(artifact_id):
                return True
        except Exception:  # ArtifactNotFound, or a store that cannot answer: do not list what may be gone
            return False

    def apply_retention(self, study: optuna.Study,
                        also_keep: Callable[[list[FrozenTrial]], set[int]] | None = None) -> None:
        """Removes every checkpoint the retention rule (module docstring) no longer allows, and registers in
        optuna-dashboard the completed trials' checkpoints it keeps. ``also_keep`` names more finished trials
        whose checkpoints stay (the paused trials of ``hpsearch.search.asha``)."""
        trials = study.get_trials(deepcopy=False)
        complete = sorted((t for t in trials if t.state == TrialState.COMPLETE and ATTR in t.user_attrs),
                          key=lambda t: t.value, reverse=True)
        keep = {t.number for t in complete[: self.keep_best]}
        if also_keep is not None:
            keep |= also_keep(trials)
        # Optuna 5 has no Study.set_system_attr and exports no storage ids: hpsearch.storage.optuna_internals has them
        storage, sid = optuna_internals.study_storage(study), optuna_internals.study_id(study)
        listable = {t.number: dashboard_artifact_key(optuna_internals.trial_id(t), t.user_attrs[ATTR])
                    for t in complete if ARTIFACT_ID_RE.match(str(t.user_attrs[ATTR]))}
        if self._listed is None:
            try:
                attrs = storage.get_study_system_attrs(sid)
            except Exception as e:  # a storage hiccup: the next trial's pass catches up
                log.warning("checkpoint retention skipped: cannot read the study's attributes (%s: %s)",
                            type(e).__name__, e)
                return
            self._listed = {k: attrs[k] != DEREGISTERED for k in listable.values() if k in attrs}
        for t in trials:
            ckpt = t.user_attrs.get(ATTR)
            if not ckpt or not t.state.is_finished():
                continue
            key = listable.get(t.number)
            if key is None:  # never registered: a pruned or failed trial, or a foreign id
                if t.number not in keep:
                    self.remove(ckpt)
                continue
            listed = self._listed.get(key)
            if listed is False:
                continue  # removed by some worker already (a completed trial out of the best never comes back)
            if t.number in keep:
                if listed is None:
                    self._register(storage, sid, t, key, ckpt)
            else:
                self.remove(ckpt)  # the file first, then the listing: see _register
                self._set(storage, sid, key, DEREGISTERED)

    def _register(self, storage: BaseStorage, sid: int, trial: FrozenTrial, key: str, ckpt: str) -> None:
        meta = ArtifactMeta(artifact_id=ckpt, filename=f"trial-{trial.number}-checkpoint.pt",
                            mimetype=CHECKPOINT_MIMETYPE, encoding=None)
        if not self._set(storage, sid, key, json.dumps(dataclasses.asdict(meta))):
            return
        # Another worker may drop this trial from its best at the same time: it removes the file, then writes
        # null. If its null came before our entry, the file is gone by now, so look: whichever order the four
        # writes take, the last one left standing never lists a missing file.
        if not self.exists(ckpt):
            self._set(storage, sid, key, DEREGISTERED)

    def _set(self, storage: BaseStorage, sid: int, key: str, value: str) -> bool:
        try:
            storage.set_study_system_attr(sid, key, value)
        except Exception as e:  # never fail a trial over the dashboard's listing; the next pass retries
            log.warning("could not update the dashboard's listing %s: %s: %s", key, type(e).__name__, e)
            return False
        self._listed[key] = value != DEREGISTERED
        return True
