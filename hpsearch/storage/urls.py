"""Storage URLs: where a study lives, how to open it through Optuna, and how to print it safely.

====================================  ================================================================
URL                                   Optuna storage
====================================  ================================================================
``sqlite:///path.db`` (default)       ``RDBStorage``, WAL journal and a 60 s busy timeout
``postgresql+psycopg://u:p@h/db``     ``RDBStorage``, small pre-pinged pool, heartbeat
``mysql+pymysql://u:p@h/db``          ``RDBStorage``, small pre-pinged pool, heartbeat
``journal:///path/to/file.log``       ``JournalStorage(JournalFileBackend)`` (no heartbeat)
``redis://host:port/db``              ``JournalStorage(JournalRedisBackend)`` (no heartbeat)
``grpc://host:port``                  ``GrpcStorageProxy`` (to ``hpsearch storage serve``)
====================================  ================================================================

The default is ``sqlite:///hpsearch.db`` in the working directory, overridden by ``$HPSEARCH_STORAGE`` and
then by ``--storage``. Every storage is wrapped in :class:`~hpsearch.storage.retry.RetryingStorage`.
Passwords are masked in everything printed.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import urlsplit

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from hpsearch.errors import SpecError, StorageError
from hpsearch.storage.retry import RetryingStorage, is_transient

log = logging.getLogger("hpsearch")

DEFAULT_URL = "sqlite:///hpsearch.db"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
# a password passed as a query parameter, as libpq and SQLAlchemy accept: ...?password=secret&sslmode=...
_QUERY_PW = re.compile(r"(?P<key>[?&](?:password|passwd|pwd)=)(?P<pw>[^&#\s]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Heartbeat:
    """Optuna's heartbeat for RDB storages: a trial whose worker stopped beating for ``grace`` s is failed
    (by the next worker that starts a trial) and re-queued up to ``max_retry`` times with the same
    parameters. Defaults suit epochs of minutes."""

    interval: int = 60  # seconds between beats
    grace: int = 180  # seconds without a beat before a trial counts as dead
    max_retry: int = 1

    def __post_init__(self) -> None:
        if self.grace <= self.interval:  # a live trial between two beats would count as dead
            raise SpecError(f"--grace-period is {self.grace}, but must exceed --heartbeat-interval ({self.interval})")


DEFAULT_HEARTBEAT = Heartbeat()


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's re-queueing of a dead worker's trial, except that the copy does not inherit the dead trial's
    ``reason`` (the retry records its own when it does not complete)."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "reason"}
        super().__call__(study, trial)


def resolve_url(url: str | None) -> str:
    if url is not None and not url.strip():  # `--storage ""` (an unset shell variable) must not mean the default
        raise SpecError(f"storage URL is empty ({url!r}); expected e.g. {DEFAULT_URL}")
    return url or os.environ.get("HPSEARCH_STORAGE") or DEFAULT_URL


def mask_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db`` (and ``?password=secret`` →
    ``?password=***``); other text is returned unchanged."""
    return _QUERY_PW.sub(lambda m: f"{m['key']}***", _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url))


def mask_secrets(text: str, url: str | None) -> str:
    """Masks the password of ``url`` wherever it appears in ``text`` (e.g. in a driver's error message)."""
    text = mask_url(text)
    for pattern in (_USERINFO, _QUERY_PW):
        m = pattern.search(url or "")
        if m and m["pw"]:
            text = text.replace(m["pw"], "***")
    return text


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise SpecError(f"${name} is {text!r}, but must be a number of seconds ≥ 0")
    return value


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer: several local workers
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def _rdb(url: str, heartbeat: Heartbeat | None) -> optuna.storages.BaseStorage:
    try:
        parsed = make_url(url)
        parsed.get_dialect()  # an unknown scheme (foo://x) is the user's typo, not an unreachable server
    except sqlalchemy.exc.NoSuchModuleError:
        raise SpecError(f"storage URL {mask_url(url)!r} has an unknown scheme {url.split(':', 1)[0]!r}; expected "
                        "sqlite, postgresql+psycopg, mysql+pymysql, journal, redis or grpc") from None
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise SpecError(f"storage URL {mask_url(url)!r} is not valid; expected e.g. sqlite:///hpsearch.db, "
                        "postgresql+psycopg://user:pass@host/db, journal:///path.log, redis://host:6379/0 or "
                        "grpc://host:13000") from None
    sqlite = parsed.get_backend_name() == "sqlite"
    engine_kwargs: dict = {"pool_pre_ping": True}
    if sqlite:
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs |= {"pool_size": 1, "max_overflow": 2, "pool_recycle": 300}
    hb = {}
    if heartbeat is not None:
        hb = {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace,
              "heartbeat_stale_trial_callback": RetryStaleTrial(max_retry=heartbeat.max_retry)}
    rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **hb)
    if sqlite:
        sqlalchemy.event.listen(rdb.engine, "connect", _sqlite_pragmas)
        rdb.engine.dispose()  # connections made before the listener existed get the pragmas too
    return optuna.storages.get_storage(rdb)  # adds Optuna's trial cache in front


def _build(url: str, heartbeat: Heartbeat | None) -> optuna.storages.BaseStorage:
    from optuna.storages import journal

    if url.startswith("journal://"):
        path = url[len("journal://"):]
        if not path:
            raise SpecError("storage URL 'journal://' needs a file: journal:///path/to/study.log")
        return journal.JournalStorage(journal.JournalFileBackend(path))
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            urlsplit(url).port  # noqa: B018 (raises ValueError for a port that is not a number in 0-65535)
        except ValueError as e:
            raise SpecError(f"storage URL {mask_url(url)!r} is not valid: {e}") from None
        return journal.JournalStorage(journal.JournalRedisBackend(url))
    if url.startswith("grpc://"):
        host, _, port = url[len("grpc://"):].rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise SpecError(f"storage URL {mask_url(url)!r} is not valid; expected grpc://host:port")
        storage = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
        storage.get_all_studies()  # fail now, with a clear message, if the proxy is not there
        return storage
    return _rdb(url, heartbeat)


def serve_storage(url: str, host: str, port: int, stream: TextIO = sys.stderr) -> None:
    """``hpsearch storage serve``: Optuna's gRPC proxy in front of ``url`` (workers then use grpc://HOST:PORT)."""
    storage = open_storage(url)
    if host in ("0.0.0.0", "::"):
        print(f"warning: serving on all interfaces ({host}); anyone who can reach port {port} can change studies",
              file=stream, flush=True)
    print(f"serving {mask_url(url)} on grpc://{host}:{port}", file=stream, flush=True)
    optuna.storages.run_grpc_proxy_server(storage, host=host, port=port)


def open_storage(url: str, heartbeat: Heartbeat | None = DEFAULT_HEARTBEAT, retry_s: float | None = None
                 ) -> optuna.storages.BaseStorage:
    """Opens the Optuna storage behind ``url``; SpecError for a malformed URL, StorageError if unreachable.

    ``heartbeat`` applies to RDB storages; ``retry_s`` bounds how long a transient outage is ridden out by each
    storage call (default ``$HPSEARCH_STORAGE_RETRY_S``, else 300 s).
    """
    if retry_s is None:
        retry_s = _seconds("HPSEARCH_STORAGE_RETRY_S", 300.0)
    # A server that is restarting refuses or drops connections for a few seconds: retry those at start too,
    # for up to $HPSEARCH_CONNECT_RETRY_S seconds (default 30), then fail with one line.
    deadline = time.monotonic() + _seconds("HPSEARCH_CONNECT_RETRY_S", 30.0)
    delay = 0.5
    while True:
        try:
            with warnings.catch_warnings():  # Optuna marks heartbeat, journal-redis and gRPC "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                inner = _build(url, heartbeat)
            break
        except SpecError:
            raise
        except ImportError as e:
            raise StorageError(f"storage {mask_url(url)}: a driver is missing ({e}); install hpsearch[postgres], "
                               "hpsearch[mysql] or hpsearch[redis]") from None
        except Exception as e:  # sqlalchemy's OperationalError, driver errors, bad paths, refused connections
            if is_transient(e) and time.monotonic() + delay < deadline:
                log.warning("storage %s is not answering (%s); retrying in %.1f s", mask_url(url),
                            type(e).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            text = str(e).strip()
            detail = mask_secrets(text.splitlines()[0] if text else type(e).__name__, url)
            raise StorageError(f"cannot open storage {mask_url(url)}: {detail}") from None
    return RetryingStorage(inner, max_wait=retry_s)
