"""The Redis ledger in one process: two backend instances stand for two processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    ObjectInfo,
    StorageQuotaExceededError,
    StorageUnavailableError,
)
from file_storage._quota_redis_wire import RedisUnavailable
from tests.quota_redis.server import RedisServer


def local(
    root: Path, server: RedisServer, namespace: str, **options: object
) -> LocalStorageBackend:
    return LocalStorageBackend(
        root,
        quota_redis_url=server.url,
        quota_redis_namespace=namespace,
        **options,  # type: ignore[arg-type]
    )


async def test_a_limit_set_in_one_process_caps_the_others(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace)
    b = local(tmp_path, redis_server, namespace)
    async with a, b:
        a.set_quota("users/u1", 100)
        await a.save("users/u1/a", b"x" * 60)
        with pytest.raises(StorageQuotaExceededError) as info:
            await b.save("users/u1/b", b"x" * 41)
        assert (info.value.used, info.value.limit, info.value.prefix) == (60, 100, "users/u1/")
        await b.save("users/u1/b", b"x" * 40)
        assert (await b.get_usage("users/u1")).used == 100
        assert await a.list_files("users/u1") == ["users/u1/a", "users/u1/b"]


async def test_concurrent_writers_of_two_instances_never_overshoot(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        results = await asyncio.gather(
            *((a if i % 2 else b).save(f"k{i % 7}/{i}", b"x" * (30 + i)) for i in range(60)),
            return_exceptions=True,
        )
        assert all(r is None or isinstance(r, str | StorageQuotaExceededError) for r in results)
        stored = await a.get_total_size()
        assert stored <= 1000
        assert (await a.get_usage()).used == stored
        assert (await b.get_usage()).used == stored


async def test_overwrites_deletes_copies_and_moves_keep_usage_exact(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=10_000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=10_000)
    async with a, b:
        await a.save("k", b"x" * 50)
        ops = []
        for i in range(10):
            one, two = (a, b) if i % 2 else (b, a)
            ops += [
                one.save("k", b"y" * (10 * i + 5)),
                two.copy("k", f"c{i % 3}"),
                one.move(f"c{(i + 1) % 3}", f"m{i % 2}"),
                two.delete(f"m{(i + 1) % 2}"),
                one.save(f"s{i % 4}", b"z" * i),
                two.delete_many([f"s{(i + 2) % 4}", "nothing"]),
            ]
        await asyncio.gather(*ops, return_exceptions=True)
        await b.delete_prefix("nope")
        stored = await a.get_total_size()
        assert (await a.get_usage()).used == stored
        assert (await b.get_usage()).used == stored


async def test_a_stream_is_refused_when_it_crosses_the_shared_limit(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 300

    async with a, b:
        await a.save("keep", b"x" * 100)
        with pytest.raises(StorageQuotaExceededError) as info:
            await b.save("big", chunks())
        assert (info.value.used, info.value.limit, info.value.requested) == (100, 1000, 1200)
        assert await a.list_files() == ["keep"]
        assert (await a.get_usage()).used == 100


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


async def test_refresh_usage_sees_bytes_written_behind_the_ledger(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=1000) as a:
        await a.save("a", b"x" * 100)
        (tmp_path / "foreign").write_bytes(b"y" * 300)
        assert (await a.get_usage()).used == 100
        await a.refresh_usage()
        assert (await a.get_usage()).used == 400


async def test_get_usage_without_a_quota_lists(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace) as a:
        await a.save("d/a", b"x" * 10)
        usage = await a.get_usage("d")
        assert (usage.used, usage.limit) == (10, None)


async def test_redis_unreachable_fails_writes_closed_naming_redis(
    tmp_path: Path, namespace: str
) -> None:
    from tests.quota_redis.server import free_port

    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    async with LocalStorageBackend(
        tmp_path, quota_redis_url=url, quota_redis_namespace=namespace, max_size_bytes=100
    ) as a:
        with pytest.raises(StorageUnavailableError) as info:
            await a.save("k", b"x")
        assert "Redis" in str(info.value)
        assert (info.value.operation, info.value.key) == ("save", "k")
        assert "hunter2" not in repr(info.value) + str(info.value) + repr(a._quotas)
        assert await a.list_files() == []


async def test_redis_unreachable_never_blocks_reads_listings_and_deletes(
    tmp_path: Path, namespace: str
) -> None:
    from tests.quota_redis.server import free_port

    (tmp_path / "k").write_bytes(b"abc")
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with LocalStorageBackend(
        tmp_path, quota_redis_url=url, quota_redis_namespace=namespace, max_size_bytes=100
    ) as a:
        assert await a.load("k") == b"abc"
        assert await a.list_files() == ["k"]
        await a.delete("k")
        assert await a.list_files() == []


async def test_fail_open_lets_writes_through_with_one_warning_per_outage(
    tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.quota_redis.server import free_port

    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    caplog.set_level(logging.WARNING, "file_storage")
    async with LocalStorageBackend(
        tmp_path,
        quota_redis_url=url,
        quota_redis_namespace=namespace,
        max_size_bytes=100,
        quota_fail_open=True,
    ) as a:
        for i in range(3):
            await a.save(f"k{i}", b"x" * 10)
        assert await a.list_files() == ["k0", "k1", "k2"]
    outage = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(outage) == 1
    assert "hunter2" not in caplog.text


async def test_redis_stopped_fails_closed_and_restarted_resumes_exactly(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    root = tmp_path / "storage"
    async with local(root, own_redis, namespace, max_size_bytes=1000) as a:
        a.set_quota("users/u1", 300)
        await a.save("users/u1/a", b"x" * 100)
        await a.save("b", b"x" * 200)
        own_redis.stop()
        with pytest.raises(StorageUnavailableError, match="Redis") as info:
            await a.save("users/u1/c", b"x" * 10)
        assert (info.value.operation, info.value.key) == ("save", "users/u1/c")
        await a.delete("b")  # deletes never wait for Redis
        assert await a.load("users/u1/a") == b"x" * 100
        own_redis.start()  # the same port, and no data: persistence is off
        # limits come back from the process that set them, usage from one listing
        with pytest.raises(StorageQuotaExceededError):
            await a.save("users/u1/c", b"x" * 201)
        await a.save("users/u1/c", b"x" * 200)
        assert (await a.get_usage("users/u1")).used == 300
        assert (await a.get_usage()).used == await a.get_total_size() == 300


async def test_a_delete_missed_while_redis_was_away_is_listed_again_once_back(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    from pydantic import SecretStr

    from tests.quota_redis.server import free_port

    async with local(tmp_path / "s", own_redis, namespace, max_size_bytes=1000) as a:
        await a.save("a", b"x" * 100)
        await a.save("b", b"x" * 200)
        # Redis out of reach of this process only, its data kept (a network split)
        ledger = a._quotas._client  # type: ignore[attr-defined]
        url = ledger._url
        await a.aclose()
        ledger._url = SecretStr(f"redis://127.0.0.1:{free_port()}/0")
        await a.delete("b")
        await a.aclose()
        ledger._url = url
        assert await a.list_files() == ["a"]
        assert (await a.get_usage()).used == await a.get_total_size() == 100


class GatedLocal(LocalStorageBackend):
    """Holds each write of ``gated`` between landing and returning: the window in which
    another process's write of the same key must not land and commit first."""

    gated = ""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.landed = asyncio.Event()
        self.gate = asyncio.Event()

    async def _save(self, key: str, body: object, content_type: str, metadata: object) -> None:
        await super()._save(key, body, content_type, metadata)  # type: ignore[arg-type]
        if key == self.gated:
            self.landed.set()
            await self.gate.wait()


async def test_two_processes_writing_one_key_take_turns_so_usage_stays_exact(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": namespace}
    a = GatedLocal(tmp_path, max_size_bytes=1000, **options)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    a.gated = "k"
    async with a, b:
        first = asyncio.create_task(a.save("k", b"x" * 50))
        await a.landed.wait()
        second = asyncio.create_task(b.save("k", b"y" * 10))
        # b's write waits for a's key lock in Redis (without it, it lands now and
        # commits first, and a's late commit leaves the ledger at 50 for 10 stored)
        await asyncio.wait({second}, timeout=1.0)
        a.gate.set()
        await asyncio.gather(first, second)
        assert await a.load("k") == b"y" * 10
        assert (await b.get_usage()).used == await b.get_total_size() == 10


async def test_a_commit_after_its_lease_ran_out_checks_the_quota_again(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    import redis.asyncio

    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": namespace}
    a = GatedLocal(tmp_path, max_size_bytes=1000, **options)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    a.gated = "n"
    client = redis.asyncio.Redis.from_url(redis_server.url)
    async with a, b:
        first = asyncio.create_task(a.save("n", b"x" * 600))
        await a.landed.wait()
        # the writer stalled past its lease (a frozen process): Redis frees its bytes
        leases = "{" + namespace + "}:leases"
        for member in await client.zrange(leases, 0, -1):
            await client.zadd(leases, {member: 0})
        await b.save("other", b"y" * 500)  # fits now, and takes the space
        a.gate.set()
        with pytest.raises(StorageQuotaExceededError) as info:
            await first
        assert (info.value.used, info.value.limit, info.value.key) == (500, 1000, "n")
        assert await b.list_files() == ["other"]
        assert (await b.get_usage()).used == await b.get_total_size() == 500
    await client.aclose()


async def test_a_late_commit_in_a_versioned_store_is_kept_and_counted(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    import redis.asyncio

    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": namespace}
    a = GatedLocal(tmp_path, max_size_bytes=1000, **options)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    a.gated = "n"
    client = redis.asyncio.Redis.from_url(redis_server.url)
    async with a, b:
        await a.set_versioning(True)
        first = asyncio.create_task(a.save("n", b"x" * 600))
        await a.landed.wait()
        leases = "{" + namespace + "}:leases"  # the writer stalled past its lease
        for member in await client.zrange(leases, 0, -1):
            await client.zadd(leases, {member: 0})
        await b.save("other", b"y" * 500)
        a.gate.set()
        await first  # deleting it would only make it a prior version: kept, counted
        assert await b.list_files() == ["n", "other"]
        assert (await b.get_usage()).used == 1100
    await client.aclose()


async def test_no_credential_of_the_redis_url_shows_in_logs_reprs_or_errors(
    tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    from file_storage import StorageSettings, create_storage_backend

    secret = "s3cr3t-redis-password"
    server = RedisServer(tmp_path / "redis-auth", password=secret)
    server.workdir.mkdir()
    server.start()
    caplog.set_level(logging.DEBUG)
    try:
        settings = StorageSettings(
            local={"path": str(tmp_path / "s"), "max_size_gb": 0.000001},
            quota={"redis_url": server.url, "redis_namespace": namespace},
        )
        storage = create_storage_backend(settings)
        async with storage:
            await storage.save("a", b"x" * 600)  # authenticated: the ledger works
            with pytest.raises(StorageQuotaExceededError) as refused:
                await storage.save("b", b"x" * 600)
            shown = [repr(settings), repr(storage), repr(storage._quotas), str(refused.value)]
        wrong = server.url.replace(secret, "not-the-password-" + secret[::-1])
        async with LocalStorageBackend(
            tmp_path / "s", quota_redis_url=wrong, quota_redis_namespace=namespace
        ) as other:
            with pytest.raises(StorageUnavailableError) as denied:
                await other.save("c", b"x")
            shown += [str(denied.value), repr(denied.value)]
    finally:
        server.stop()
    for text in [*shown, caplog.text]:
        assert secret not in text
        assert secret[::-1] not in text


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
            raise RedisUnavailable("TimeoutError")

        monkeypatch.setattr(client, "call", unanswered)
        await a.set_versioning(True)  # the store keeps versions; Redis did not hear it
        await a.save("other", b"o")  # a's next ledger step tells it first
        await b.save("k", b"y" * 100)  # so b keeps x's 100 bytes counted
        assert (await b.get_usage()).used == 201
        await b.refresh_usage()
        assert (await a.get_usage()).used == 201


def pause_listing(backend: LocalStorageBackend) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold ``backend``'s next usage listing once it has read everything: ``(listed, go)``."""
    listed, go = asyncio.Event(), asyncio.Event()
    real = backend._usage_scan

    async def paused(prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in real(prefix):
            yield info
        listed.set()
        await go.wait()

    backend._usage_scan = paused  # type: ignore[method-assign]
    return listed, go


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


async def test_a_write_that_outlives_its_lease_keeps_it_renewed(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_server.url)
    leases = "{" + namespace + "}:leases"
    lock = "{" + namespace + "}:lk:big"

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 100
        # hold the write open until the renewal timer (a third of the 0.3 s lease) has
        # pushed the reservation's expiry on twice: bounded, each wait one timer tick
        (_, first), *_ = await client.zrange(leases, 0, 0, withscores=True)
        later = first
        for _ in range(200):
            await asyncio.sleep(0.01)
            scores = await client.zrange(leases, 0, 0, withscores=True)
            if scores and scores[0][1] > first + 150:
                later = scores[0][1]
                break
        assert later > first + 150, "the lease was not renewed"
        assert await client.exists(lock)  # the key's lock is renewed with it
        yield b"x" * 100

    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000, quota_lease_seconds=0.3)
    async with a:
        await a.save("big", body())
        assert (await a.get_usage()).used == await a.get_total_size() == 200
        assert not await client.exists(lock)
        assert await client.zcard(leases) == 0
    await client.aclose()


async def test_a_reserve_whose_answer_is_lost_leaves_no_bytes_or_lock_behind(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis runs the reserve step but its answer never arrives (a timeout under load):
    # the write fails closed, and neither its bytes nor the key's lock stay held
    from file_storage import _quota_redis_lua as lua
    from file_storage._quota_redis_wire import Client, RedisUnavailable

    run = Client.run
    lost: list[int] = []

    async def lose_reserve_answer(self: Client, script: object, args: list[object]) -> object:
        result = await run(self, script, args)  # type: ignore[arg-type]
        if script is lua.RESERVE and not lost:
            lost.append(1)
            raise RedisUnavailable("TimeoutError")
        return result

    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    async with a, b:
        await a.save("seed", b"x" * 10)  # seeded before the fault
        monkeypatch.setattr(Client, "run", lose_reserve_answer)
        with pytest.raises(StorageUnavailableError):
            await a.save("k", b"x" * 90)
        assert lost == [1]
        assert (await b.get_usage()).used == 10  # nothing of the lost step is held
        await asyncio.wait_for(b.save("k", b"x" * 90), 10)  # the key is not locked
        assert (await b.get_usage()).used == 100


async def test_a_commit_whose_answer_is_lost_is_listed_again_after_the_process_ends(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the write landed but its commit never reached Redis (a timeout): the process that
    # saw it tells Redis when it closes, so the next one lists the quota instead of
    # trusting a figure that misses the object
    from file_storage import _quota_redis_lua as lua
    from file_storage._quota_redis_wire import Client, RedisUnavailable

    run = Client.run
    dropped: list[int] = []

    async def drop_commit(self: Client, script: object, args: list[object]) -> object:
        if script is lua.COMMIT and not dropped:
            dropped.append(1)
            raise RedisUnavailable("TimeoutError")
        return await run(self, script, args)  # type: ignore[arg-type]

    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000, quota_lease_seconds=1)
    async with a:
        await a.save("seed", b"x" * 10)
        monkeypatch.setattr(Client, "run", drop_commit)
        await a.save("k", b"x" * 90)  # landed: the ledger only missed it
        assert dropped == [1]
    monkeypatch.setattr(Client, "run", run)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000, quota_lease_seconds=1)
    async with b:
        # the lost commit's reservation runs out with its lease (Redis's clock; each usage
        # call frees what ran out): bounded poll until nothing is reserved
        import redis

        client = redis.Redis.from_url(redis_server.url)
        try:
            for _ in range(200):
                used = (await b.get_usage()).used
                if client.zcard("{" + namespace + "}:leases") == 0:
                    break
                await asyncio.sleep(0.05)  # paces the poll of Redis's state
            assert client.zcard("{" + namespace + "}:leases") == 0
        finally:
            client.close()
        assert await b.get_total_size() == 100
        assert used == 100  # listed again, not 10 (the figure that missed the commit)
