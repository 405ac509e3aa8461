"""Storage URLs: where a study lives, how to open it through Optuna, and how to print it safely.

Any SQLAlchemy URL Optuna's ``RDBStorage`` accepts works (``sqlite:///``, ``postgresql+psycopg://``,
``mysql+pymysql://``). The default is ``sqlite:///hpsearch.db`` in the working directory, overridden by
``$HPSEARCH_STORAGE`` and then by ``--storage``. Passwords are masked in everything printed.
"""

from __future__ import annotations

import os
import re

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url

from hpsearch.errors import SpecError, StorageError

DEFAULT_URL = "sqlite:///hpsearch.db"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@")


def resolve_url(url: str | None) -> str:
    return url or os.environ.get("HPSEARCH_STORAGE") or DEFAULT_URL


def mask_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db``; other text is returned unchanged."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def mask_secrets(text: str, url: str | None) -> str:
    """Masks the password of ``url`` wherever it appears in ``text`` (e.g. in a driver's error message)."""
    text = mask_url(text)
    m = _USERINFO.search(url or "")
    if m and m["pw"]:
        text = text.replace(m["pw"], "***")
    return text


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Opens the Optuna storage behind ``url``; raises SpecError for a malformed URL, StorageError if down."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise SpecError(f"storage URL {mask_url(url)!r} is not valid; expected e.g. sqlite:///hpsearch.db or "
                        "postgresql+psycopg://user:pass@host/db") from None
    engine_kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 60}  # seconds to wait on a locked database
    else:
        engine_kwargs |= {"pool_size": 2, "max_overflow": 2}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as e:
        raise StorageError(f"storage {mask_url(url)}: a database driver is missing ({e}); install "
                           "hpsearch[postgres] or hpsearch[mysql]") from None
    except Exception as e:  # sqlalchemy's OperationalError, driver errors, bad paths
        detail = mask_secrets(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, url)
        raise StorageError(f"cannot open storage {mask_url(url)}: {detail}") from None
