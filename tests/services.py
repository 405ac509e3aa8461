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


def service_url(kind: str) -> str:
    """The service's URL, or skip (outside CI) / fail (under CI=true) when it is down."""
    if not reachable(kind):
        msg = f"{kind} is not reachable on 127.0.0.1:{PORTS[kind]}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI must start it)")
        pytest.skip(msg)
    if kind == "postgresql":
        pytest.importorskip("psycopg")
    if kind == "mysql":
        pytest.importorskip("pymysql")
    if kind == "redis":
        pytest.importorskip("redis")
    return URLS[kind]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
