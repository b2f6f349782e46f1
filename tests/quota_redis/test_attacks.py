"""The Redis ledger attacked: cancellations mid-step, outages, restarts, hostile keys.

Each test widens one window with a hook (never a sleep) and checks what another
process, or a user, would see after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from file_storage import (
    LocalStorageBackend,
    StorageQuotaExceededError,
)
from file_storage._quota.redis import scripts as lua
from file_storage._quota.redis.wire import Client, Script
from tests.quota_redis.ledger import gated_pair, local, run_out_leases, steps_through_run
from tests.quota_redis.server import RedisServer

LEASE = 60  # the default lease: a key left locked would stay so for a minute


@pytest.fixture
def peek(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


class Stall(asyncio.Event):
    """Set once the stalled step ran in Redis; its answer comes once ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()


def stall_after(monkeypatch: pytest.MonkeyPatch, script: Script) -> Stall:
    """The next call of ``script`` runs in Redis, then its caller waits for its answer
    until the test cancels the caller (the stall is set once the step ran)."""
    run = Client.run
    ran = Stall()

    async def stalled(self: Client, called: Script, args: list[object]) -> object:
        result = await run(self, called, args)
        if called is script and not ran.is_set():
            ran.set()
            await ran.answer.wait()  # the answer "on the way" when the task is cancelled
        return result

    monkeypatch.setattr(Client, "run", stalled)
    steps_through_run(monkeypatch)
    return ran


async def cancel_when(task: asyncio.Task[Any], ran: asyncio.Event) -> None:
    await ran.wait()
    task.cancel()
    if isinstance(ran, Stall):
        await asyncio.sleep(0)  # the cancellation is delivered before the answer
        ran.answer.set()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("operation", ["delete", "copy", "move", "delete_many"])
async def test_a_cancel_while_a_key_lock_is_answered_leaves_no_lock_behind(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
) -> None:
    # Redis took the key locks, the task was cancelled before the answer came back: the
    # locks must not stay held for a lease, blocking every writer of those keys
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await a.save("k", b"x" * 10)
        ran = stall_after(monkeypatch, lua.LOCK)
        call = {
            "delete": lambda: a.delete("k"),
            "copy": lambda: a.copy("k", "c"),
            "move": lambda: a.move("k", "m"),
            "delete_many": lambda: a.delete_many(["k", "z"]),
        }[operation]
        await cancel_when(asyncio.create_task(call()), ran)
        assert peek.keys("{" + namespace + "}:lk:*") == []
        await asyncio.wait_for(b.save("k", b"y" * 20), LEASE / 6)
        assert (await b.get_usage()).used == await b.get_total_size() == 20


@pytest.mark.parametrize(
    ("step", "used_after"),
    [
        # Redis reserved 90 of 100 bytes and locked the key, and the saving task was
        # cancelled before the answer came back: the bytes and the lock are given back at
        # once, not when the lease runs out a minute later (and the quota listed again)
        (lua.RESERVE, 10),
        # the write landed and Redis recorded it; the answer was lost with the cancel
        (lua.COMMIT, 100),
    ],
    ids=["reserve", "commit"],
)
async def test_a_cancel_while_a_save_step_is_answered_leaves_no_lock_and_usage_exact(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    step: Script,
    used_after: int,
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    async with a, b:
        await a.save("seed", b"x" * 10)
        ran = stall_after(monkeypatch, step)
        await cancel_when(asyncio.create_task(a.save("k", b"x" * 90)), ran)
        assert peek.keys("{" + namespace + "}:lk:*") == []
        assert peek.zcard("{" + namespace + "}:leases") == 0
        assert (await b.get_usage()).used == await b.get_total_size() == used_after
        await asyncio.wait_for(b.save("k", b"y" * 90), LEASE / 6)  # the key is free
        assert (await b.get_usage()).used == await b.get_total_size() == 100


async def test_a_cancel_during_a_listing_lets_the_others_list_at_once(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the first write lists the quota under a Redis lock; cancelled mid-listing (a request
    # timing out on a large bucket), it must not leave that lock for a lease, stalling every
    # write under the quota in every process
    from file_storage.models import ObjectInfo

    (tmp_path / "old").write_bytes(b"x" * 30)
    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    async with a, b:
        real = a._quotas._scan
        listing = asyncio.Event()

        async def stuck(prefix: str) -> AsyncIterator[ObjectInfo]:
            async for info in real(prefix):
                yield info
            listing.set()
            await asyncio.Future()  # a listing that takes its time

        monkeypatch.setattr(a._quotas, "_scan", stuck)
        await cancel_when(asyncio.create_task(a.save("k", b"x" * 10)), listing)
        assert peek.keys("{" + namespace + "}:seedlk:*") == []
        await asyncio.wait_for(b.save("n", b"y" * 20), LEASE / 6)
        assert (await b.get_usage()).used == await b.get_total_size() == 50


async def test_more_missed_keys_than_remembered_relists_every_quota_once(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # past _MAX_DIRTY keys changed while Redis was away, the process marks every quota to
    # be listed again instead of naming each key: it must then forget those keys (not
    # mark, list and mark again on every step for ever), and mark the quotas under
    # prefixes too, not only the root one
    from pydantic import SecretStr

    from file_storage._quota.redis import ledger as _quota_redis
    from tests.quota_redis.server import free_port

    monkeypatch.setattr(_quota_redis, "_MAX_DIRTY", 2)
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000, quota_fail_open=True)
    async with a:
        a.set_quota("users/u1", 100)
        await a.save("users/u1/a", b"x" * 10)
        assert (await a.get_usage("users/u1")).used == 10
        client = a._quotas._client  # type: ignore[attr-defined]
        url = client._url
        await client.aclose()
        client._url = SecretStr(f"redis://127.0.0.1:{free_port()}/0")  # a network split
        for i in range(3):  # fail open: they land uncounted, and are remembered
            await a.save(f"users/u1/b{i}", b"x" * 20)
        await client.aclose()
        client._url = url
        await asyncio.wait_for(a.save("users/u1/c", b"x" * 5), LEASE / 6)
        assert (await a.get_usage("users/u1")).used == await a.get_total_size("users/u1") == 75
        with pytest.raises(StorageQuotaExceededError):
            await a.save("users/u1/d", b"x" * 26)


async def test_after_redis_lost_its_data_each_process_sends_its_limits_again(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    # a per-user quota set by one process (an admin, at sign-up); Redis restarts without
    # its data, and another process (the root limit only) writes first: that must not
    # make the first believe its limits are still there
    a = local(tmp_path, own_redis, namespace, max_size_bytes=1000)
    b = local(tmp_path, own_redis, namespace, max_size_bytes=1000)
    c = local(tmp_path, own_redis, namespace)  # sets no quota at all
    async with a, b, c:
        a.set_quota("users/u1", 100)
        await a.save("users/u1/a", b"x" * 60)
        await b.save("b", b"x" * 10)
        await c.save("c", b"x" * 10)
        for x in (a, b, c):  # each process has seen its connection drop
            await x._quotas._client.aclose()  # type: ignore[attr-defined]
        own_redis.stop()
        own_redis.start()  # the same port, and no data: persistence is off
        await c.save("c2", b"x" * 10)  # the first step after the restart
        await b.save("b2", b"x" * 10)
        with pytest.raises(StorageQuotaExceededError) as info:
            await a.save("users/u1/big", b"x" * 50)
        assert (info.value.prefix, info.value.used) == ("users/u1/", 60)
        assert (await a.get_usage()).limit == 1000
        assert (await b.get_usage("users/u1")).used == 60


async def test_a_limit_set_after_redis_lost_its_data_brings_the_earlier_ones_back(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, own_redis, namespace)
    async with a:
        a.set_quota("users/u1", 100)
        await a.save("users/u1/a", b"x" * 60)
        await a._quotas._client.aclose()  # type: ignore[attr-defined]
        own_redis.stop()
        own_redis.start()
        a.set_quota("users/u2", 10)  # its push is the first step after the restart
        await a.save("users/u2/a", b"x" * 5)
        with pytest.raises(StorageQuotaExceededError) as info:
            await a.save("users/u1/big", b"x" * 50)
        assert (info.value.prefix, info.value.used) == ("users/u1/", 60)


async def test_crossed_copies_moves_and_overlapping_deletes_of_two_processes_all_finish(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # copy(a, b) here while move(b, a) there, delete_many of overlapping sets: every hold
    # takes all its keys at once in Redis (or none), so no two wait on each other
    a = local(tmp_path, redis_server, namespace, max_size_bytes=100_000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100_000)
    async with a, b:
        for key in ("x", "y", "z"):
            await a.save(key, b"k" * 10)
        ops = []
        for i in range(40):
            one, two = (a, b) if i % 2 else (b, a)
            ops += [
                one.copy("x", "y"),
                two.move("y", "x"),
                one.copy("z", "x"),
                two.delete_many(["z", "y", "x"][: 1 + i % 3]),
                one.delete_many(["x", "z"]),
                two.save(["x", "y", "z"][i % 3], b"s" * i),
            ]
        await asyncio.wait_for(asyncio.gather(*ops, return_exceptions=True), LEASE / 2)
        assert (await a.get_usage()).used == await b.get_total_size()


@pytest.mark.parametrize(
    "keys",
    [
        ["u10/a", "u1/a", "u1x", "u1/%d", "u1/%s%%"],
        ["u1/.*[a-z]+(x)", "u1/^$?", "u1/a-b", "u1/%1"],
        ["u1/Отпуск 2026.mp4", "u1/日本/語", "u1/🙂", "u1/é"],
        ["u1/" + "l" * 250, "u1/" + "d/" * 200 + "e", "u1/" + "é" * 120],
        ["u1/{x}", "u1/}{", "u1/:lk:u1/a", "u1/:q:u1"],
    ],
    ids=["overlapping-and-percent", "lua-patterns", "unicode", "long", "braces-and-colons"],
)
async def test_hostile_keys_are_counted_under_their_own_quota_only(
    tmp_path: Path, redis_server: RedisServer, namespace: str, keys: list[str]
) -> None:
    # a namespace with braces too: the hash tag is the caller's business, not a key's
    namespace += "{with}braces"
    a = local(tmp_path, redis_server, namespace, max_size_bytes=100_000)
    b = local(tmp_path, redis_server, namespace)
    async with a, b:
        a.set_quota("u1", 1000)
        a.set_quota("u10", 50)
        for i, key in enumerate(keys):
            await a.save(key, b"x" * (10 + i))
        await b.copy(keys[0], keys[0] + ".copy")
        await b.move(keys[-1], keys[-1] + ".moved")
        await b.delete(keys[1])
        for prefix in ("", "u1", "u10"):
            assert (await b.get_usage(prefix)).used == await b.get_total_size(prefix)
        if "u10/a" in keys:
            with pytest.raises(StorageQuotaExceededError) as info:
                await b.save("u10/b", b"x" * 31)  # 20 stored: the copy counted
            assert info.value.prefix == "u10/"


async def test_a_listing_whose_lock_ran_out_unclaimed_still_records_every_size(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the listing's Redis lock ran out between two batches (a slow page of a listing) and
    # no other process took it: the listing goes on and is swapped in, so every batch it
    # found must be in the sizes, or a later delete of a key it skipped frees nothing
    from file_storage._quota.redis import ledger as _quota_redis
    from file_storage.models import ObjectInfo

    monkeypatch.setattr(_quota_redis, "_SEED_BATCH", 1)
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(b"x" * 10)
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a:
        real = a._quotas._scan

        async def slow(prefix: str) -> AsyncIterator[ObjectInfo]:
            async for info in real(prefix):
                yield info
                peek.delete("{" + namespace + "}:seedlk:")  # its lease ran out here

        monkeypatch.setattr(a._quotas, "_scan", slow)
        assert (await a.get_usage()).used == 30
        monkeypatch.setattr(a._quotas, "_scan", real)
        await a.delete_many(["a", "b", "c"])
        assert (await a.get_usage()).used == await a.get_total_size() == 0


async def test_a_cancel_while_a_refused_late_commit_is_answered_leaves_nothing_uncounted(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = gated_pair(tmp_path, redis_server, namespace, "n", before=True)
    async with a, b:
        first = asyncio.create_task(a.save("n", b"x" * 600))
        await a.landed.wait()
        await run_out_leases(redis_server, namespace)  # the writer stalled past its lease
        await b.save("other", b"y" * 500)  # fits now, and takes the space
        ran = stall_after(monkeypatch, lua.COMMIT)
        a.gate.set()
        # COMMIT answered 'over' (n is not counted) and the answer is lost with the
        # cancel: n stays stored, and its quota is listed again
        await cancel_when(first, ran)
    async with b:
        assert (await b.get_usage()).used == await b.get_total_size()


@pytest.fixture
def silent_redis(tmp_path: Path, namespace: str) -> Iterator[LocalStorageBackend]:
    """A store whose Redis accepts connections and never answers (a partition, a stalled
    server), with a 0.2 s timeout."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    storage = LocalStorageBackend(
        tmp_path, quota_redis_url=url, quota_redis_namespace=namespace, max_size_bytes=100
    )
    storage._quotas._client._timeout = 0.2  # type: ignore[attr-defined]
    try:
        yield storage
    finally:
        silent.close()


async def test_a_delete_asks_a_silent_redis_once_not_twice(
    tmp_path: Path, silent_redis: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each ask waits a whole timeout, so a delete that asked to lock and again to
    # record-and-unlock waited twice as long as it must
    run = Client.run
    asked: list[str] = []

    async def counted(self: Client, script: Script, args: list[object]) -> object:
        asked.append(script.sha)
        return await run(self, script, args)

    monkeypatch.setattr(Client, "run", counted)
    (tmp_path / "k").write_bytes(b"abc")
    async with silent_redis as a:
        await a.delete("k")
        assert await a.list_files() == []
        assert len(asked) == 1  # (pushing the limit, the lock's first step: no answer)
        assert a._quotas._dirty == {"k"}  # type: ignore[attr-defined]


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.save("k", b"y" * 10),  # an overwrite of the same size
        lambda s: s.save("k", b"y" * 4),  # a smaller one
        lambda s: s.save("e", _empty()),  # an empty stream
    ],
    ids=["same-size", "smaller", "empty-stream"],
)
async def test_a_write_that_reserves_nothing_leaves_no_lease_that_blocks_the_others(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    write: Any,
) -> None:
    # a write that needs no more bytes holds 0 in its reservation: giving that back must
    # work like any other (Redis refuses to add "-0": the step failed half-way, looked like
    # an outage, and left a lease whose purge then failed every later write in every
    # process, for good)
    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    async with a, b:
        await a.save("k", b"x" * 10)
        await write(a)
        assert peek.zcard("{" + namespace + "}:leases") == 0  # given back, not left
        await run_out_leases(redis_server, namespace)  # any lease left would run out now
        await b.save("other", b"z" * 5)
        assert (await b.get_usage()).used == await b.get_total_size()
    assert "unavailable" not in caplog.text


async def test_a_silent_redis_is_waited_for_once_per_timeout_not_once_per_call(
    tmp_path: Path, silent_redis: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # once a call timed out, the calls that follow within a timeout fail at once (deletes
    # go on, a write fails closed) instead of each waiting a whole timeout more
    from file_storage import StorageUnavailableError
    from file_storage._quota.redis.wire import _Wire

    send = _Wire.send
    sent: list[bytes] = []

    def counted(self: _Wire, data: bytes) -> asyncio.Future[Any]:
        if not data.startswith(b"*3\r\n$6\r\nSCRIPT"):  # a call, not the load before it
            sent.append(data)
        return send(self, data)

    monkeypatch.setattr(_Wire, "send", counted)
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(b"abc")
    async with silent_redis as storage:
        await storage.delete("a")  # waits one timeout
        assert len(sent) == 1
        await storage.delete("b")  # within the timeout after: does not ask
        with pytest.raises(StorageUnavailableError):
            await storage.save("new", b"x")
        assert len(sent) == 1
        assert await storage.list_files() == ["c"]
        # the timeout has passed: the next call asks again
        storage._quotas._client._quiet_until = 1.0  # type: ignore[attr-defined]
        await storage.delete("c")
        assert len(sent) == 2
        assert storage._quotas._dirty == {"a", "b", "c"}  # type: ignore[attr-defined]


@pytest.mark.parametrize("sent", [False, True], ids=["before-sent", "answer-lost"])
async def test_a_delete_cancelled_while_it_records_and_unlocks_leaves_nothing_behind(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    sent: bool,
) -> None:
    # the object is gone, and the delete was cancelled while its last step (record the
    # delete, unlock the key) was on its way, before it left (still connecting) or with
    # its answer: from the process's next step, the others see the bytes freed and can
    # write the key, instead of a stale figure and a lock held for a lease
    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    run = Client.run
    ran = asyncio.Event()

    async def stalled(self: Client, called: Script, args: list[object]) -> object:
        if called is lua.FINISH and not ran.is_set():
            if sent:
                await run(self, called, args)
            ran.set()
            await asyncio.Future()  # cancelled here
        return await run(self, called, args)

    async with a, b:
        await a.save("k", b"x" * 60)
        await b.save("other", b"y" * 30)
        monkeypatch.setattr(Client, "run", stalled)
        await cancel_when(asyncio.create_task(a.delete("k")), ran)
        monkeypatch.setattr(Client, "run", run)
        assert await a.list_files() == ["other"]
        await a.get_usage()  # a's next step
        assert peek.keys("{" + namespace + "}:lk:*") == []
        assert (await b.get_usage()).used == await b.get_total_size() == 30
        await asyncio.wait_for(b.save("k", b"z" * 70), LEASE / 6)
        assert (await b.get_usage()).used == await b.get_total_size() == 100


async def test_a_late_save_cancelled_before_its_commit_left_is_counted_by_the_others(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the writer stalled past its lease (its bytes given to another write), then its
    # object landed and its caller was cancelled before the step recording it left (its
    # connection being opened again): that step is still made, so the others count the
    # object at once, not only once its process makes its next step (never, if it is
    # killed now), and a write that does not fit is refused
    a, b = gated_pair(tmp_path, redis_server, namespace, "n", before=True)
    run = Client.run
    reached, connected = asyncio.Event(), asyncio.Event()

    async def connecting(self: Client, called: Script, args: list[object]) -> object:
        if called is lua.COMMIT and not reached.is_set():
            reached.set()
            await connected.wait()  # the caller is cancelled here
        return await run(self, called, args)

    async with a, b:
        first = asyncio.create_task(a.save("n", b"x" * 600))
        await a.landed.wait()
        await run_out_leases(redis_server, namespace)
        await b.save("other", b"y" * 500)  # fits now, and takes the space
        monkeypatch.setattr(Client, "run", connecting)
        steps_through_run(monkeypatch)
        a.gate.set()
        await reached.wait()
        first.cancel()
        await asyncio.sleep(0)  # the cancellation is delivered before the connection is up
        connected.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        monkeypatch.setattr(Client, "run", run)
        assert peek.keys("{" + namespace + "}:lk:*") == []
        assert (await b.get_usage()).used == await b.get_total_size() == 1100
        with pytest.raises(StorageQuotaExceededError):
            await b.save("more", b"y" * 10)


async def test_a_write_cancelled_again_while_it_gives_its_bytes_back_holds_none(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a caller cancelled twice (a cancel scope, then a shutdown): the second lands while
    # the failed write's release is on its way to Redis, before it left
    run = Client.run
    leaving, go = asyncio.Event(), asyncio.Event()

    async def held(self: Client, script: Script, args: list[object]) -> object:
        if script is lua.RELEASE and not leaving.is_set():
            leaving.set()
            await go.wait()
        return await run(self, script, args)

    monkeypatch.setattr(Client, "run", held)
    steps_through_run(monkeypatch)
    a, b = gated_pair(tmp_path, redis_server, namespace, "k", before=True)
    async with a, b:
        first = asyncio.create_task(a.save("k", b"x" * 600))
        await a.landed.wait()  # 600 bytes reserved, nothing written yet
        first.cancel()
        await leaving.wait()
        first.cancel()
        go.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        await b.save("other", b"y" * 1000)  # nothing of a's is held any more
        assert (await b.get_usage()).used == await b.get_total_size() == 1000
