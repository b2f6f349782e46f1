"""A key is an object or a folder, never both, and which check comes first.

A backend that checks the rule (``folder_checks``) refuses a write, copy or move to a key
that is a folder, or lies under an object, with ObjectConflictError (answered 409 by the
FastAPI handlers) naming the operation and that key, and writes nothing. It does so
before anything else the write could fail on: its condition (``overwrite=False``,
``if_match``) and the quota a stream crosses as it is read. So an application sees the
same error on every such backend; S3 does not check the rule at all (the write's
condition then decides there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from file_storage import ObjectConflictError, StorageBackend

pytestmark = pytest.mark.backend_needs("folder_checks")

STALE = '"0123456789abcdef0123456789abcdef"'  # an ETag no object has


async def _blocks(count: int, size: int = 10) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


@pytest.mark.parametrize("key", ["f/a/b", "f/a/b/c"], ids=["under", "deep_under"])
async def test_save_under_an_object_is_a_conflict(backend: StorageBackend, key: str) -> None:
    await backend.save("f/a", b"object")
    with pytest.raises(ObjectConflictError) as caught:
        await backend.save(key, b"x")
    assert (caught.value.operation, caught.value.key) == ("save", key)
    assert await backend.list_files() == ["f/a"]


@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "stream"])
async def test_save_at_a_folder_is_a_conflict(backend: StorageBackend, streamed: bool) -> None:
    await backend.save("f/a/b", b"object")
    with pytest.raises(ObjectConflictError) as caught:
        await backend.save("f/a", _blocks(1) if streamed else b"x")
    assert (caught.value.operation, caught.value.key) == ("save", "f/a")
    assert await backend.list_files() == ["f/a/b"]


@pytest.mark.backend_needs("conditional_writes")
@pytest.mark.parametrize("at_folder", [False, True], ids=["under_object", "at_folder"])
async def test_if_match_write_to_a_clashing_key_is_a_conflict_not_a_failed_condition(
    backend: StorageBackend, at_folder: bool
) -> None:
    # no object can be at the key, so the condition fails too: the clash is named first
    stored, key = ("f/a/b", "f/a") if at_folder else ("f/a", "f/a/b")
    await backend.save(stored, b"object")
    with pytest.raises(ObjectConflictError) as caught:
        await backend.save(key, b"x", if_match=STALE)
    assert (caught.value.operation, caught.value.key) == ("save", key)
    with pytest.raises(ObjectConflictError):
        await backend.save(key, _blocks(2), if_match=STALE)
    assert await backend.list_files() == [stored]


@pytest.mark.backend_needs("conditional_writes")
async def test_create_only_write_to_a_clashing_key_is_a_conflict(backend: StorageBackend) -> None:
    await backend.save("f/a", b"object")
    with pytest.raises(ObjectConflictError) as caught:
        await backend.save("f/a/b", b"x", overwrite=False)
    assert (caught.value.operation, caught.value.key) == ("save", "f/a/b")
    assert await backend.list_files() == ["f/a"]


@pytest.mark.parametrize("at_folder", [False, True], ids=["under_object", "at_folder"])
async def test_stream_to_a_clashing_key_over_quota_is_a_conflict(
    backend: StorageBackend, at_folder: bool
) -> None:
    # the stream would cross the quota as it is read: the clash is found before reading
    stored, key = ("f/a/b", "f/a") if at_folder else ("f/a", "f/a/b")
    await backend.save(stored, b"object")
    backend.set_quota("f", 50)
    with pytest.raises(ObjectConflictError) as caught:
        await backend.save(key, _blocks(10))
    assert (caught.value.operation, caught.value.key) == ("save", key)
    assert await backend.list_files() == [stored]
    assert (await backend.get_usage("f")).used == len(b"object")


async def test_copy_to_a_clashing_key_is_a_conflict_naming_the_destination(
    backend: StorageBackend,
) -> None:
    await backend.save("f/a", b"object")
    await backend.save("g.txt", b"source")
    with pytest.raises(ObjectConflictError) as caught:
        await backend.copy("g.txt", "f/a/b")
    assert (caught.value.operation, caught.value.key) == ("copy", "f/a/b")
    with pytest.raises(ObjectConflictError) as moved:
        await backend.move("g.txt", "f/a/b")
    assert (moved.value.operation, moved.value.key) == ("move", "f/a/b")
    assert await backend.list_files() == ["f/a", "g.txt"]


async def test_copy_or_move_onto_a_folder_is_a_conflict_naming_the_destination(
    backend: StorageBackend,
) -> None:
    await backend.save("f/a/b", b"x")
    await backend.save("g.txt", b"source")
    with pytest.raises(ObjectConflictError) as caught:
        await backend.copy("g.txt", "f/a")
    assert (caught.value.operation, caught.value.key) == ("copy", "f/a")  # the key that clashes
    with pytest.raises(ObjectConflictError) as moved:
        await backend.move("g.txt", "f/a")
    assert (moved.value.operation, moved.value.key) == ("move", "f/a")
    assert await backend.list_files() == ["f/a/b", "g.txt"]
    assert await backend.load("g.txt") == b"source"
