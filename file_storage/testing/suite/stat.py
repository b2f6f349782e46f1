"""exists, stat, get_size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from file_storage import ObjectInfo, ObjectNotFoundError, StorageBackend


async def test_exists(backend: StorageBackend) -> None:
    assert not await backend.exists("a/b.txt")
    await backend.save("a/b.txt", b"x")
    assert await backend.exists("a/b.txt")
    assert not await backend.exists("a")  # a folder is not an object


async def test_stat_fields(backend: StorageBackend) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    await backend.save("a/b.json", b"{}", metadata={"owner": "u1"})
    info = await backend.stat("a/b.json")
    assert isinstance(info, ObjectInfo)
    assert info.key == "a/b.json"
    assert info.size == 2
    assert info.content_type == "application/json"
    assert dict(info.metadata) == {"owner": "u1"}
    assert isinstance(info.etag, str)
    assert info.etag
    assert info.last_modified.tzinfo is not None
    assert before <= info.last_modified <= datetime.now(UTC) + timedelta(seconds=5)


async def test_etag_changes_when_content_changes(backend: StorageBackend) -> None:
    await backend.save("e.bin", b"one")
    first = (await backend.stat("e.bin")).etag
    await backend.save("e.bin", b"two!")
    assert (await backend.stat("e.bin")).etag != first


async def test_get_size(backend: StorageBackend) -> None:
    await backend.save("s.bin", b"x" * 1234)
    assert await backend.get_size("s.bin") == 1234


@pytest.mark.parametrize("operation", ["stat", "get_size"])
async def test_missing_raises_object_not_found(backend: StorageBackend, operation: str) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        await getattr(backend, operation)("nope/x.txt")
    assert (info.value.operation, info.value.key) == (operation, "nope/x.txt")
