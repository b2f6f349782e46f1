"""A key is an object or a folder, never both (checked on memory and local; S3 does not).

A clash raises ObjectConflictError (answered 409 by the FastAPI handlers) naming the
operation and the key, and writes nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from file_storage import ObjectConflictError, StorageBackend


@pytest.fixture(params=["memory", "local"])
def checked_backend(request: pytest.FixtureRequest) -> StorageBackend:
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result


async def test_object_under_an_object_is_refused(checked_backend: StorageBackend) -> None:
    await checked_backend.save("a", b"object")
    with pytest.raises(ObjectConflictError) as info:
        await checked_backend.save("a/b", b"x")
    assert (info.value.operation, info.value.key) == ("save", "a/b")
    assert await checked_backend.list_files() == ["a"]


async def test_object_deep_under_an_object_is_refused(checked_backend: StorageBackend) -> None:
    await checked_backend.save("a", b"object")
    with pytest.raises(ObjectConflictError) as info:
        await checked_backend.save("a/b/c", b"x")
    assert (info.value.operation, info.value.key) == ("save", "a/b/c")
    assert await checked_backend.list_files() == ["a"]


async def test_object_at_a_folder_is_refused(checked_backend: StorageBackend) -> None:
    await checked_backend.save("a/b", b"x")
    with pytest.raises(ObjectConflictError) as info:
        await checked_backend.save("a", b"object")
    assert (info.value.operation, info.value.key) == ("save", "a")
    assert await checked_backend.list_files() == ["a/b"]


async def test_streamed_object_at_a_folder_is_refused(checked_backend: StorageBackend) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"object"

    await checked_backend.save("a/b", b"x")
    with pytest.raises(ObjectConflictError) as info:
        await checked_backend.save("a", body())
    assert (info.value.operation, info.value.key) == ("save", "a")
    assert await checked_backend.list_files() == ["a/b"]


async def test_copy_onto_a_folder_is_refused(checked_backend: StorageBackend) -> None:
    await checked_backend.save("a/b", b"x")
    await checked_backend.save("c", b"y")
    with pytest.raises(ObjectConflictError) as info:
        await checked_backend.copy("c", "a")
    assert (info.value.operation, info.value.key) == ("copy", "a")  # the key that clashes
    assert await checked_backend.list_files() == ["a/b", "c"]


async def test_move_onto_a_folder_is_refused(checked_backend: StorageBackend) -> None:
    await checked_backend.save("a/b", b"x")
    await checked_backend.save("c", b"y")
    with pytest.raises(ObjectConflictError) as info:
        await checked_backend.move("c", "a")
    assert (info.value.operation, info.value.key) == ("move", "a")
    assert await checked_backend.list_files() == ["a/b", "c"]
    assert await checked_backend.load("c") == b"y"
