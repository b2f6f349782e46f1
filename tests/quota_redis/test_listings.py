"""The Redis ledger's listings: learned once, kept across restarts, and exact under the
changes made while one runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
)
from file_storage.testing.suite.quota import paused_save
from tests.quota_redis.ledger import DeleteGated, local, pause_listing, pause_listing_after
from tests.quota_redis.server import RedisServer


async def test_versions_kept_or_purged_while_a_listing_runs_win_over_it(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await a.set_versioning(True)
        for key, data in (("k", b"1" * 10), ("k", b"2" * 20), ("m", b"3" * 5), ("m", b"4" * 6)):
            await a.save(key, data)
        assert (await b.get_usage()).used == 41
        listed, go = pause_listing(a)
        refresh = asyncio.create_task(a.refresh_usage())
        await listed.wait()  # it saw k (20, and 10 kept) and m (6, and 5 kept)
        await b.save("k", b"5" * 30)  # keeps the 20 bytes the listing saw as the latest
        assert await b.purge_versions("m", keep=1) == 1  # the 5 bytes the listing saw
        go.set()
        await refresh
        assert (await b.get_usage()).used == 10 + 20 + 30 + 6
        await b.refresh_usage()
        assert (await a.get_usage()).used == 66


async def test_a_listing_cancelled_midway_lets_the_next_user_list_at_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # a client gone during the first upload under a quota (ASGI cancels its request)
    # left the listing's lock in Redis: every writer of the quota waited out the lease
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace)
    async with a, b:
        await b.save("k", b"x" * 10)
        listed, _ = pause_listing(a)
        first = asyncio.create_task(a.save("j", b"j"))
        await listed.wait()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # bounded well below the 60 s lease the lock used to be held for
        await asyncio.wait_for(b.save("m", b"m" * 5), timeout=30)
        assert (await b.get_usage()).used == 15


async def test_a_delete_during_the_first_listing_keeps_the_object_counted(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with LocalStorageBackend(tmp_path) as plain:
        await plain.set_versioning(True)
        await plain.save("k", b"1" * 10)
        await plain.save("k", b"2" * 20)
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace)
    async with a, b:
        listed, go = pause_listing(a)
        usage = asyncio.create_task(a.get_usage())  # the first use: one listing
        await listed.wait()
        await b.delete("k")  # the latest (20 bytes) becomes a prior version
        go.set()
        assert (await usage).used == 30
        await b.refresh_usage()
        assert (await a.get_usage()).used == 30


async def test_a_quota_marked_to_be_listed_again_during_a_listing_is_listed_once_more(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # a listing passed a key, then that key changed behind the ledger and the quota was
    # marked to be listed again (a lease that ran out, a miss reported): the listing that
    # ends after it must not be trusted, or the change is missed for good
    from file_storage._quota.redis import scripts as lua

    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a:
        await a.save("a1", b"x" * 10)
        ledger = a._quotas
        listed, go = pause_listing(a)
        refresh = asyncio.create_task(a.refresh_usage())
        await listed.wait()
        (tmp_path / "behind").write_bytes(b"y" * 50)  # stored behind the listing's back
        await ledger._client.run(lua.INVALIDATE, [ledger.ns, "behind"])
        go.set()
        await refresh
        assert (await a.get_usage()).used == 60  # listed once more, not 10


async def test_refresh_usage_sees_bytes_written_behind_the_ledger(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=1000) as a:
        await a.save("a", b"x" * 100)
        (tmp_path / "foreign").write_bytes(b"y" * 300)
        assert (await a.get_usage()).used == 100
        await a.refresh_usage()
        assert (await a.get_usage()).used == 400


async def test_usage_survives_a_process_restart_without_listing(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=1000) as a:
        await a.save("a", b"x" * 100)
    listed: list[str] = []
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)

    async def spy(prefix: str) -> AsyncIterator[object]:
        listed.append(prefix)
        if False:
            yield None

    b._quotas._scan = spy  # type: ignore[assignment]
    async with b:
        await b.save("b", b"x" * 100)
        assert (await b.get_usage()).used == 200
    assert listed == []


async def test_get_usage_without_a_quota_lists(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace) as a:
        await a.save("d/a", b"x" * 10)
        usage = await a.get_usage("d")
        assert (usage.used, usage.limit) == (10, None)


async def test_a_quota_set_by_another_process_during_a_write_counts_it(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace)
    b = local(tmp_path, redis_server, namespace)
    async with a, b:
        write, gate = await paused_save(a, "k", b"x" * 10, b"y" * 5)  # no quota covers it
        b.set_quota("", 100)
        assert (await b.get_usage()).used == 0  # listed before the write landed
        gate.set()
        await write
        assert (await b.get_usage()).used == 15
        assert (await a.get_usage()).used == 15


async def test_a_listing_within_a_versioned_delete_counts_the_object_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # a listing is no snapshot: it saw k as the latest object, then (the delete done in
    # the store meanwhile) as a prior version too, and ended before the delete was
    # recorded, which then kept the 20 bytes the listing had counted twice (57 for 37)
    async with LocalStorageBackend(tmp_path) as plain:
        await plain.set_versioning(True)
        for key, data in (("k", b"1" * 10), ("k", b"2" * 20), ("m", b"3" * 7)):
            await plain.save(key, data)
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = DeleteGated(tmp_path, quota_redis_url=redis_server.url, quota_redis_namespace=namespace)
    async with a, b:
        assert (await a.get_usage()).used == 37
        passed, resume = pause_listing_after(a, "k")
        refresh = asyncio.create_task(a.refresh_usage())
        await passed.wait()  # it listed k as the latest object
        delete = asyncio.create_task(b.delete("k"))
        await b.deleted.wait()  # the store keeps it as a prior version; not recorded yet
        resume.set()
        await refresh  # ...which the listing then found too
        b.gate.set()
        await delete
        assert (await a.get_usage()).used == 37
        await a.refresh_usage()
        assert (await a.get_usage()).used == 37
