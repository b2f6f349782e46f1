"""The Redis ledger in a process forked after its parent used it, on the parent's event
loop (``asyncio.get_event_loop().run_until_complete`` in a sync worker, whose loop a
pre-forking server's children inherit on Python 3.11).

A connection shared by two processes gives each the replies of the other's calls, read
by whichever reads first: counts of one process given to the other, or calls that never
get an answer. The child opens connections of its own, and leaves the parent's alone.
``spawn`` children start from scratch and share the ledger with the parent exactly.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from file_storage import MemoryStorageBackend
from tests.forks import DEADLINE, forked, in_child
from tests.quota_redis.server import RedisServer


def memory(server: RedisServer, namespace: str) -> MemoryStorageBackend:
    # (the memory store: the local one writes in the loop's default executor, whose
    # threads a child does not inherit, so its jobs wait for ever on the parent's loop)
    return MemoryStorageBackend(
        max_size_bytes=1000, quota_redis_url=server.url, quota_redis_namespace=namespace
    )


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def test_a_child_on_its_parents_loop_calls_redis_on_a_connection_of_its_own(
    own_redis: RedisServer, namespace: str, loop: asyncio.AbstractEventLoop
) -> None:
    backend = memory(own_redis, namespace)
    loop.run_until_complete(backend.save("parent", b"x" * 10))
    assert own_redis.connected(2) == 2  # the parent's, and the one asking

    async def child() -> tuple[int, int]:
        await backend.save("child", b"y" * 20)
        return own_redis.connected(3), (await backend.get_usage()).used

    # the parent's connection, the child's, and the one asking
    assert forked(in_child(lambda: loop.run_until_complete(child())))() == (3, 30)
    loop.run_until_complete(backend.save("parent-again", b"z" * 5))  # the parent goes on
    assert loop.run_until_complete(backend.get_usage()).used == 35
    loop.run_until_complete(backend.aclose())


def test_a_child_does_not_keep_its_parents_connection_open(
    own_redis: RedisServer, namespace: str, loop: asyncio.AbstractEventLoop
) -> None:
    backend = memory(own_redis, namespace)
    loop.run_until_complete(backend.save("parent", b"x" * 10))
    end, ending = multiprocessing.Pipe(duplex=False)

    def child() -> str:  # alive, the store untouched, until told to end
        end.recv()
        return "ended"

    ended = forked(in_child(child))
    try:
        loop.run_until_complete(backend.aclose())
        assert own_redis.connected(1) == 1  # the parent closed its connection: it is gone
    finally:
        ending.send("end")
        assert ended() == "ended"


def spawned_writer(url: str, namespace: str, root: str, i: int) -> int:
    """A ``spawn`` child: a backend of its own on the parent's store and ledger."""
    from file_storage import LocalStorageBackend, StorageQuotaExceededError

    async def write() -> int:
        backend = LocalStorageBackend(
            root, max_size_bytes=1000, quota_redis_url=url, quota_redis_namespace=namespace
        )
        written = 0
        async with backend:
            for n in range(10):
                try:
                    await backend.save(f"w{i}/{n}", b"x" * 60)
                    written += 60
                except StorageQuotaExceededError:
                    pass
        return written

    return asyncio.run(write())


def test_spawned_children_of_a_parent_that_used_the_ledger_share_it_exactly(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    from file_storage import LocalStorageBackend

    backend = LocalStorageBackend(
        tmp_path,
        max_size_bytes=1000,
        quota_redis_url=redis_server.url,
        quota_redis_namespace=namespace,
    )
    asyncio.run(backend.save("parent", b"p" * 100))
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        args = [(redis_server.url, namespace, str(tmp_path), i) for i in range(3)]
        written = pool.starmap_async(spawned_writer, args).get(DEADLINE)

    async def at_rest() -> tuple[int, int]:
        used = (await backend.get_usage()).used
        stored = await backend.get_total_size()
        await backend.aclose()
        return used, stored

    assert asyncio.run(at_rest()) == (100 + sum(written),) * 2
    assert 100 + sum(written) <= 1000
