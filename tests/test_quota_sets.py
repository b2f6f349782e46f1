"""Deletes begun before a quota was set: the quota's listing may run before they land."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from file_storage import MemoryStorageBackend


class _Gated(MemoryStorageBackend):
    """A store whose calls, where a subclass says, wait for ``gate`` (``begun``: one did)."""

    def __init__(self) -> None:
        super().__init__()
        self.begun, self.gate = asyncio.Event(), asyncio.Event()

    async def _pause(self) -> None:
        self.begun.set()
        await self.gate.wait()


class _Paused(_Gated):
    """Its deletes wait at the store for ``gate`` once they have begun (``begun``)."""

    async def _delete(self, key: str) -> None:
        await self._pause()
        await super()._delete(key)

    async def _delete_many(self, keys: list[str]) -> None:
        await self._pause()
        await super()._delete_many(keys)

    async def _delete_prefix(self, prefix: str) -> int:
        await self._pause()
        return await super()._delete_prefix(prefix)


DELETES: dict[str, Callable[[_Paused], Awaitable[object]]] = {
    "delete": lambda b: b.delete("d/a"),
    "delete_many": lambda b: b.delete_many(["d/a"]),
    "delete_prefix": lambda b: b.delete_prefix("d"),
}


@pytest.mark.parametrize("how", list(DELETES))
async def test_quota_set_during_a_delete_stops_counting_what_it_deleted(how: str) -> None:
    backend = _Paused()
    await backend.save("d/a", b"a" * 10)
    await backend.save("keep", b"k" * 5)
    deleting = asyncio.create_task(DELETES[how](backend))
    await backend.begun.wait()
    backend.set_quota("", 100)
    assert (await backend.get_usage()).used == 15  # listed before the delete landed
    backend.gate.set()
    await deleting
    assert (await backend.get_usage()).used == await backend.get_total_size() == 5


class _PausedAfter(_Gated):
    """Its deletes and writes wait for ``gate`` once the store has done them."""

    async def _delete(self, key: str) -> None:
        await super()._delete(key)
        await self._pause()

    async def _save(self, key: str, *args: object, **kwargs: object) -> None:
        await super()._save(key, *args, **kwargs)  # type: ignore[arg-type]
        await self._pause()


@pytest.mark.parametrize("how", ["delete", "save"])
async def test_versioning_enabled_while_the_store_replaced_a_null_version(how: str) -> None:
    backend = _PausedAfter()
    await backend.set_versioning(True)
    await backend.set_versioning(False)  # suspended: a write replaces the "null" version
    backend.set_quota("", 100)
    backend.gate.set()
    await backend.save("a", b"a" * 16)
    backend.gate.clear()
    backend.begun.clear()
    if how == "delete":
        task = asyncio.create_task(backend.delete("a"))
    else:
        task = asyncio.create_task(backend.save("a", b"b" * 4))
    await backend.begun.wait()  # done by the store, not yet counted
    await backend.set_versioning(True)
    backend.gate.set()
    await task
    stored = 0 if how == "delete" else 4
    assert (await backend.get_usage()).used == stored
    await backend.refresh_usage()
    assert (await backend.get_usage()).used == stored


@pytest.mark.parametrize("old", [0, 10])
async def test_listing_between_a_versioned_write_landing_and_its_count(old: int) -> None:
    backend = _PausedAfter()
    await backend.set_versioning(True)
    backend.set_quota("", 1000)
    backend.gate.set()
    if old:
        await backend.save("n", b"o" * old)
    backend.gate.clear()
    backend.begun.clear()
    task = asyncio.create_task(backend.save("n", b"n" * 56))
    await backend.begun.wait()  # stored, not yet counted
    await backend.refresh_usage()  # lists the new object (and the old one as a version)
    backend.gate.set()
    await task
    assert (await backend.get_usage()).used == 56 + old
    await backend.refresh_usage()
    assert (await backend.get_usage()).used == 56 + old


class _SlowToEnable(MemoryStorageBackend):
    """Enabling versioning waits for ``gate`` once the store has done it."""

    def __init__(self) -> None:
        super().__init__()
        self.begun, self.gate = asyncio.Event(), asyncio.Event()

    async def _set_versioning(self, enabled: bool) -> None:
        await super()._set_versioning(enabled)
        if enabled:
            self.begun.set()
            await self.gate.wait()


async def test_concurrent_set_versioning_leaves_the_ledger_as_the_store() -> None:
    backend = _SlowToEnable()
    backend.set_quota("", 100)
    assert (await backend.get_usage()).used == 0  # listed: the state is not asked again
    enabling = asyncio.create_task(backend.set_versioning(True))
    await backend.begun.wait()  # enabled in the store, not yet in the ledger
    suspending = asyncio.create_task(backend.set_versioning(False))
    for _ in range(100):  # suspending runs as far as it can
        await asyncio.sleep(0)
    backend.gate.set()
    await asyncio.gather(enabling, suspending)
    await backend.save("k", b"x" * 10)
    await backend.save("k", b"y" * 10)  # suspended: replaces the "null" version
    await backend.save("k", b"z" * 10)
    assert (await backend.get_usage()).used == 10
    await backend.refresh_usage()
    assert (await backend.get_usage()).used == 10
