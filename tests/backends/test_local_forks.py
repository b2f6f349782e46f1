"""The local backend in a process forked after its parent used it (``multiprocessing``
with ``fork``, a pre-forking server): the child has none of the parent's threads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from file_storage import LocalStorageBackend
from tests.forks import forked, in_child


async def chunks() -> AsyncIterator[bytes]:
    for _ in range(3):
        yield b"x" * 10


def test_a_child_forked_after_its_parent_streamed_streams_too(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path)

    async def use(key: str) -> list[str]:
        await backend.save(key, chunks())  # streamed: the backend's own I/O threads
        assert b"".join([c async for c in backend.stream(key)]) == b"x" * 30
        return sorted(await backend.list_files())

    assert asyncio.run(use("parent")) == ["parent"]
    assert forked(in_child(lambda: asyncio.run(use("child"))))() == ["child", "parent"]
    assert asyncio.run(use("parent-again")) == ["child", "parent", "parent-again"]
