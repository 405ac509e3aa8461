"""hpsearch.storage.urls on real storages: URL resolution, password masking, each URL scheme opened for real, bad
URLs as SpecErrors, unreachable servers as one StorageError line, and the heartbeat's own check."""

from __future__ import annotations

import optuna
import pytest
from conftest import run_cli
from services import service_url

from hpsearch.errors import SpecError, StorageError
from hpsearch.storage import optuna_internals as internals
from hpsearch.storage.urls import DEFAULT_URL, Heartbeat, mask_secrets, mask_url, open_storage, resolve_url


def test_resolve_url_order_and_empty(monkeypatch):
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    assert resolve_url(None) == DEFAULT_URL
    monkeypatch.setenv("HPSEARCH_STORAGE", "sqlite:///env.db")
    assert resolve_url(None) == "sqlite:///env.db"
    assert resolve_url("sqlite:///given.db") == "sqlite:///given.db"
    with pytest.raises(SpecError, match="storage URL is empty"):
        resolve_url("  ")


def test_masking():
    url = "postgresql+psycopg://alice:s3cr3t@db:5432/hp"
    assert mask_url(url) == "postgresql+psycopg://alice:***@db:5432/hp"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    assert mask_secrets("FATAL: password s3cr3t for alice@db refused", url) == \
        "FATAL: password *** for alice@db refused", "the password is masked even outside a URL"
    in_query = "postgresql+psycopg://alice@db/hp?sslmode=require&password=Qu3ry&application_name=x"
    assert mask_url(in_query) == "postgresql+psycopg://alice@db/hp?sslmode=require&password=***&application_name=x"
    assert mask_secrets("connection failed: password Qu3ry rejected", in_query) == \
        "connection failed: password *** rejected"


@pytest.mark.slow
def test_a_password_in_the_query_string_is_masked_in_what_the_cli_prints(tmp_path):
    """libpq and SQLAlchemy also take the password as ?password=: masked in the retry warnings and the error
    line of a real failed connection (port 1: refused), which print the URL."""
    url = "postgresql+psycopg://postgres@127.0.0.1:1/test?password=Qu3ryPW0rd"
    r = run_cli("status", "--storage", url, "--study", "x", cwd=tmp_path, env={"HPSEARCH_CONNECT_RETRY_S": "1"})
    assert r.returncode == 1 and "cannot open storage" in r.stderr, r.stderr
    assert "Qu3ryPW0rd" not in r.stdout + r.stderr and "test?password=***" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql", "mysql", "redis"])
def test_every_scheme_opens_a_working_storage(tmp_path, kind):
    url = {"sqlite": f"sqlite:///{tmp_path / 'a.db'}", "journal": f"journal:///{tmp_path / 'a.log'}"}.get(kind)
    url = url or service_url(kind)
    storage = open_storage(url, heartbeat=Heartbeat(1, 2))
    name = f"storage-test-{tmp_path.name}"[:60]
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    try:
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        again = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None))
        assert [t.value for t in again.trials] == [t.value for t in study.trials]
        assert internals.heartbeat_enabled(storage) == (kind in ("sqlite", "postgresql", "mysql")), \
            "RDB storages beat; journal ones cannot"
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=None))


@pytest.mark.parametrize("url, message", [
    ("foo://x", "has an unknown scheme 'foo'"),
    ("journal://", "needs a file"),
    ("grpc://hostonly", "expected grpc://host:port"),
    ("redis://127.0.0.1:99999/0", "is not valid"),
])
def test_malformed_urls_are_spec_errors(url, message):
    with pytest.raises(SpecError, match=message):
        open_storage(url)


def test_an_unreachable_server_is_one_line_without_the_password(monkeypatch):
    monkeypatch.setenv("HPSEARCH_CONNECT_RETRY_S", "0")
    with pytest.raises(StorageError) as e:
        open_storage("postgresql+psycopg://alice:s3cr3t@127.0.0.1:1/hp")
    text = str(e.value)
    assert text.startswith("cannot open storage postgresql+psycopg://alice:***@127.0.0.1:1/hp: ")
    assert "s3cr3t" not in text and "\n" not in text


def test_heartbeat_grace_must_exceed_the_interval():
    with pytest.raises(SpecError, match=r"--grace-period is 5, but must exceed --heartbeat-interval \(10\)"):
        Heartbeat(10, 5)
    assert Heartbeat(10, 11).grace == 11
