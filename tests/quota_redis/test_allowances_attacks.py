"""Attacks on the allowances (local disk): a write refused, cut or sent at the wrong
moment must leave the counts exact and nothing behind in the process."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, StorageQuotaExceededError
from file_storage._quota.redis import scripts as lua
from file_storage._quota.redis import seeding
from file_storage._quota.redis.wire import Script
from tests.quota_redis.drawing import HeldSave, drawing, drawing_now, settled
from tests.quota_redis.ledger import kill_book, local, pause_listing
from tests.quota_redis.server import RedisServer


def expected(backend: LocalStorageBackend) -> dict[str, object]:
    disk = backend._quota_disk  # type: ignore[attr-defined]
    assert disk is not None
    return disk._expected  # type: ignore[no-any-return]


async def test_saves_refused_over_quota_leave_nothing_expected_behind(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with drawing(tmp_path, redis_server, namespace, max_size_bytes=100_000) as a:
        await a.save("warm", b"w" * 60_000)
        await drawing_now(a)
        for i in range(20):
            with pytest.raises(StorageQuotaExceededError):
                await a.save(f"big{i}", b"x" * 50_000)  # drawn, refused
        assert expected(a) == {}
        assert (await a.get_usage()).used == await a.get_total_size() == 60_000


async def test_a_move_onto_a_key_once_refused_counts_the_size_it_replaced(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=100_000)
    b = drawing(tmp_path, redis_server, namespace, max_size_bytes=100_000)
    async with a, b:
        await a.save("src", b"s" * 50)
        await b.save("warm", b"w" * 60_000)
        await drawing_now(a)
        with pytest.raises(StorageQuotaExceededError):
            await a.save("k", b"x" * 50_000)  # refused as it drew
        # a save of k while a listing runs goes through Redis (its landing still reads)
        listed, go = pause_listing(b)
        refresh = asyncio.create_task(b.refresh_usage())
        await asyncio.wait_for(listed.wait(), 10)
        await a.save("k", b"k" * 100)
        go.set()
        await refresh
        await drawing_now(a)
        await a.move("src", "k")  # replaces 100 bytes with 50
        await b.get_usage()
        assert (await a.get_usage()).used == await a.get_total_size() == 60_050


async def test_a_limit_lowered_under_what_a_process_holds_is_not_overshot(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = drawing(tmp_path, redis_server, namespace)
    b = drawing(tmp_path, redis_server, namespace)
    async with a, b:
        a.set_quota("u", 100 * 1024 * 1024)
        b.set_quota("u", 100 * 1024 * 1024)
        await a.save("u/warm", b"w")
        await drawing_now(a, "u/")
        await a.save("u/held", b"h" * 1000)  # (a holds an allowance ahead now)
        book = a._quotas._book  # type: ignore[attr-defined]
        assert book.held.get("u/", 0) > 200_000
        b.set_quota("u", 200_000)  # (another process lowers it: applies to a too)
        await b.get_usage("u")  # (pushed to Redis)
        await drawing_now(a, "u/")  # (a has heard of it)
        refused = 0
        for i in range(10):
            try:
                await a.save(f"u/k{i}", b"x" * 50_000)
            except StorageQuotaExceededError:
                refused += 1
        await b.get_usage("u")
        stored = await a.get_total_size("u")
        assert stored <= 200_000
        assert refused > 0
        assert (await b.get_usage("u")).used == stored


async def test_a_job_per_asyncio_run_does_not_hold_the_listings_of_others_back(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**8)
    b = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**8)

    async def job() -> None:  # (a script or sync worker: one loop per job)
        await a.save("warm", b"w")
        await drawing_now(a)
        await a.save("job", b"j" * 10)

    await asyncio.to_thread(asyncio.run, job())
    async with b:
        b.set_quota("v", 10**6)  # a new quota: listed first, once every process sent
        # a's loop is gone: its share must not hold the listing back for its lease (60 s)
        await asyncio.wait_for(b.save("v/x", b"x"), 10)
        assert (await b.get_usage()).used == await b.get_total_size() == 12
    await a.aclose()


async def test_a_lister_that_died_at_its_barrier_does_not_stop_the_draws_for_good(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    import redis.asyncio

    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**8)
    b = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**8)
    async with a, b:
        await a.save("warm", b"w")
        await drawing_now(a)
        ledger = b._quotas  # type: ignore[attr-defined]
        await ledger._sync()
        # b begins a refresh, raises the barrier for a, and dies there (killed)
        state = await ledger._client.run(
            seeding.SEED_BEGIN, [ledger.ns, "", "dead-lister", ledger.lease_ms, 1]
        )
        assert state == "barrier"
        client = redis.asyncio.Redis.from_url(redis_server.url)
        await client.delete(ledger.ns + ":seedlk:")  # (its lock's lease ran out)
        await client.aclose()
        await drawing_now(a)  # a draws again (not through Redis for every write, for ever)
        await a.save("after", b"a" * 10)
        assert (await b.get_usage()).used == await b.get_total_size() == 11


async def test_a_large_write_is_refused_not_stalled_by_a_dead_process_share(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    limit = 8 * 1024 * 1024
    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=limit)
    b = drawing(tmp_path, redis_server, namespace, max_size_bytes=limit)
    async with b:
        await a.save("warm", b"w")
        await drawing_now(a)
        await a.save("held", b"h")  # (a holds a share ahead now)
        book = a._quotas._book  # type: ignore[attr-defined]
        assert book.held.get("", 0) >= 1024 * 1024
        kill_book(a)  # (killed: its share stays reserved until its lease runs out, 60 s)
        # past 1 MiB: reserved in Redis, which fits only once a's share is given back;
        # refused after a few tries as a draw is, not retried until the lease runs out
        with pytest.raises(StorageQuotaExceededError):
            await asyncio.wait_for(b.save("big", b"b" * (limit - 1024 * 1024)), 10)


async def test_a_listing_begun_holding_a_disk_lock_does_not_deadlock_a_drawing_save(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": namespace}
    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**8)
    b = HeldSave(tmp_path, max_size_bytes=10**8, **options)  # type: ignore[arg-type]
    b.gated = "src"
    async with a, b:
        await a.save("src", b"s" * 10)
        await b.save("warm", b"w")
        await drawing_now(b)
        saving = asyncio.create_task(b.save("src", b"S" * 20))  # draws, then held
        await asyncio.wait_for(b.drawn.wait(), 10)
        a.set_quota("v", 10**6)  # a new quota: its first use lists it
        # a's copy locks src and v/x on disk, then lists v/ (waiting for b's draws)
        barrier = asyncio.Event()
        client = a._quotas._client  # type: ignore[attr-defined]
        run = client.run

        async def seen(script: Script, args: list[object]) -> object:
            answer = await run(script, args)
            if script is seeding.SEED_BEGIN and answer == "barrier":
                barrier.set()
            return answer

        client.run = seen
        copying = asyncio.create_task(a.copy("src", "v/x"))
        await asyncio.wait_for(barrier.wait(), 10)  # (a's listing waits for b's draws)
        b.gate.set()  # b's save lands: it needs src's disk lock
        await asyncio.wait_for(asyncio.gather(saving, copying), 10)
        await settled(a, b)
        assert (await a.get_usage()).used == await a.get_total_size()


async def test_a_lister_killed_mid_listing_does_not_stop_the_draws_for_good(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    import redis.asyncio

    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**8)
    # b only lists (a cron job's refresh_usage): it holds no share of its own
    b = local(tmp_path, redis_server, namespace, max_size_bytes=10**8)
    async with a, b:
        await a.save("warm", b"w")
        await b.save("warm2", b"ww")
        listed, _go = pause_listing(b)
        refresh = asyncio.create_task(b.refresh_usage())
        await asyncio.wait_for(listed.wait(), 10)
        # b is killed mid-listing: nothing more from it (not even its abort)
        client = b._quotas._client  # type: ignore[attr-defined]
        run = client.run

        async def dead(script: Script, args: list[object]) -> object:
            if script is seeding.SEED_ABORT:
                return 0
            return await run(script, args)

        client.run = dead
        refresh.cancel()
        with pytest.raises(asyncio.CancelledError):
            await refresh
        ns = b._quotas.ns  # type: ignore[attr-defined]
        raw = redis.asyncio.Redis.from_url(redis_server.url)
        await raw.delete(ns + ":seedlk:")  # (its lock's lease ran out)
        await raw.aclose()
        for i in range(3):  # a writes on: the dead listing is not trusted, "" listed again
            await a.save(f"after{i}", b"a")
            with contextlib.suppress(AssertionError):
                await drawing_now(a)  # then a draws again (not through Redis for ever)
                break
        else:
            raise AssertionError("a never drew again")
        await a.save("drawn", b"d" * 10)
        assert (await a.get_usage()).used == await a.get_total_size() == 3 + i + 1 + 10


async def test_a_quota_listed_again_mid_hold_does_not_deadlock_a_save_of_its_keys(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    import threading

    import redis.asyncio

    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**9)
    b = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**9)
    async with a, b:
        await a.save("src", b"s" * (2 * 1024 * 1024))  # a copy of it reserves in Redis
        await b.save("warm", b"w")
        await drawing_now(b)
        busy = threading.Event()  # b's save found src locked on disk (in a thread or not)
        disk = b._quota_disk  # type: ignore[attr-defined]
        take = disk._take

        def taking(slot: int) -> bool:
            got: bool = take(slot)
            if not got:
                busy.set()
            return got

        disk._take = taking
        client = a._quotas._client  # type: ignore[attr-defined]
        run = client.run
        saving: list[asyncio.Task[None]] = []

        async def reserving(script: Script, args: list[object]) -> object:
            if script is lua.RESERVE and not saving:
                # a's copy holds src and dst locked on disk; its quota is now to be
                # listed again (another process's lease ran out), and b saves src
                raw = redis.asyncio.Redis.from_url(redis_server.url)
                ns = a._quotas.ns  # type: ignore[attr-defined]
                await raw.hset(ns + ":q:", mapping={"seeded": "0", "stale": "1"})
                await raw.incr(ns + ":agen")
                await raw.aclose()
                saving.append(asyncio.create_task(b.save("src", b"S" * 20)))
                await asyncio.to_thread(busy.wait, 10)
            return await run(script, args)

        client.run = reserving
        await asyncio.wait_for(a.copy("src", "dst"), 20)  # (it lists "" meanwhile)
        await asyncio.wait_for(saving[0], 20)
        await settled(a, b)
        assert await b.load("src") == b"S" * 20
        assert (await a.get_usage()).used == await a.get_total_size() == 2 * 1024 * 1024 + 21
