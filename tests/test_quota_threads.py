"""Quotas when one backend serves several threads, each running its own event loop (the
process-wide backend in a threaded worker): per-key locks and the ledger are shared."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    StorageBackend,
    StorageError,
)

LIMIT = 3000


def make(kind: str, tmp_path: Path) -> StorageBackend:
    if kind == "memory":
        return MemoryStorageBackend(max_size_bytes=LIMIT)
    return LocalStorageBackend(tmp_path / "root", max_size_bytes=LIMIT)


def in_threads(
    count: int, job: Callable[[int], Coroutine[None, None, None]]
) -> list[BaseException]:
    """Run ``asyncio.run(job(i))`` in ``count`` threads; the exceptions that are not
    StorageError (those are the expected answers of a contended quota)."""
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            asyncio.run(job(i))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hangs on a quota lock"
    return failures


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_threads_with_their_own_loops_share_key_locks_and_ledger(tmp_path: Path, kind: str) -> None:
    backend = make(kind, tmp_path)
    over: list[int] = []

    async def job(i: int) -> None:
        for n in range(40):
            size = (n * 37 + i * 101) % 900
            ops = [
                backend.save("same", b"x" * size),
                backend.save("same", b"y" * (900 - size)),
                backend.copy("same", f"copy{i % 2}"),
                backend.delete("same") if n % 4 == 0 else backend.save(f"own{i}", b"z" * 10),
                backend.move(f"copy{i % 2}", "moved") if n % 5 == 0 else backend.exists("same"),
            ]
            for result in await asyncio.gather(*ops, return_exceptions=True):
                if isinstance(result, BaseException) and not isinstance(result, StorageError):
                    raise result
            usage = await backend.get_usage()
            if usage.used > LIMIT:
                over.append(usage.used)

    assert in_threads(3, job) == []
    assert not over

    async def at_rest() -> tuple[int, int]:
        return (await backend.get_usage()).used, await backend.get_total_size()

    used, stored = asyncio.run(at_rest())
    assert used == stored <= LIMIT
    assert backend._quotas._locks == {}


def test_a_key_held_in_one_loop_is_waited_for_by_another_loop(tmp_path: Path) -> None:
    backend = MemoryStorageBackend(max_size_bytes=LIMIT)
    holding, go = threading.Event(), threading.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        holding.set()
        await asyncio.to_thread(go.wait, 60)
        yield b"a" * 1000

    async def job(i: int) -> None:
        if i == 0:
            await backend.save("k", slow_body())
            return
        await asyncio.to_thread(holding.wait, 60)
        waiter = asyncio.ensure_future(backend.save("k", b"b" * 2500))
        for _ in range(100_000):  # bounded: until it queues on the key held in loop 0
            entry = backend._quotas._locks.get("k")
            if entry is not None and entry.users >= 2:
                break
            await asyncio.sleep(0)
        go.set()
        await waiter

    assert in_threads(2, job) == []
    assert asyncio.run(backend.load("k")) == b"b" * 2500
    assert asyncio.run(backend.get_usage()).used == 2500


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_a_quota_set_by_one_thread_while_another_writes_fails_no_write(
    tmp_path: Path, kind: str
) -> None:
    """``set_quota`` on the request that needs it (a sync route in a thread) while other
    threads write: no write may fail on the table of quotas changing under it."""
    backend = make(kind, tmp_path)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    setting = threading.Thread(
        target=lambda: [backend.set_quota(f"user{i}/", 1000) for i in range(3000)]
    )
    try:
        setting.start()

        async def writes() -> None:
            for n in range(200):
                await backend.save(f"other/{n}", b"x")

        asyncio.run(writes())
    finally:
        setting.join()
        sys.setswitchinterval(interval)
