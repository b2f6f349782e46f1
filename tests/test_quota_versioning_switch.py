"""Quota usage stays exact while versioning is switched during concurrent writes: an
operation that runs while ``set_versioning`` is under way (the store switched, the
ledger not yet) counts what the store did."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, MemoryStorageBackend, StorageBackend
from tests.quota_redis.server import RedisServer

KEYS = ("a", "b", "c")


Make = Callable[[], StorageBackend]


@pytest.fixture(params=["memory", "local", "local-redis"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Make:
    """Fresh backends under a quota (never versioned yet): in-process ledger, or
    (local-redis) the Redis ledger."""
    server: RedisServer | None = None
    if request.param == "local-redis":
        server = request.getfixturevalue("redis_server")

    def new() -> StorageBackend:
        if request.param == "memory":
            return MemoryStorageBackend(max_size_bytes=10**6)
        root = tmp_path / uuid.uuid4().hex
        if server is None:
            return LocalStorageBackend(root, max_size_bytes=10**6)
        return LocalStorageBackend(
            root,
            max_size_bytes=10**6,
            quota_redis_url=server.url,
            quota_redis_namespace=f"test:{uuid.uuid4().hex[:12]}",
        )

    return new


@pytest.fixture
async def versioned(make: Make) -> AsyncIterator[StorageBackend]:
    async with make() as backend:
        yield backend


async def stored(backend: StorageBackend, keys: tuple[str, ...] = KEYS) -> int:
    """What the store holds: every version of every key, as listed."""
    total = 0
    for key in keys:
        total += sum(v.size for v in await backend.list_versions(key))
    return total


def pause_switch(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold each ``set_versioning`` once the store has switched, before the quota ledger
    hears of it: ``switched`` is set then, and it goes on once ``go`` is set."""
    switched, go = asyncio.Event(), asyncio.Event()
    hook: Callable[[bool], Awaitable[None]] = backend._set_versioning

    async def held(enabled: bool) -> None:
        await hook(enabled)
        switched.set()
        await go.wait()

    monkeypatch.setattr(backend, "_set_versioning", held)
    return switched, go


async def test_an_overwrite_while_versioning_is_first_enabled_counts_the_kept_version(
    versioned: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await versioned.save("a", b"x" * 100)
    switched, go = pause_switch(versioned, monkeypatch)
    switch = asyncio.create_task(versioned.set_versioning(True))
    await switched.wait()
    await versioned.save("a", b"y" * 50)  # the store keeps the 100 bytes as a prior version
    go.set()
    await switch
    assert (await versioned.get_usage()).used == await stored(versioned) == 150


async def test_a_delete_while_versioning_is_first_enabled_counts_the_kept_version(
    versioned: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await versioned.save("a", b"x" * 100)
    switched, go = pause_switch(versioned, monkeypatch)
    switch = asyncio.create_task(versioned.set_versioning(True))
    await switched.wait()
    await versioned.delete("a")  # kept as a prior version: still stored
    go.set()
    await switch
    assert (await versioned.get_usage()).used == await stored(versioned) == 100


async def test_an_overwrite_while_versioning_is_suspended_counts_the_replaced_null_version(
    versioned: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await versioned.set_versioning(True)
    await versioned.set_versioning(False)
    await versioned.save("a", b"x" * 100)  # the "null" version
    await versioned.set_versioning(True)
    switched, go = pause_switch(versioned, monkeypatch)
    switch = asyncio.create_task(versioned.set_versioning(False))
    await switched.wait()
    await versioned.save("a", b"y" * 50)  # replaces the "null" version: 100 bytes freed
    go.set()
    await switch
    assert (await versioned.get_usage()).used == await stored(versioned) == 50


async def test_usage_stays_exact_under_writes_racing_versioning_switches(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    progress = asyncio.Event()  # set as each write or delete ends

    async def writer(backend: StorageBackend) -> None:
        for _ in range(12):
            key, roll = rng.choice(KEYS), rng.random()
            if roll < 0.55:
                await backend.save(key, b"x" * rng.randint(1, 50))
            elif roll < 0.75:
                await backend.delete(key)
            else:
                verb = backend.copy if roll < 0.9 else backend.move
                with contextlib.suppress(FileNotFoundError):  # deleted or moved meanwhile
                    await verb(key, rng.choice(KEYS))
            progress.set()

    def widened(
        backend: StorageBackend, writers: list[asyncio.Task[None]]
    ) -> Callable[[bool], Awaitable[None]]:
        hook: Callable[[bool], Awaitable[None]] = backend._set_versioning

        async def switch(enabled: bool) -> None:
            await hook(enabled)
            # the store has switched, the ledger not yet: let writes run whole meanwhile
            for _ in range(8):
                progress.clear()
                if not all(w.done() for w in writers):
                    await progress.wait()

        return switch

    for _ in range(30):  # each round switches a store never versioned before
        async with make() as backend:
            for key in KEYS:
                await backend.save(key, b"o" * rng.randint(1, 50))
            writers = [asyncio.create_task(writer(backend)) for _ in range(3)]
            monkeypatch.setattr(backend, "_set_versioning", widened(backend, writers))
            for enabled in (True, False, True, False):
                await backend.set_versioning(enabled)
            await asyncio.gather(*writers)
            assert (await backend.get_usage()).used == await stored(backend)


@pytest.mark.s3
async def test_an_overwrite_on_s3_while_versioning_is_first_enabled_counts_the_kept_version(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_backend.set_quota("", 10**6)
    await s3_backend.save("a", b"x" * 100)
    switched, go = pause_switch(s3_backend, monkeypatch)
    switch = asyncio.create_task(s3_backend.set_versioning(True))
    await switched.wait()
    await s3_backend.save("a", b"y" * 50)  # S3 keeps the 100 bytes as a prior version
    go.set()
    await switch
    assert (await s3_backend.get_usage()).used == await stored(s3_backend) == 150
