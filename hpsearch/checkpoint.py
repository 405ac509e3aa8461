"""Trial checkpoints in Optuna's artifact store: save after every epoch, find a predecessor's, keep few.

A checkpoint is ``torch.save`` of plain tensors and values (see :func:`hpsearch.train.fit`); loading uses
``torch.load(weights_only=True)``, which refuses pickled objects, so a planted file cannot run code.
The newest checkpoint's artifact id is recorded on the trial (user attribute ``checkpoint``).

Retention: a running trial keeps only its newest checkpoint; a pruned or failed-for-good trial keeps none;
completed trials keep theirs only while they rank among the best ``keep_best``. So a study's disk use is
bounded by (running workers + keep_best) checkpoints, whatever its length.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from pathlib import Path

import optuna
import torch
from optuna.artifacts import Boto3ArtifactStore, FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import HpsearchError, SpecError

log = logging.getLogger("hpsearch")
ATTR = "checkpoint"  # trial user attribute: artifact id of the newest checkpoint
DEFAULT_DIR = "hpsearch-artifacts"
# Optuna names artifacts by uuid4; an id read from a (shared, writable) storage that is not a plain name, such as
# '../x' or '/etc/x', could reach outside the artifact folder or bucket prefix: refused before any file access.
ARTIFACT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def check_artifact_id(artifact_id: object) -> str:
    if not isinstance(artifact_id, str) or not ARTIFACT_ID_RE.match(artifact_id):
        raise HpsearchError(f"artifact id {str(artifact_id)[:100]!r} is not valid; an id is a plain name of letters, "
                            "digits, _ and - (as Optuna's uuid4 ids are)")
    return artifact_id


def open_artifact_store(location: str | None):
    """``DIR`` → FileSystemArtifactStore (a path every worker can see); ``s3://bucket/prefix`` → Boto3."""
    location = location or os.environ.get("HPSEARCH_ARTIFACTS") or DEFAULT_DIR
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        if not bucket:
            raise SpecError(f"artifact location {location!r} names no bucket; use s3://bucket/prefix")
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise HpsearchError("s3:// artifact locations need boto3: pip install boto3") from None
        return Boto3ArtifactStore(bucket) if not prefix else _PrefixedStore(Boto3ArtifactStore(bucket), prefix)
    path = Path(location).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HpsearchError(f"cannot create the artifact folder {path}: {e.strerror}") from None
    return FileSystemArtifactStore(path)


class _PrefixedStore:
    def __init__(self, inner, prefix: str):
        self.inner, self.prefix = inner, prefix.strip("/") + "/"

    def open_reader(self, artifact_id: str):
        return self.inner.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body) -> None:
        self.inner.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.inner.remove(self.prefix + artifact_id)


class Checkpoints:
    """One worker's view of the checkpoint store: save, load, and apply the retention rule."""

    def __init__(self, store, keep_best: int = 3):
        self.store = store
        self.keep_best = keep_best
        self._removed: set[str] = set()  # finished trials' attributes cannot change: remember removals here

    def save(self, trial: optuna.Trial, state: dict) -> str:
        """Uploads ``state`` as this trial's newest checkpoint and removes the one it replaces."""
        old = trial.user_attrs.get(ATTR)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial-{trial.number}-epoch-{state['epoch']}.pt"
            torch.save(state, path)
            artifact_id = optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(path),
                                                           study_or_trial=trial)
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

    def apply_retention(self, study: optuna.Study) -> None:
        """Removes every checkpoint the retention rule (module docstring) no longer allows."""
        trials = study.get_trials(deepcopy=False)
        pending_retry = {n for t in trials if not t.state.is_finished()
                         for n in t.system_attrs.get("retry_history", [])}
        complete = sorted((t for t in trials if t.state == TrialState.COMPLETE and ATTR in t.user_attrs),
                          key=lambda t: t.value, reverse=True)
        keep = {t.number for t in complete[: self.keep_best]} | pending_retry
        for t in trials:
            ckpt = t.user_attrs.get(ATTR)
            if ckpt and t.state.is_finished() and t.number not in keep:
                self.remove(ckpt)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that were re-queued (they do not count as finished)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def predecessor_checkpoint(study: optuna.Study, trial: optuna.Trial) -> tuple[int, str] | None:
    """For a retried trial: (number, artifact id) of the newest checkpoint among the trials it retries."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    history = by_number[trial.number].system_attrs.get("retry_history", [])
    if not history:
        return None
    for number in reversed(history):
        t = by_number.get(number)
        if t is not None and t.user_attrs.get(ATTR):
            return number, t.user_attrs[ATTR]
    return None


def disk_usage(location: str | None) -> int | None:
    """Bytes used by a filesystem artifact store (None for object stores)."""
    location = location or os.environ.get("HPSEARCH_ARTIFACTS") or DEFAULT_DIR
    if location.startswith("s3://"):
        return None
    path = Path(location).expanduser()
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
