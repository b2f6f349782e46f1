"""Quota usage after a recount (``refresh_usage``, the first listing) equals what the store
holds, every version counted as ``list_versions`` shows it, also while versioned writes,
deletes, restores and ``set_versioning`` run during the recount (in-process ledger).

The windows are widened with hooks: the ledger's listing is held at its start or at its
end, a write in its store step, a key's recount in its listing of versions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, MemoryStorageBackend, StorageBackend
from file_storage.models import ObjectInfo


def under_quota(kind: str, tmp_path: Path) -> StorageBackend:
    """A memory or local backend with a quota over its whole store."""
    if kind == "memory":
        return MemoryStorageBackend(max_size_bytes=10**6)
    return LocalStorageBackend(tmp_path / uuid.uuid4().hex, max_size_bytes=10**6)


@pytest.fixture(params=["memory", "local"])
async def versioned(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StorageBackend]:
    """A versioned backend under a quota whose usage was listed once."""
    async with under_quota(request.param, tmp_path) as backend:
        await backend.set_versioning(True)
        await backend.get_usage()
        yield backend


async def stored(backend: StorageBackend, *keys: str) -> int:
    """What the store holds: every version of every key, as listed."""
    total = 0
    for key in keys:
        total += sum(v.size for v in await backend.list_versions(key))
    return total


async def used(backend: StorageBackend) -> int:
    return (await backend.get_usage()).used


class HeldListing:
    """Holds the ledger's listing of usage once, at its start (before anything is listed)
    or at its end (everything listed, nothing counted yet): ``reached`` is set then, and
    it goes on once ``go`` is set."""

    def __init__(self, backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, at: str) -> None:
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        scan: Callable[[str], AsyncIterator[ObjectInfo]] = backend._quotas._scan
        held = self

        async def listing(prefix: str) -> AsyncIterator[ObjectInfo]:
            if at == "start":
                await held.pause()
            async for info in scan(prefix):
                yield info
            if at == "end":
                await held.pause()

        monkeypatch.setattr(backend._quotas, "_scan", listing)

    async def pause(self) -> None:
        if not self.reached.is_set():
            self.reached.set()
            await self.go.wait()


def held_step(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, name: str, *, after: bool = False
) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the first call of the backend's coroutine hook ``name`` before it runs (or,
    ``after``, once it has run, before its caller has the answer): ``reached`` is set
    then, and it goes on once ``go`` is set."""
    reached, go = asyncio.Event(), asyncio.Event()
    hook: Callable[..., Awaitable[object]] = getattr(backend, name)

    async def held(*args: object) -> object:
        first = not reached.is_set()
        reached.set()
        if first and not after:
            await go.wait()
        result = await hook(*args)
        if first and after:
            await go.wait()
        return result

    monkeypatch.setattr(backend, name, held)
    return reached, go


# ------------------------------------------------------------------ what a recount counts


async def test_recount_counts_an_object_moved_away_and_back_like_list_versions(
    versioned: StorageBackend,
) -> None:
    await versioned.save("b", b"b" * 36)
    await versioned.move("b", "c")
    await versioned.move("c", "b")  # b's prior version is the file now at b again
    await versioned.move("b", "c")  # and away again: b keeps it twice, c once more
    await versioned.refresh_usage()
    assert await used(versioned) == await stored(versioned, "b", "c") == 4 * 36


async def test_recount_counts_every_overwrite_like_list_versions(
    versioned: StorageBackend,
) -> None:
    for size in (10, 20, 30):
        await versioned.save("o", b"o" * size)
    await versioned.move("o", "p")
    await versioned.save("o", b"n" * 5)
    await versioned.refresh_usage()
    assert await used(versioned) == await stored(versioned, "o", "p") == 10 + 20 + 30 + 30 + 5


# ------------------------------------------------------------------ recounts overlapping writes


@pytest.mark.parametrize("verb", ["save", "delete", "restore_version"])
async def test_an_operation_inside_a_recount_is_counted_once(
    versioned: StorageBackend, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    await versioned.save("a", b"x" * 10)
    await versioned.save("a", b"y" * 15)
    oldest = (await versioned.list_versions("a"))[-1].version_id
    listing = HeldListing(versioned, monkeypatch, at="start")
    refresh = asyncio.create_task(versioned.refresh_usage())
    await listing.reached.wait()
    # begun and ended while the recount runs, before it lists the key
    if verb == "save":
        await versioned.save("a", b"z" * 20)
    elif verb == "delete":
        await versioned.delete("a")
    else:
        await versioned.restore_version("a", oldest)
    listing.go.set()
    await refresh
    assert await used(versioned) == await stored(versioned, "a")


@pytest.mark.parametrize("verb", ["save", "delete", "restore_version"])
async def test_an_operation_ending_inside_a_recount_is_counted_once(
    versioned: StorageBackend, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    await versioned.save("a", b"x" * 10)
    await versioned.save("a", b"y" * 15)
    oldest = (await versioned.list_versions("a"))[-1].version_id
    hook = {"save": "_save", "delete": "_delete", "restore_version": "_restore_version"}[verb]
    in_store, store = held_step(versioned, monkeypatch, hook)
    if verb == "save":
        operation = asyncio.create_task(versioned.save("a", b"z" * 20))
    elif verb == "delete":
        operation = asyncio.create_task(versioned.delete("a"))
    else:
        operation = asyncio.create_task(versioned.restore_version("a", oldest))
    await in_store.wait()  # begun before the recount: the key is held
    listing = HeldListing(versioned, monkeypatch, at="end")
    refresh = asyncio.create_task(versioned.refresh_usage())
    await listing.reached.wait()  # the recount has listed the key as it was
    store.set()
    await operation  # lands and is counted while the recount is still open
    listing.go.set()
    await refresh
    assert await used(versioned) == await stored(versioned, "a")


async def test_a_recount_of_a_key_cannot_interleave_with_a_purge_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # memory: every step is the event loop's, so the purge runs whole in a bounded loop
    # unless it waits for the key
    async with MemoryStorageBackend(max_size_bytes=10**6) as backend:
        await backend.set_versioning(True)
        await backend.save("a", b"x" * 10)
        await backend.set_versioning(False)  # suspended: a delete recounts the key
        await backend.save("a", b"y" * 5)
        assert await used(backend) == 15
        listed, go = held_step(backend, monkeypatch, "_list_versions", after=True)
        delete = asyncio.create_task(backend.delete("a"))
        await listed.wait()  # the delete recounts "a": its listing is held
        purge = asyncio.create_task(backend.purge_versions("a", keep=0))
        for _ in range(1000):  # (bounded) the purge runs, or waits for the key
            if purge.done():
                break
            await asyncio.sleep(0)
        go.set()
        await asyncio.gather(delete, purge)
        assert await backend.list_versions("a") == []
        assert await used(backend) == 0


# ------------------------------------------------------------------ the versioning state


@pytest.fixture(params=["memory", "local"])
async def unversioned(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StorageBackend]:
    """A backend under a quota, never versioned."""
    async with under_quota(request.param, tmp_path) as backend:
        yield backend


async def test_a_recount_probing_versioning_across_set_versioning_keeps_the_switch(
    unversioned: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await unversioned.save("a", b"x" * 10)
    reached, go = asyncio.Event(), asyncio.Event()
    probe: Callable[[], Awaitable[str]] = unversioned._quotas._probe  # type: ignore[assignment]

    async def held() -> str:
        state = await probe()  # read before the switch, answered after it
        reached.set()
        await go.wait()
        return state

    monkeypatch.setattr(unversioned._quotas, "_probe", held)
    refresh = asyncio.create_task(unversioned.refresh_usage())
    await reached.wait()
    await unversioned.set_versioning(True)
    go.set()
    await refresh
    await unversioned.save("a", b"y" * 20)  # keeps the 10 bytes as a prior version
    assert await used(unversioned) == await stored(unversioned, "a") == 30
