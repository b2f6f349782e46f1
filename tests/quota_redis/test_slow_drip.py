"""A stream of many tiny chunks (a client sending a byte per packet) on the Redis ledger.

Such a stream must not cost one Redis script per chunk: past its first few steps it
reserves ahead, geometrically, never more than half of what its quotas have free. The
figures a user sees stay exact: a drip fills a quota to its last byte, one byte more is
refused, and at rest the ledger equals what is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, StorageQuotaExceededError
from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer


def script_calls(server: RedisServer) -> int:
    """Ledger scripts Redis has run so far (``INFO commandstats``)."""
    stats = server.info("commandstats")
    return sum(
        int(line.split("calls=", 1)[1].split(",", 1)[0])
        for line in stats.splitlines()
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:"))
    )


async def drip(
    size: int,
    paused: asyncio.Event | None = None,
    at: int = 0,
    waiting: asyncio.Event | None = None,
) -> AsyncIterator[bytes]:
    """``size`` bytes, one per chunk; waits for ``paused`` to be set once ``at`` are sent
    (setting ``waiting`` then: the write asks for its next chunk, done with the others)."""
    for sent in range(size):
        if paused is not None and sent == at:
            if waiting is not None:
                waiting.set()
            await paused.wait()
        yield b"d"


async def until_used(backend: LocalStorageBackend, used: int) -> int:
    """Let a drip in flight run until the ledger holds ``used`` bytes (bounded turns)."""
    for _ in range(100_000):
        held = (await backend.get_usage()).used
        if held >= used:
            return held
        await asyncio.sleep(0)
    raise AssertionError(f"the ledger never held {used} bytes")


async def counted(backend: LocalStorageBackend, prefix: str = "") -> int:
    """The ledger's usage under ``prefix``, checked against the store and a fresh listing."""
    used = (await backend.get_usage(prefix)).used
    assert used == await backend.get_total_size(prefix)
    await backend.refresh_usage(prefix)
    assert (await backend.get_usage(prefix)).used == used, "the ledger drifted from the store"
    return used


async def test_a_stream_sent_one_byte_at_a_time_runs_a_few_scripts_not_one_per_byte(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, own_redis, namespace, max_size_bytes=10**6) as backend:
        await backend.save("warm", b"w")  # listed, scripts loaded
        before = script_calls(own_redis)
        await backend.save("slow.bin", drip(5000))
        assert script_calls(own_redis) - before <= 40
        assert await counted(backend) == 5001


@pytest.mark.parametrize("limit", [1, 10, 5000, 2**53 + 5000])
async def test_a_drip_fills_a_quota_to_its_last_byte_and_one_byte_more_is_refused(
    tmp_path: Path, redis_server: RedisServer, namespace: str, limit: int
) -> None:
    async with local(tmp_path, redis_server, namespace) as backend:
        backend.set_quota("", limit)
        backend.set_quota("users/a/", 3000)
        room = min(limit, 3000)
        with pytest.raises(StorageQuotaExceededError) as caught:
            await backend.save("users/a/s", drip(room + 1))
        assert (caught.value.used, caught.value.requested) == (0, room + 1)
        assert await backend.list_files() == []
        await backend.save("users/a/s", drip(room))
        assert await counted(backend, "users/a/") == room
        assert await counted(backend) == room


async def test_two_processes_dripping_into_nested_quotas_never_overshoot_them(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with (
        local(tmp_path, redis_server, namespace, max_size_bytes=5000) as one,
        local(tmp_path, redis_server, namespace, max_size_bytes=5000) as two,
    ):
        one.set_quota("users/a/", 3000)
        two.set_quota("users/a/", 3000)
        writes = [(one, "users/a/x", 1500), (two, "users/a/y", 1500), (one, "z", 1000),
                  (two, "w", 1000)]  # fmt: skip
        results = await asyncio.gather(
            *(backend.save(key, drip(size)) for backend, key, size in writes),
            return_exceptions=True,
        )
        # together they fill both quotas to the byte; one may be refused while another
        # stream holds bytes ahead it does not need in the end (as documented), never
        # stored past a limit, and the holds end with the streams: sent again, it fits
        for (backend, key, size), result in zip(writes, results, strict=True):
            if isinstance(result, BaseException):
                assert isinstance(result, StorageQuotaExceededError), result
                assert not await backend.exists(key)
                await backend.save(key, drip(size))
        assert await counted(one, "users/a/") == 3000
        assert await counted(two) == 5000
        for backend, key in [(one, "users/a/v"), (two, "v")]:
            with pytest.raises(StorageQuotaExceededError):
                await backend.save(key, drip(1))


async def test_a_stream_holds_ahead_at_most_half_of_what_is_free(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with (
        local(tmp_path, redis_server, namespace, max_size_bytes=100_000) as one,
        local(tmp_path, redis_server, namespace, max_size_bytes=100_000) as two,
    ):
        gate = asyncio.Event()
        write = asyncio.create_task(one.save("slow", drip(20_000, gate, at=10_000)))
        held = await until_used(two, 10_000)
        assert 10_000 <= held <= 20_000  # its own size at most, ahead of it
        await two.save("other", b"o" * ((100_000 - 10_000) // 2))  # half the free space
        gate.set()
        await write
        assert await counted(two) == 20_000 + 45_000


@pytest.mark.parametrize("how", ["cancelled", "failing"])
async def test_a_drip_that_stops_half_way_gives_back_what_it_held_ahead(
    tmp_path: Path, redis_server: RedisServer, namespace: str, how: str
) -> None:
    gate = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        async for chunk in drip(4000, gate, at=3000):
            yield chunk
        raise OSError("the client went away")

    async with local(tmp_path, redis_server, namespace, max_size_bytes=10_000) as backend:
        await backend.save("keep", b"k" * 100)
        write = asyncio.create_task(backend.save("slow", body()))
        await until_used(backend, 3100)
        if how == "cancelled":
            write.cancel()
        else:
            gate.set()
        with pytest.raises((asyncio.CancelledError, OSError)):
            await write
        assert await counted(backend) == 100
        await backend.save("fill", drip(9900))  # every byte it held is free again
        assert await counted(backend) == 10_000


@pytest.mark.parametrize("existing", [0, 1000])
async def test_a_drip_holding_bytes_ahead_when_redis_loses_its_data_never_lands_over_the_limit(
    tmp_path: Path, own_redis: RedisServer, namespace: str, existing: int
) -> None:
    a = local(tmp_path, own_redis, namespace, max_size_bytes=10_000)
    b = local(tmp_path, own_redis, namespace, max_size_bytes=10_000)
    async with a, b:
        if existing:
            await a.save("s", b"e" * existing)
        gate, waiting = asyncio.Event(), asyncio.Event()
        # (3000 sent, it holds ahead: the rest of it needs no more bytes from Redis)
        write = asyncio.create_task(a.save("s", drip(4000, gate, at=3000, waiting=waiting)))
        await until_used(b, 3000)  # (an overwrite holds only its growth)
        # and its last step's answer is in: the connections dropped below cut no step of it
        await asyncio.wait_for(waiting.wait(), 30)
        for x in (a, b):  # each process has seen its connection drop
            await x._quotas._client.aclose()  # type: ignore[attr-defined]
        own_redis.stop()
        own_redis.start()  # the same port, and no data: persistence is off
        # listed again: the drip is not stored yet, the old object is
        await b.save("other", b"o" * 6500)
        gate.set()
        with pytest.raises(StorageQuotaExceededError):
            await write
        assert await a.get_total_size() == existing + 6500
        assert await counted(b) == existing + 6500


@pytest.mark.parametrize(("lowered", "lands"), [(3500, False), (4000, True)])
async def test_a_drip_holding_bytes_ahead_is_checked_against_a_limit_lowered_meanwhile(
    tmp_path: Path, redis_server: RedisServer, namespace: str, lowered: int, lands: bool
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=10_000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=10_000)
    async with a, b:
        gate = asyncio.Event()
        # (3000 sent, it holds ahead: the rest of it needs no more bytes from Redis)
        write = asyncio.create_task(a.save("s", drip(4000, gate, at=3000)))
        await until_used(b, 3000)
        b.set_quota("", lowered)
        await b.get_usage()  # the new limit is in Redis
        gate.set()
        if lands:
            await write
        else:
            with pytest.raises(StorageQuotaExceededError) as caught:
                await write
            assert (caught.value.limit, caught.value.requested) == (lowered, 4000)
        assert await a.get_total_size() == (4000 if lands else 0)
        assert await counted(b) == (4000 if lands else 0)
