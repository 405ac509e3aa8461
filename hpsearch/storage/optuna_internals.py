"""Every use of Optuna's private API, in one room, behind named functions.

hpsearch needs a few things Optuna does not export: a study's storage and id, a trial's storage id, the
heartbeat mix-in (to wrap a storage without losing its heartbeat), the name of the storage method that
``optuna.storages.fail_stale_trials`` asks for stale trials (to record why they failed), and Optuna's ORM models
(to read 10,000 trials fast). Nothing else in hpsearch touches ``optuna.*._private`` modules or underscored
attributes; ``tests/storage/test_optuna_internals.py`` exercises each function here against a real study, so an Optuna
release that changes one fails that test by name rather than a trial somewhere else.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import json_to_distribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages._heartbeat import is_heartbeat_enabled as _is_heartbeat_enabled
from optuna.trial import FrozenTrial

__all__ = ["STALE_TRIAL_IDS", "BaseHeartbeat", "heartbeat_enabled", "rdb_backend", "read_rdb_trials",
           "study_id", "study_storage", "trial_id"]

# The storage method ``optuna.storages.fail_stale_trials`` calls for the ids of trials whose heartbeat stopped.
STALE_TRIAL_IDS = "_get_stale_trial_ids"


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object a study talks to (with Optuna's cache and hpsearch's retry wrapper in front)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of a study (not its name)."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (unique across studies; not ``trial.number``)."""
    return trial._trial_id


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether trials on ``storage`` beat (RDB storages opened with a heartbeat interval)."""
    return _is_heartbeat_enabled(storage)


def rdb_backend(storage: Any) -> RDBStorage | None:
    """The RDBStorage behind Optuna's trial cache (its private ``_backend``) and hpsearch's retry wrapper
    (``inner``), or None for other storages."""
    for _ in range(5):
        if isinstance(storage, RDBStorage):
            return storage
        storage = getattr(storage, "inner", None) or getattr(storage, "_backend", None)
    return None


def read_rdb_trials(rdb: RDBStorage, study_id: int) -> list[FrozenTrial]:
    """Every trial of the study, ordered by trial id, read with plain SELECTs over Optuna's tables (its private
    ORM models) and decoded as Optuna decodes them: Optuna's ORM loader builds one object per row (270,000 at
    10,000 trials x 20 eval points, ~10 s on the project's CPU); this reads the same rows in ~1 s."""
    from optuna.storages._rdb import models as m  # here, not at import: report.py falls back if it moved

    def local(d: datetime | None) -> datetime | None:  # stored as naive UTC, returned as naive local time
        return None if d is None else d.replace(tzinfo=UTC).astimezone().replace(tzinfo=None)

    def rows(model: Any, *cols: Any, order: Any) -> list:
        q = (sqlalchemy.select(model.trial_id, *cols).join(m.TrialModel, m.TrialModel.trial_id == model.trial_id)
             .where(m.TrialModel.study_id == study_id).order_by(order))
        return conn.execute(q).all()

    T = m.TrialModel
    with rdb.engine.connect() as conn:
        head = conn.execute(sqlalchemy.select(T.trial_id, T.number, T.state, T._datetime_start_utc,
                                              T._datetime_complete_utc)
                            .where(T.study_id == study_id).order_by(T.trial_id)).all()
        fields = {tid: {"values": {}, "params": {}, "distributions": {}, "user_attrs": {}, "system_attrs": {},
                        "intermediate_values": {}} for tid, *_ in head}
        for tid, objective, value, kind in rows(m.TrialValueModel, m.TrialValueModel.objective,
                                                m.TrialValueModel.value, m.TrialValueModel.value_type,
                                                order=m.TrialValueModel.trial_value_id):
            fields[tid]["values"][objective] = m.TrialValueModel.stored_repr_to_value(value, kind)
        dists: dict[str, Any] = {}  # distribution JSON -> distribution, parsed once
        P = m.TrialParamModel
        for tid, name, value, dist_json in rows(P, P.param_name, P.param_value, P.distribution_json, order=P.param_id):
            dist = dists.get(dist_json) or dists.setdefault(dist_json, json_to_distribution(dist_json))
            fields[tid]["params"][name] = dist.to_external_repr(value)
            fields[tid]["distributions"][name] = dist
        for key, model in (("user_attrs", m.TrialUserAttributeModel), ("system_attrs", m.TrialSystemAttributeModel)):
            for tid, k, value_json in rows(model, model.key, model.value_json,
                                           order=sqlalchemy.inspect(model).primary_key[0]):
                fields[tid][key][k] = json.loads(value_json)
        I = m.TrialIntermediateValueModel  # noqa: E741
        for tid, step, value, kind in rows(I, I.step, I.intermediate_value, I.intermediate_value_type,
                                           order=I.trial_intermediate_value_id):
            fields[tid]["intermediate_values"][step] = I.stored_repr_to_intermediate_value(value, kind)
    out = []
    for tid, number, state, start, complete in head:
        f = fields[tid]
        values = [f["values"][i] for i in sorted(f["values"])] or None
        out.append(FrozenTrial(number=number, state=state, value=None, values=values, datetime_start=local(start),
                               datetime_complete=local(complete), params=f["params"],
                               distributions=f["distributions"], user_attrs=f["user_attrs"],
                               system_attrs=f["system_attrs"], intermediate_values=f["intermediate_values"],
                               trial_id=tid))
    return out
