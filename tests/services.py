"""Real database services for the distributed tests: reachable ones are used, others skip (fail under CI)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
    "redis": "redis://127.0.0.1:6379/0",
}
PORTS = {"postgresql": 5432, "mysql": 3306, "redis": 6379}


def reachable(kind: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", PORTS[kind]), timeout=2):
            return True
    except OSError:
        return False


DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "redis": "redis", "grpc": "grpc"}


def unavailable(msg: str) -> None:
    """Skips outside CI; under CI=true a missing service or driver is a failure, never a silent skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " (CI must provide it)")
    pytest.skip(msg)


def need_driver(kind: str) -> None:
    try:
        __import__(DRIVERS[kind])
    except ImportError:
        unavailable(f"the {DRIVERS[kind]} package is not installed (pip install -e '.[dev]')")


def service_url(kind: str) -> str:
    """The service's URL, or skip (outside CI) / fail (under CI=true) when it is down."""
    if not reachable(kind):
        unavailable(f"{kind} is not reachable on 127.0.0.1:{PORTS[kind]}")
    need_driver(kind)
    return URLS[kind]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
