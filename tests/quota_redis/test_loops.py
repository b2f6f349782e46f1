"""The Redis ledger used from one event loop after another, and from two at once.

Scripts call ``asyncio.run`` once per job on one store, sync workers run each job in a
new loop of a thread: each loop gets a connection of its own, which must end with its
loop (else every job leaves a connection open in Redis and a socket in the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import weakref
from pathlib import Path

import pytest

from file_storage import ObjectNotFoundError, StorageQuotaExceededError
from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer

JOBS = 5


def test_a_job_per_asyncio_run_leaves_no_connection_open_nor_its_loop_alive(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    backend = local(tmp_path, own_redis, namespace, max_size_bytes=10_000)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def job(i: int) -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await backend.save(f"job-{i}", b"x" * 10)

    for i in range(JOBS):
        asyncio.run(job(i))
    gc.collect()
    assert own_redis.connected(1) == 1  # the one asking: each job's connection ended with it
    assert [ref for ref in loops if ref() is not None] == []

    async def last() -> int:
        used = (await backend.get_usage()).used
        await backend.aclose()
        return used

    assert asyncio.run(last()) == JOBS * 10


def test_threads_with_loops_of_their_own_share_one_store_exactly(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    backend = local(tmp_path, redis_server, namespace, max_size_bytes=3000)
    failures: list[BaseException] = []

    async def job(i: int) -> None:
        async def one(n: int) -> None:
            size = (n * 37 + i * 101) % 900
            with contextlib.suppress(StorageQuotaExceededError, ObjectNotFoundError):
                if n % 4 == 0:
                    await backend.save("same", b"x" * size)
                elif n % 4 == 1:
                    await backend.save(f"k{i}-{n % 5}", b"y" * size)
                elif n % 4 == 2:
                    await backend.delete(f"k{(i + 1) % 4}-{n % 5}")
                else:
                    await backend.copy("same", f"c{i}")

        await asyncio.gather(*(one(n) for n in range(40)))

    def run(i: int) -> None:
        try:
            for _ in range(2):  # a new loop per job, as a sync worker's thread runs them
                asyncio.run(job(i))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"
    assert failures == []

    async def at_rest() -> tuple[int, int]:
        used = (await backend.get_usage()).used
        stored = await backend.get_total_size()
        await backend.aclose()
        return used, stored

    used, stored = asyncio.run(at_rest())
    assert used == stored <= 3000


def test_threads_replaying_the_same_lost_steps_at_once_run_each_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # steps whose answer was lost are replayed with the next step of any loop of the
    # process: the saves of several threads, each on a loop of its own, replay them at
    # once, and each step must run once, not fail a save with a ValueError
    from file_storage._quota.redis import scripts as lua
    from file_storage._quota.redis.wire import Client, Script

    threads_n = 4
    backend = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    ledger = backend._quotas
    asyncio.run(ledger.usage(""))  # the limit pushed, nothing left to sync
    checked = threading.Barrier(threads_n, timeout=30)
    waited: set[int] = set()

    class Widened(list):  # type: ignore[type-arg]
        """Every thread has looked for the first step before any goes on: the window
        between a check and a remove held open."""

        def __contains__(self, item: object) -> bool:
            found = super().__contains__(item)
            if threading.get_ident() not in waited:
                waited.add(threading.get_ident())
                checked.wait()
            return found

    ledger._replay = Widened()
    for i in range(20):
        ledger._lost(f"k{i}", f"lost:{i}")
    run = Client.run
    replayed: list[object] = []

    async def counted(self: Client, script: Script, args: list[object]) -> object:
        if script is lua.RELEASE:
            replayed.append(args[1])
        return await run(self, script, args)

    failures: list[BaseException] = []

    def save(i: int) -> None:
        try:
            asyncio.run(backend.save(f"t{i}", b"x" * 10))
        except BaseException as exc:
            failures.append(exc)

    monkeypatch.setattr(Client, "run", counted)
    threads = [threading.Thread(target=save, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs"
    assert failures == []
    assert sorted(replayed) == sorted(f"lost:{i}" for i in range(20))
    assert list(ledger._replay) == []
