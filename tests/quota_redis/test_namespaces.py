"""The default namespace names the store, not its spelling: processes that reach one
folder through a symlink or "..", or one S3 endpoint spelled with a trailing "/" or in
upper case, share one ledger, so a cap set by one is enforced by the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, StorageBackend, StorageQuotaExceededError
from tests.quota_redis.server import RedisServer
from tests.s3util import s3_backends


async def one_ledger(capped: StorageBackend, other: StorageBackend) -> None:
    """``capped`` caps ``u/`` at 100 bytes and holds 60 of them: ``other`` is held to it."""
    capped.set_quota("u", 100)
    await capped.save("u/a.bin", b"a" * 60)
    with pytest.raises(StorageQuotaExceededError):
        await other.save("u/b.bin", b"b" * 60)
    await other.save("u/b.bin", b"b" * 40)
    assert (await capped.get_usage("u")).used == 100


@pytest.mark.parametrize("spelling", ["symlink", "dotdot"])
async def test_one_folder_spelled_two_ways_has_one_ledger(
    tmp_path: Path, redis_server: RedisServer, spelling: str
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    other_root = tmp_path / ("link" if spelling == "symlink" else "data/../data")
    a = LocalStorageBackend(tmp_path / "data", quota_redis_url=redis_server.url)
    b = LocalStorageBackend(other_root, quota_redis_url=redis_server.url)
    try:
        await one_ledger(a, b)
    finally:
        await a.aclose()
        await b.aclose()


@pytest.mark.s3
async def test_one_s3_endpoint_spelled_two_ways_has_one_ledger(
    moto_endpoint: str, s3_bucket: str, redis_server: RedisServer
) -> None:
    async with s3_backends(moto_endpoint, s3_bucket, quota_redis_url=redis_server.url) as make:
        shouting = moto_endpoint.replace("http://", "HTTP://") + "/"
        await one_ledger(make(), make(endpoint_url=shouting))
