"""A key is an object or a folder, never both (checked on memory and local; S3 does not)."""

from __future__ import annotations

import pytest

from file_storage import StorageBackend, StorageError


@pytest.fixture(params=["memory", "local"])
def checked_backend(request: pytest.FixtureRequest) -> StorageBackend:
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result


async def test_object_under_an_object_is_refused(checked_backend: StorageBackend) -> None:
    await checked_backend.save("a", b"object")
    with pytest.raises(StorageError) as info:
        await checked_backend.save("a/b", b"x")
    assert (info.value.operation, info.value.key) == ("save", "a/b")
    assert await checked_backend.list_files() == ["a"]


async def test_object_at_a_folder_is_refused(checked_backend: StorageBackend) -> None:
    await checked_backend.save("a/b", b"x")
    with pytest.raises(StorageError):
        await checked_backend.save("a", b"object")
    assert await checked_backend.list_files() == ["a/b"]


async def test_copy_onto_a_folder_is_refused(checked_backend: StorageBackend) -> None:
    await checked_backend.save("a/b", b"x")
    await checked_backend.save("c", b"y")
    with pytest.raises(StorageError):
        await checked_backend.copy("c", "a")
    with pytest.raises(StorageError):
        await checked_backend.move("c", "a")
    assert await checked_backend.list_files() == ["a/b", "c"]
