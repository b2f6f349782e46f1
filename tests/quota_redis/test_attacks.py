"""The Redis ledger attacked: cancellations mid-step, outages, restarts, hostile keys.

Each test widens one window with a hook (never a sleep) and checks what another
process, or a user, would see after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from file_storage import (
    LocalStorageBackend,
)
from file_storage import _quota_redis_lua as lua
from file_storage._quota_redis_wire import Client, Script
from tests.quota_redis.server import RedisServer

LEASE = 60  # the default lease: a key left locked would stay so for a minute


def local(root: Path, server: RedisServer, namespace: str, **options: Any) -> LocalStorageBackend:
    return LocalStorageBackend(
        root, quota_redis_url=server.url, quota_redis_namespace=namespace, **options
    )


@pytest.fixture
def peek(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def stall_after(monkeypatch: pytest.MonkeyPatch, script: Script) -> asyncio.Event:
    """The next call of ``script`` runs in Redis, then its caller waits for its answer
    forever: the event is set once the step ran, for the test to cancel the caller."""
    run = Client.run
    ran = asyncio.Event()

    async def stalled(self: Client, called: Script, args: list[object]) -> object:
        result = await run(self, called, args)
        if called is script and not ran.is_set():
            ran.set()
            await asyncio.Future()  # the answer "on the way" when the task is cancelled
        return result

    monkeypatch.setattr(Client, "run", stalled)
    return ran


async def cancel_when(task: asyncio.Task[Any], ran: asyncio.Event) -> None:
    await ran.wait()
    task.cancel()
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


async def test_a_cancel_while_a_reserve_is_answered_leaves_no_bytes_or_lock_behind(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis reserved 90 of 100 bytes and locked the key, the saving task was cancelled
    # before the answer came back: the bytes and the lock must be given back at once, not
    # when the lease runs out a minute later (and then with the quota listed again)
    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    async with a, b:
        await a.save("seed", b"x" * 10)
        ran = stall_after(monkeypatch, lua.RESERVE)
        await cancel_when(asyncio.create_task(a.save("k", b"x" * 90)), ran)
        assert peek.keys("{" + namespace + "}:lk:*") == []
        assert peek.zcard("{" + namespace + "}:leases") == 0
        assert (await b.get_usage()).used == 10
        await asyncio.wait_for(b.save("k", b"y" * 90), LEASE / 6)
        assert (await b.get_usage()).used == await b.get_total_size() == 100


async def test_a_cancel_while_a_commit_is_answered_keeps_usage_exact(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    peek: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    async with a, b:
        await a.save("seed", b"x" * 10)
        ran = stall_after(monkeypatch, lua.COMMIT)
        await cancel_when(asyncio.create_task(a.save("k", b"x" * 50)), ran)
        assert peek.keys("{" + namespace + "}:lk:*") == []
        assert peek.zcard("{" + namespace + "}:leases") == 0
        assert (await b.get_usage()).used == await b.get_total_size() == 60
