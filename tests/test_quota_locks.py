"""The per-key locks behind exact quotas: taken only under a quota, never left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from file_storage import MemoryStorageBackend, StorageQuotaExceededError


async def test_lock_table_is_empty_once_operations_end() -> None:
    backend = MemoryStorageBackend(max_size_bytes=1000)
    await asyncio.gather(
        *(backend.save(f"k{i % 3}", b"x" * i) for i in range(30)),
        backend.copy("k0", "c"),
        backend.move("c", "m"),
        backend.delete_many(["k1", "m"]),
        backend.delete_prefix(""),
        return_exceptions=True,
    )
    assert backend._quotas._locks == {}
    gate = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x"
        await gate.wait()

    holder = asyncio.create_task(backend.save("k", body()))
    waiters = [asyncio.create_task(backend.save("k", b"y" * 2000)) for _ in range(3)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert set(backend._quotas._locks) == {"k"}
    waiters[0].cancel()
    gate.set()
    results = await asyncio.gather(holder, *waiters, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert all(isinstance(r, StorageQuotaExceededError) for r in results[2:])
    assert backend._quotas._locks == {}


async def test_nothing_is_locked_without_a_quota() -> None:
    backend = MemoryStorageBackend()
    gate = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x"
        await gate.wait()

    holder = asyncio.create_task(backend.save("k", body()))
    await backend.save("k", b"y")  # does not wait for the write in flight
    assert backend._quotas._locks == {}
    gate.set()
    await holder
