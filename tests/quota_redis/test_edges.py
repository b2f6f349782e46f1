"""The Redis ledger's scripts at their edges: sizes, limits, keys, copies onto themselves.

Each test drives the public API with an edge input and checks what a user sees: the
ledger's usage equals what a fresh listing finds (and, unversioned, the bytes stored), no
quota is passed, and a refused write raises the typed error. A script that fails in Redis
half-way fails the test too (see ``_no_failed_redis_scripts`` in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, ObjectInfo, StorageQuotaExceededError
from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer


async def counted(
    backend: LocalStorageBackend, prefix: str = "", *, versioned: bool = False
) -> int:
    """The ledger's usage under ``prefix``, checked against a fresh listing of the store."""
    used = (await backend.get_usage(prefix)).used
    await backend.refresh_usage(prefix)
    assert (await backend.get_usage(prefix)).used == used, "the ledger drifted from the store"
    if not versioned:
        assert used == await backend.get_total_size(prefix)
    return used


# -- sizes and limits ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 99, 100])
async def test_a_save_up_to_exactly_the_limit_fits_and_one_byte_more_does_not(
    tmp_path: Path, redis_server: RedisServer, namespace: str, size: int
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=100) as backend:
        await backend.save("a", b"x" * size)
        await backend.save("b", b"y" * (100 - size))
        with pytest.raises(StorageQuotaExceededError) as caught:
            await backend.save("c", b"z")
        assert (caught.value.used, caught.value.limit) == (100, 100)
        assert await counted(backend) == 100


async def test_a_limit_of_zero_takes_empty_objects_only(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path / "store", redis_server, namespace, max_size_bytes=0) as backend:
        await backend.save("empty", b"")
        await backend.save("empty", b"")  # an overwrite that needs nothing more
        with pytest.raises(StorageQuotaExceededError):
            await backend.save("one", b"x")
        source = tmp_path / "empty-upload"
        source.write_bytes(b"")
        await backend.upload_file(source, "uploaded")
        await backend.copy("empty", "copied")
        await backend.move("copied", "moved")
        assert await counted(backend) == 0
        assert sorted(await backend.list_files()) == ["empty", "moved", "uploaded"]


@pytest.mark.parametrize(
    "limit", [2**53 - 1, 2**53, 2**53 + 1, 10**17, 2**63 - 1, 2**63, 2**64, 10**30]
)
async def test_a_huge_limit_is_kept_exactly_and_writes_under_it_are_counted(
    tmp_path: Path, redis_server: RedisServer, namespace: str, limit: int
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=limit) as backend:
        await backend.save("a", b"x" * 10)
        await backend.save("a", b"x" * 3)
        await backend.copy("a", "b")
        await backend.delete("a")
        usage = await backend.get_usage()
        assert (usage.used, usage.limit) == (3, limit)
        assert await counted(backend) == 3


@pytest.mark.parametrize("size", [0, 1, 5])
@pytest.mark.parametrize("old", [0, 1, 5])
async def test_an_overwrite_of_any_size_onto_any_size_is_counted_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str, size: int, old: int
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=10) as backend:
        await backend.save("k", b"x" * old)
        await backend.save("k", b"y" * size)
        await backend.save("other", b"z" * (10 - size))  # the rest fits exactly
        assert await counted(backend) == 10


class HugeLocal(LocalStorageBackend):
    """A store whose listing finds one more object of ``huge`` bytes (a bucket of petabytes:
    no test writes so many bytes, the listing is what tells the ledger)."""

    huge = 0

    async def _usage_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in super()._usage_scan(prefix):
            yield info
        if self.huge and "big/".startswith(prefix):
            yield ObjectInfo("big/object", self.huge, datetime.now(UTC))


@pytest.mark.parametrize("huge", [2**53 - 10, 10**16, 10**17 - 1, 10**17, 2**60, 2**62])
async def test_a_listing_of_a_huge_store_is_counted_exactly_and_writes_go_on(
    tmp_path: Path, redis_server: RedisServer, namespace: str, huge: int
) -> None:
    backend = HugeLocal(
        tmp_path,
        max_size_bytes=2**63 - 1,
        quota_redis_url=redis_server.url,
        quota_redis_namespace=namespace,
    )
    backend.huge = huge
    async with backend:
        await backend.save("a", b"x" * 7)
        await backend.save("a", b"x" * 2)
        await backend.delete("a")
        await backend.save("b", b"y" * 3)
        usage = await backend.get_usage()
        assert usage.used == huge + 3
