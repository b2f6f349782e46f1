"""What the purge races share: a ``"null"`` version under a kept one, and a hook that runs
another task between the listing purge_versions makes and its deletes (the window a slow
listing of many versions leaves open). Used by ``version_races`` and by backend tests of
the same window (tests/backends/test_s3_version_purge.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from file_storage import ObjectVersion, StorageBackend

# loop passes given to the other task: no clock, enough for a backend whose writes run in
# threads to land, and a second at most where the other task waits for the purge
PASSES = 20_000


async def null_then_kept(backend: StorageBackend) -> None:
    """``k.txt``: a prior ``"null"`` version (b"null") under the latest with an id (b"kept");
    versioning is on (again) at the end."""
    await backend.set_versioning(True)  # S3: "suspended" is only a state of a versioned bucket
    await backend.set_versioning(False)
    await backend.save("k.txt", b"null")
    await backend.set_versioning(True)
    await backend.save("k.txt", b"kept")


async def delete_suspended(backend: StorageBackend) -> None:
    """The other task: ``k.txt`` deleted with versioning suspended, which replaces its
    ``"null"`` version (S3: by a ``"null"`` delete marker)."""
    await backend.set_versioning(False)
    await backend.delete("k.txt")


async def write_suspended(backend: StorageBackend) -> None:
    """The other task: ``k.txt`` written with versioning suspended (a new ``"null"``)."""
    await backend.set_versioning(False)
    await backend.save("k.txt", b"written after the listing")


async def write_suspended_then_versioned(backend: StorageBackend) -> None:
    """The other task: :func:`write_suspended`, then versioning on and ``k.txt`` written
    again, so the new ``"null"`` is a prior version."""
    await write_suspended(backend)
    await backend.set_versioning(True)
    await backend.save("k.txt", b"newest")


async def purge_racing(
    backend: StorageBackend,
    monkeypatch: pytest.MonkeyPatch,
    other: Callable[[StorageBackend], Awaitable[None]],
    *,
    passes: int | None = PASSES,
) -> None:
    """``purge_versions("k.txt", keep=1)`` with ``other(backend)`` started between its
    listing and its deletes (:func:`after_the_listing`); it has ended on return."""
    started = after_the_listing(backend, monkeypatch, lambda: other(backend), passes=passes)
    await backend.purge_versions("k.txt", keep=1)
    assert started, "the purge never listed the versions"
    await started[0]


def after_the_listing(
    backend: StorageBackend,
    monkeypatch: pytest.MonkeyPatch,
    other: Callable[[], Awaitable[None]],
    *,
    passes: int | None = PASSES,
) -> list[asyncio.Task[None]]:
    """Start ``other`` once the purge has listed the versions, and let it run before the
    deletes; the task is returned in the list (to be awaited after the purge).

    ``passes``: how many loop passes the other task gets, for a backend that may hold the
    key through the purge (a ledger under a quota), where the task waits for the purge;
    ``None``: it is waited for to its end (a backend known not to hold the key).
    """
    listing = backend._list_versions
    started: list[asyncio.Task[None]] = []

    async def then_the_other_task(key: str) -> list[ObjectVersion]:
        out = await listing(key)
        monkeypatch.undo()
        task = asyncio.ensure_future(other())
        started.append(task)
        if passes is None:
            await task
            return out
        # bounded loop passes, no clock
        for _ in range(passes):
            if task.done():
                break
            await asyncio.sleep(0)
        return out

    monkeypatch.setattr(backend, "_list_versions", then_the_other_task)
    return started
