"""A real ``redis-server`` for the shared quota ledger's tests (``make test`` installs it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.quota_redis.server import REDIS_SERVER, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the session; tests share it through namespaces of their own."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make test installs it: apt redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
