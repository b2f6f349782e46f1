"""What the Redis ledger tests share: backends on one ledger, held writes, run-out leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    ObjectInfo,
)
from tests.quota_redis.server import RedisServer


def steps_through_run(monkeypatch: pytest.MonkeyPatch | None = None) -> None:
    """Send every started step (a commit's) through ``Client.run``, so that a test
    patching ``run`` to lose or drop a step reaches commits too."""
    from file_storage._quota.redis.wire import Client

    def start(self: Client, script: object, args: list[object]) -> asyncio.Future[object]:
        return asyncio.ensure_future(self.run(script, args))  # type: ignore[arg-type]

    if monkeypatch is None:
        Client.start = start  # type: ignore[method-assign]
    else:
        monkeypatch.setattr(Client, "start", start)


def lose_first_answer(
    monkeypatch: pytest.MonkeyPatch,
    script: object,
    error: Exception,
    *,
    ran: bool = True,
    timed_out: bool = False,
) -> list[int]:
    """The first call of ``script`` raises ``error``, its answer lost: after Redis ran it
    (``ran``), or before it reached Redis; ``timed_out``: the client takes Redis for
    silent too, as after a call that timed out. Returns a list that call appends 1 to."""
    from file_storage._quota.redis.wire import Client, Script

    run = Client.run
    lost: list[int] = []

    async def lose(self: Client, called: Script, args: list[object]) -> object:
        if called is script and not lost:
            lost.append(1)
            if ran:
                await run(self, called, args)
            if timed_out:
                self._timed_out(error)
            raise error
        return await run(self, called, args)

    monkeypatch.setattr(Client, "run", lose)
    return lost


class ExactLocal(LocalStorageBackend):
    """A local backend whose ledger asks Redis at every write (as on S3): no allowances."""

    _draws_allowances = False


def local(
    root: Path, server: RedisServer, namespace: str, *, allowances: bool = False, **options: object
) -> LocalStorageBackend:
    """A local backend on the ledger in Redis; ``allowances=False``: one that asks Redis at
    every write, the steps these tests lose, cut or delay."""
    make = LocalStorageBackend if allowances else ExactLocal
    return make(
        root,
        quota_redis_url=server.url,
        quota_redis_namespace=namespace,
        **options,  # type: ignore[arg-type]
    )


class GatedLocal(LocalStorageBackend):
    """Holds each write of ``gated`` between landing and returning: the window in which
    another process's write of the same key must not land and commit first. Its ledger
    asks Redis at every write (the steps these tests hold; a listing would wait for a
    write drawing on an allowance until it ends)."""

    _draws_allowances = False

    gated = ""
    before = False  # hold the write before it touches the store instead

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.landed = asyncio.Event()
        self.gate = asyncio.Event()

    async def _save(self, key: str, body: object, content_type: str, metadata: object) -> None:
        if key == self.gated and self.before:
            self.landed.set()
            await self.gate.wait()
        await super()._save(key, body, content_type, metadata)  # type: ignore[arg-type]
        if key == self.gated and not self.before:
            self.landed.set()
            await self.gate.wait()


def gated_pair(
    root: Path, server: RedisServer, namespace: str, key: str, *, before: bool = False
) -> tuple[GatedLocal, LocalStorageBackend]:
    """Two processes on one store and ledger (limit 1000), the first holding ``key``'s write."""
    options = {"quota_redis_url": server.url, "quota_redis_namespace": namespace}
    a = GatedLocal(root, max_size_bytes=1000, **options)
    a.gated, a.before = key, before
    return a, local(root, server, namespace, max_size_bytes=1000)


async def run_out_leases(server: RedisServer, namespace: str) -> None:
    """Every lease held now runs out (a writer stalled past it: a frozen process)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(server.url)
    leases = "{" + namespace + "}:leases"
    for member in await client.zrange(leases, 0, -1):
        await client.zadd(leases, {member: 0})
    await client.aclose()


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


def pause_listing_after(
    backend: LocalStorageBackend, key: str
) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold ``backend``'s next usage listing once it has listed ``key``: ``(passed, go)``."""
    passed, go = asyncio.Event(), asyncio.Event()
    real = backend._usage_scan

    async def paused(prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in real(prefix):
            yield info
            if info.key == key:
                passed.set()
                await go.wait()

    backend._usage_scan = paused  # type: ignore[method-assign]
    return passed, go


class DeleteGated(LocalStorageBackend):
    """Holds its next delete once the store has done it, before the ledger records it
    (asking Redis at every write, as GatedLocal)."""

    _draws_allowances = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.deleted = asyncio.Event()
        self.gate = asyncio.Event()

    async def _delete(self, key: str) -> None:
        await super()._delete(key)
        if not self.deleted.is_set():
            self.deleted.set()
            await self.gate.wait()


async def run_out_locks(server: RedisServer, namespace: str) -> None:
    """Every lease and key lock held now runs out (a writer frozen past its lease: a
    long GC pause, a stopped VM), so that another process may take its keys."""
    import redis.asyncio

    await run_out_leases(server, namespace)
    client = redis.asyncio.Redis.from_url(server.url)
    async for lock in client.scan_iter(match="{" + namespace + "}:lk:*"):
        await client.delete(lock)
    await client.aclose()


def kill_book(backend: LocalStorageBackend) -> None:
    """``backend``'s process stops calling Redis for its allowances, as if killed: its
    sending task ends without a word and is never started again."""
    from file_storage._quota.redis.wire import RedisUnavailable

    book = backend._quotas._book  # type: ignore[attr-defined]
    assert book is not None

    async def dead(**_: object) -> dict[str, object]:
        raise RedisUnavailable("killed")

    book.call = dead
    book.start = lambda: None
    if book._task is not None:
        book._task.cancel()
