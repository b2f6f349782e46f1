"""The Redis ledger on a store keeping prior versions: every process counts them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    ObjectInfo,
    StorageQuotaExceededError,
)
from file_storage._quota.redis.wire import RedisTimeout
from tests.quota_redis.ledger import gated_pair, local, run_out_leases
from tests.quota_redis.server import RedisServer


async def test_a_late_commit_in_a_versioned_store_is_kept_and_counted(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a, b = gated_pair(tmp_path, redis_server, namespace, "n", before=True)
    async with a, b:
        await a.set_versioning(True)
        first = asyncio.create_task(a.save("n", b"x" * 600))
        await a.landed.wait()
        await run_out_leases(redis_server, namespace)  # the writer stalled past its lease
        await b.save("other", b"y" * 500)
        a.gate.set()
        await first  # deleting it would only make it a prior version: kept, counted
        assert await b.list_files() == ["n", "other"]
        assert (await b.get_usage()).used == 1100


async def test_an_overwrite_in_a_versioned_store_keeps_its_bytes_for_every_process(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=250)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=250)
    async with a, b:
        await a.set_versioning(True)  # b learns it through Redis, not by asking the store
        await a.save("k", b"x" * 100)
        await b.save("k", b"y" * 100)  # the 100 bytes of x stay stored as a prior version
        assert (await a.get_usage()).used == 200
        with pytest.raises(StorageQuotaExceededError) as info:
            await a.save("k", b"z" * 100)  # an overwrite frees nothing while versioned
        assert (info.value.used, info.value.requested) == (200, 100)
        await b.delete("k")  # a delete keeps the latest as a prior version too
        assert (await a.get_usage()).used == 200
        assert len(await a.list_versions("k")) == 2


async def test_a_purge_in_one_process_gives_the_bytes_back_to_the_others(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace)
    b = local(tmp_path, redis_server, namespace)
    async with a, b:
        a.set_quota("docs", 1000)
        await a.set_versioning(True)
        for size in (10, 20, 30):
            await a.save("docs/k", b"x" * size)
        await a.save("docs/other", b"o" * 5)
        assert (await b.get_usage("docs")).used == 65
        assert await b.purge_versions("docs/k", keep=2) == 1  # the 10 bytes
        assert (await a.get_usage("docs")).used == 55
        await b.purge_versions("docs/k", keep=0)  # the key and its history
        assert (await a.get_usage("docs")).used == 5
        await a.refresh_usage("docs")  # a listing agrees with what was counted
        assert (await b.get_usage("docs")).used == 5


async def test_the_first_listing_counts_every_version_and_a_restart_keeps_it(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # versions kept before the ledger was in Redis (the in-process ledger, or no quota)
    async with LocalStorageBackend(tmp_path) as plain:
        await plain.set_versioning(True)
        for size in (40, 30, 20):
            await plain.save("a/k", b"x" * size)
        await plain.delete("a/k")  # no latest version left: 90 bytes of prior versions
        await plain.save("a/j", b"j" * 7)
    async with local(tmp_path, redis_server, namespace, max_size_bytes=100) as first:
        assert (await first.get_usage()).used == 97  # one listing: objects and versions
        with pytest.raises(StorageQuotaExceededError):
            await first.save("a/j", b"j" * 8)  # versioned: the 7 bytes stay stored
    async with local(tmp_path, redis_server, namespace) as second:  # a later process
        assert (await second.get_usage()).used == 97  # from Redis, without a listing
        await second.save("a/j", b"j" * 3)  # learned through Redis: j's 7 bytes are kept
        assert (await second.get_usage()).used == 100
        await second.purge_versions("a/k", keep=0)
        await second.refresh_usage()
        assert (await second.get_usage()).used == 10


async def test_versioning_set_while_redis_did_not_answer_reaches_it_with_the_next_step(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await a.save("k", b"x" * 100)
        assert (await b.get_usage()).used == 100
        client = a._quotas._client  # type: ignore[attr-defined]
        real_call = client.call

        async def unanswered(*args: object) -> object:
            monkeypatch.setattr(client, "call", real_call)
            raise RedisTimeout("TimeoutError")

        monkeypatch.setattr(client, "call", unanswered)
        await a.set_versioning(True)  # the store keeps versions; Redis did not hear it
        await a.save("other", b"o")  # a's next ledger step tells it first
        await b.save("k", b"y" * 100)  # so b keeps x's 100 bytes counted
        assert (await b.get_usage()).used == 201
        await b.refresh_usage()
        assert (await a.get_usage()).used == 201


@pytest.mark.parametrize("lister", ["same", "other"])
@pytest.mark.parametrize("old", [0, 10])
async def test_a_listing_between_a_versioned_write_landing_and_its_commit(
    tmp_path: Path, redis_server: RedisServer, namespace: str, old: int, lister: str
) -> None:
    a, b = gated_pair(tmp_path, redis_server, namespace, "n")
    async with a, b:
        await a.set_versioning(True)
        if old:
            await b.save("n", b"o" * old)
        assert (await a.get_usage()).used == old
        write = asyncio.create_task(a.save("n", b"n" * 56))
        await a.landed.wait()  # stored, not yet committed
        # lists the new object (and the old one as a version), in this process or another
        await (a if lister == "same" else b).refresh_usage()
        a.gate.set()
        await write
        assert (await b.get_usage()).used == 56 + old
        await b.refresh_usage()
        assert (await a.get_usage()).used == 56 + old


async def test_versioning_suspended_by_another_process_counts_the_null_version_replaced(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        assert (await a.get_usage()).used == 0  # a learned: never versioned
        await b.set_versioning(True)
        await b.save("n", b"x" * 10)  # a version of its own: kept from now on
        await b.set_versioning(False)  # suspended, for every process
        await a.save("n", b"y" * 7)
        await a.save("n", b"z" * 5)  # replaces the "null" version
        assert (await a.get_usage()).used == (await b.get_usage()).used == 15
        await b.refresh_usage()
        assert (await a.get_usage()).used == 15


async def test_a_delete_while_another_process_begins_a_listing_is_counted_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await a.set_versioning(True)
        await a.save("n", b"x" * 17)
        begun, go = asyncio.Event(), asyncio.Event()
        real = b._usage_scan

        async def late(prefix: str) -> AsyncIterator[ObjectInfo]:
            begun.set()  # the listing has begun in Redis; the store is read after the delete
            await go.wait()
            async for info in real(prefix):
                yield info

        b._usage_scan = late  # type: ignore[method-assign]
        listing = asyncio.create_task(b.refresh_usage())
        await begun.wait()
        await a.delete("n")  # kept as a prior version, which the listing will see too
        go.set()
        await listing
        assert (await a.get_usage()).used == 17
        await a.refresh_usage()
        assert (await b.get_usage()).used == 17


@pytest.mark.parametrize("before", [True, False], ids=["before-landing", "after-landing"])
@pytest.mark.parametrize("enable", [True, False], ids=["turned-on", "suspended"])
async def test_versioning_switched_by_another_process_during_its_writes_counts_exactly(
    tmp_path: Path, redis_server: RedisServer, namespace: str, before: bool, enable: bool
) -> None:
    # b overwrites k while a switches versioning; b's next write and delete follow the
    # new state: whatever the store did, the usage is what a listing finds
    b, a = gated_pair(tmp_path, redis_server, namespace, "k", before=before)
    b.gated = ""
    async with a, b:
        if not enable:
            await a.set_versioning(True)
        await b.save("k", b"1" * 10)
        await b.save("m", b"2" * 7)
        b.gated = "k"
        write = asyncio.create_task(b.save("k", b"3" * 20))
        await b.landed.wait()
        await a.set_versioning(enable)
        b.gate.set()
        await write
        await b.save("k", b"4" * 30)  # under the new state, as is the delete
        await b.delete("m")
        used = (await b.get_usage()).used
        await a.refresh_usage()
        assert used == (await a.get_usage()).used == (await b.get_usage()).used
        # (landed before the switch, the 20 bytes are replaced or kept under the old state)
        expected = {(True, True): 67, (True, False): 57, (False, True): 47, (False, False): 67}
        assert used == expected[enable, before]


async def test_purge_expired_under_suspended_versioning_frees_the_null_version(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    from datetime import UTC, datetime, timedelta

    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a:
        await a.set_versioning(True)
        await a.save("k", b"1" * 10)  # a version of its own: kept by the purge
        await a.set_versioning(False)  # suspended
        await a.save("k", b"2" * 20)  # the "null" version: replaced by the purge's delete
        await a.save("n", b"3" * 5)
        await a.set_expiration("", 1)
        assert await a.purge_expired(datetime.now(UTC) + timedelta(days=2)) == 2
        used = (await a.get_usage()).used
        await a.refresh_usage()
        assert used == (await a.get_usage()).used == 10


async def test_a_write_in_another_process_while_versioning_is_switched_is_counted(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await a.save("k", b"x" * 100)
        await a.save("m", b"y" * 100)
        switched, go = asyncio.Event(), asyncio.Event()
        hook = a._set_versioning

        async def held(enabled: bool) -> None:  # the store switched, Redis not told yet
            await hook(enabled)
            switched.set()
            await go.wait()

        monkeypatch.setattr(a, "_set_versioning", held)
        switch = asyncio.create_task(a.set_versioning(True))
        await switched.wait()
        await b.save("k", b"z" * 50)  # the store keeps the 100 bytes as a prior version
        await b.delete("m")  # and these
        go.set()
        await switch
        stored = 0
        for key in ("k", "m"):
            stored += sum(v.size for v in await a.list_versions(key))
        assert stored == 250
        assert (await b.get_usage()).used == (await a.get_usage()).used == stored
