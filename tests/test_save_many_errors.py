"""A cancelled save_many ends after its saves."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend
from file_storage.backends.local import _backend as local_backend
from file_storage.backends.local._io import IO_BATCH


class _SourceDown(Exception):
    """What the caller's own content stream raises."""


async def test_save_many_cancelled_twice_ends_after_its_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cancelled again while it waits for its saves' clean-up (an asyncio.timeout, then a
    # shutdown): save_many must still wait for each save's end, so nothing of them is
    # left or lands after its caller was told of the cancellation
    entered, release = threading.Event(), threading.Event()
    write_all = local_backend.write_all

    def stalled(fd: int, chunks: list[bytes]) -> None:
        entered.set()
        release.wait(60)  # a slow disk; set by the test once it looked
        write_all(fd, chunks)

    monkeypatch.setattr(local_backend, "write_all", stalled)

    async def body() -> AsyncIterator[bytes]:
        yield b"b" * IO_BATCH  # handed to a thread while the next chunk comes
        await asyncio.Event().wait()
        yield b""

    def items() -> Iterator[tuple[str, bytes | AsyncIterator[bytes]]]:
        yield "big.bin", body()

    backend = LocalStorageBackend(tmp_path / "s")
    task = asyncio.create_task(backend.save_many(items()))
    assert await asyncio.to_thread(entered.wait, 60)
    for _ in range(2):
        task.cancel()
        for _ in range(20):  # loop passes: each cancel reaches save_many's wait
            await asyncio.sleep(0)
    try:
        assert not task.done()  # its save still writes in a thread
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [p.name for p in (tmp_path / "s").rglob("*") if p.is_file()] == []
    await backend.aclose()
