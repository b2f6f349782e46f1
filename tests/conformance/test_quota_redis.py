"""The conformance tests that count bytes, again with the quota ledger in Redis.

Switching ledgers (``quota_redis_url``) must change nothing a user sees, so every suite
test that sets a quota, and every versions test (prior versions are counted), runs here
on the memory, local and S3 (moto) backends built with ``quota_redis_url`` pointing at
the session's ``redis-server``, each test in a namespace of its own. The other suite
modules never touch the ledger and run once, in test_suite.py.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, MemoryStorageBackend, StorageBackend
from file_storage.testing import suite
from file_storage.testing.suite import fixtures
from tests.quota_redis.server import RedisServer
from tests.s3util import s3_backends


def _counts_bytes(test: object) -> bool:
    inner = getattr(getattr(test, "hypothesis", None), "inner_test", test)
    module = getattr(inner, "__module__", "")
    return module.endswith(".versions") or "set_quota" in inspect.getsource(inner)  # type: ignore[arg-type]


globals().update(
    {
        name: getattr(suite, name)
        for name in suite.__all__
        if name in fixtures.__all__ or _counts_bytes(getattr(suite, name))
    }
)


@pytest.fixture(
    params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)],
)
async def backend(
    request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[StorageBackend]:
    """The backend of the suite, its quotas kept in Redis (ids as in tests/conftest.py, so
    that ``backend_lacks`` of tests/conformance/conftest.py applies)."""
    shared = {
        "quota_redis_url": redis_server.url,
        "quota_redis_namespace": f"conformance:{uuid.uuid4().hex[:12]}",
    }
    if request.param == "s3":
        endpoint: str = request.getfixturevalue("moto_endpoint")
        bucket: str = request.getfixturevalue("s3_bucket")
        async with s3_backends(endpoint, bucket) as make:
            yield make(prefix="storage", region="us-east-1", **shared)
        return
    made: StorageBackend = (
        MemoryStorageBackend(**shared)  # type: ignore[arg-type]
        if request.param == "memory"
        else LocalStorageBackend(tmp_path / "storage", **shared)  # type: ignore[arg-type]
    )
    async with made:
        yield made
