"""A real ``redis-server`` for the shared quota ledger's tests (``make test`` installs it);
the session's server, ``redis_server``, is in tests/conftest.py (the conformance suite runs
on it too)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.quota_redis.server import REDIS_SERVER, RedisServer


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test alone, which it may stop and start again."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make test installs it: apt redis-server)")
    server = RedisServer(tmp_path / "redis-data")
    server.workdir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def namespace() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"
