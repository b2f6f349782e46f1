"""move on the GCS and Azure backends is a copy then a delete: the delete is conditional
on the source being the object the move found (GCS: its generation; Azure: its ETag),
so a write landing on the source between the copy and the delete is never lost."""

from __future__ import annotations

import pytest

from file_storage import PreconditionFailedError, StorageBackend
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
