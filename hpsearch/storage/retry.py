"""A storage wrapper that rides out transient database outages (a server restart, a dropped connection).

Optuna's ``RDBStorage`` raises as soon as one statement fails, which would fail the running trial and lose
its report. :class:`RetryingStorage` delegates every storage and heartbeat call to the wrapped storage and
retries the ones that failed for a connection reason, with exponential back-off, for up to ``max_wait``
seconds. Other errors (a finished trial updated twice, a bad value) pass through at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage

from hpsearch.storage.optuna_internals import STALE_TRIAL_IDS, BaseHeartbeat

log = logging.getLogger("hpsearch")

_TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError,
              ConnectionError, TimeoutError)


def is_transient(e: BaseException) -> bool:
    """True for errors that a reconnect can cure: lost connections, refused connections, restarts."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, _TRANSIENT):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
        if type(e).__module__.startswith("redis") and type(e).__name__ in ("ConnectionError", "TimeoutError",
                                                                          "BusyLoadingError"):
            return True
        e = e.__cause__ or e.__context__
    return False


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """Delegates to ``inner``; retries transient failures with back-off (0.5 s doubling to 10 s)."""

    def __init__(self, inner: BaseStorage, max_wait: float = 300.0):
        self._inner = inner
        self._max_wait = max_wait

    @property
    def inner(self) -> BaseStorage:
        return self._inner

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        delay, waited, failed = 0.5, 0.0, False
        while True:
            try:
                return getattr(self._inner, name)(*args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if failed and name == "set_trial_state_values":
                    return True  # the attempt that lost its connection had committed
                raise
            except Exception as e:
                if not is_transient(e) or waited >= self._max_wait:
                    raise
                failed = True
                log.warning("storage: %s failed (%s); retrying in %.1f s", name, type(e).__name__, delay)
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 10.0)

    def __getattr__(self, name: str) -> Any:  # anything not part of the storage API (e.g. remove_session)
        return getattr(self._inner, name)



def _delegate(name: str):
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


for _cls in (BaseStorage, BaseHeartbeat):
    for _name, _value in vars(_cls).items():
        if callable(_value) and not _name.startswith("__"):
            setattr(RetryingStorage, _name, _delegate(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def _no_heartbeat(name: str):
    delegate = getattr(RetryingStorage, name)

    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return delegate(self, *args, **kwargs) if isinstance(self._inner, BaseHeartbeat) else None

    method.__name__ = name
    return method


def _record_heartbeat(self: RetryingStorage, trial_id: int) -> None:
    """Optuna beats from a background thread, where an exception would print a traceback: a beat lost to an
    outage is logged instead (the trial's own storage calls meet the outage and fail it clearly)."""
    try:
        self._call("record_heartbeat", trial_id)
    except Exception as e:
        log.warning("storage: heartbeat of trial id %d not recorded (%s)", trial_id, type(e).__name__)


RetryingStorage.record_heartbeat = _record_heartbeat

LOST_WORKER = "worker lost: no heartbeat within the grace period (killed or cut off); failed, re-queued if retries remain"


def _stale_trial_ids_with_reason(self: RetryingStorage, study_id: int) -> list[int]:
    """Optuna fails these trials next (``fail_stale_trials``) and a FAIL trial takes no more attributes: record
    why on each one now, while it is still RUNNING, so that every failed trial carries a ``reason``."""
    ids = self._call(STALE_TRIAL_IDS, study_id)
    for trial_id in ids:
        # UpdateFinishedTrialError: another worker failed it first (and recorded why), or it finished after all
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self._call("set_trial_user_attr", trial_id, "reason", LOST_WORKER)
    return ids


setattr(RetryingStorage, STALE_TRIAL_IDS, _stale_trial_ids_with_reason)

# Journal storages have no heartbeat: report "disabled" instead of failing on the missing methods.
for _name in ("get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "get_failed_trial_callback"):
    setattr(RetryingStorage, _name, _no_heartbeat(_name))
