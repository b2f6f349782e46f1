"""move on the GCS and Azure backends is a copy then a delete: the delete is conditional
on the source being the object the move found (GCS: its generation; Azure: its ETag),
so a write landing on the source between the copy and the delete is never lost."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from file_storage import PreconditionFailedError, StorageBackend
from file_storage.backends._obstore._conditional import Outcome
from file_storage.backends._write_options import WriteOptions


async def test_move_keeps_a_source_rewritten_after_its_copy(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another writer replaces the source once the copy is stored: the move's delete
    # must not take the new bytes with it
    await cloud.save("src.txt", b"old")
    copy = cloud._copy

    async def copy_then_rewrite(src: str, dst: str, options: WriteOptions | None = None) -> object:
        etag = await (copy(src, dst) if options is None else copy(src, dst, options))
        await cloud.save("src.txt", b"new")
        return etag

    monkeypatch.setattr(cloud, "_copy", copy_then_rewrite)
    with pytest.raises(PreconditionFailedError) as info:
        await cloud.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert (info.value.operation, info.value.key) == ("move", "src.txt")
    assert await cloud.load("src.txt") == b"new"
    assert await cloud.load("dst.txt") == b"old"


async def test_move_keeps_a_source_rewritten_before_its_copy(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rewrite lands after the move looked at the source and before the copy: the
    # copy takes the new bytes, and the source, no longer what the move found, stays
    await cloud.save("src.txt", b"old")
    copy = cloud._copy

    async def rewrite_then_copy(src: str, dst: str, options: WriteOptions | None = None) -> object:
        await cloud.save("src.txt", b"new")
        return await (copy(src, dst) if options is None else copy(src, dst, options))

    monkeypatch.setattr(cloud, "_copy", rewrite_then_copy)
    with pytest.raises(PreconditionFailedError):
        await cloud.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert await cloud.load("src.txt") == b"new"
    assert await cloud.load("dst.txt") == b"new"


async def test_move_of_a_source_deleted_after_its_copy_ends_with_the_copy(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another caller deleted the source meanwhile: nothing is lost, the move is done
    await cloud.save("src.txt", b"old")
    copy = cloud._copy

    async def copy_then_delete(src: str, dst: str, options: WriteOptions | None = None) -> object:
        etag = await (copy(src, dst) if options is None else copy(src, dst, options))
        await cloud.delete("src.txt")
        return etag

    monkeypatch.setattr(cloud, "_copy", copy_then_delete)
    assert await cloud.move("src.txt", "dst.txt") == "dst.txt"
    monkeypatch.undo()
    assert await cloud.list_files() == ["dst.txt"]
    assert await cloud.load("dst.txt") == b"old"


async def test_a_move_cancelled_during_its_conditional_delete_ends_it_first(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the DELETE is under way when the caller is cancelled: the cancellation waits for
    # it, so that what the caller is told (cancelled, the source gone) holds afterwards
    from file_storage.backends._obstore import _backend

    await cloud.save("src.txt", b"old")
    send = _backend.send_delete
    started, go = asyncio.Event(), asyncio.Event()

    async def held_send(url: str, headers: Mapping[str, str], kind: str) -> Outcome:
        started.set()
        await go.wait()
        return await send(url, headers, kind)

    monkeypatch.setattr(_backend, "send_delete", held_send)
    task = asyncio.create_task(cloud.move("src.txt", "dst.txt"))
    await started.wait()
    task.cancel()
    await asyncio.sleep(0)  # one pass of the loop: the move has the cancellation, waits on
    assert not task.done()
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    assert await cloud.list_files() == ["dst.txt"]
