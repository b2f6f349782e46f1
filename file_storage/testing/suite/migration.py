"""migrate into and out of the backend under test: a quota there stops each object that
does not fit with its own failure, never an overshoot, and a re-run with room moves the
rest; moved out with delete_source, each object's source is deleted, and never a write
landing on it after migrate's last look; a write landing after migrate looked at it and
before it read it is never copied."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from file_storage import MemoryStorageBackend, ObjectInfo, StorageBackend, migrate

SIZE = 2000
COUNT = 8


async def test_migrate_into_a_quota_fails_each_object_over_it_and_never_overshoots(
    backend: StorageBackend,
) -> None:
    backend.set_quota("", 5 * SIZE + SIZE // 2)  # room for five objects, not six
    source = MemoryStorageBackend()
    objects = {f"q/{i}.bin": bytes([i]) * SIZE for i in range(COUNT)}
    for key, content in objects.items():
        await source.save(key, content)

    report = await migrate(source, backend, concurrency=COUNT, delete_source=True)

    moved = await backend.list_files()
    assert (report.copied, len(moved)) == (5, 5)
    assert sorted(report.failed) == sorted(set(objects) - set(moved))  # every other one
    assert all("quota" in reason for reason in report.failed.values())
    assert (await backend.get_usage()).used == 5 * SIZE
    assert await backend.load_many(moved) == {key: objects[key] for key in moved}
    assert await source.list_files() == sorted(report.failed)  # their sources kept

    backend.set_quota("", None)
    again = await migrate(source, backend, delete_source=True)
    assert (again.copied, again.failed) == (COUNT - 5, {})
    assert await backend.load_many(objects) == objects
    assert await source.list_files() == []


async def test_migrate_from_the_backend_deletes_each_source_moved_and_only_that(
    backend: StorageBackend,
) -> None:
    # delete_source deletes the version moved, told as the backend tells versions
    objects = {f"m/{i}.txt": f"object {i}".encode() for i in range(3)}
    for key, content in objects.items():
        await backend.save(key, content, metadata={"owner": "u1"})
    dest = MemoryStorageBackend()
    report = await migrate(backend, dest, delete_source=True)
    assert (report.copied, report.failed) == (3, {})
    assert await backend.list_files() == []
    assert await dest.load_many(objects) == objects


@pytest.mark.backend_needs("exact_moves")
async def test_migrate_from_the_backend_keeps_a_source_rewritten_after_its_last_look(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rewrite lands once the copy is verified, after migrate's last look at the
    # source (the stat before its delete, where it takes one) and before the delete:
    # delete_source must not take it, and the object is failed, for the next run. A
    # backend comparing and deleting in one step looks at nothing: it simply moves
    await backend.save("m/a.txt", b"old")
    dest = MemoryStorageBackend()
    delete_looked_at = backend._delete_looked_at
    rewritten = False

    async def rewritten_then_deleted(key: str, current: ObjectInfo) -> bool:
        nonlocal rewritten
        if key == "m/a.txt" and not rewritten:
            rewritten = True
            await backend.save(key, b"new")
        return await delete_looked_at(key, current)

    monkeypatch.setattr(backend, "_delete_looked_at", rewritten_then_deleted)
    report = await migrate(backend, dest, delete_source=True)
    monkeypatch.undo()
    assert await dest.load("m/a.txt") == b"old"
    if rewritten:
        assert list(report.failed) == ["m/a.txt"]
        assert await backend.load("m/a.txt") == b"new"
    else:
        assert (report.copied, report.failed, await backend.list_files()) == (1, {}, [])


async def test_migrate_from_the_backend_never_copies_a_source_rewritten_before_its_read(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rewrite lands after migrate looked at the source (the stat its copy starts
    # with) and before the copy read it: the read is pinned to the version looked at,
    # so nothing lands at the destination and the object is failed, for the next run
    # (a move's copy-after-look gap, which migrate between backends does not have)
    await backend.save("m/a.txt", b"old")
    dest = MemoryStorageBackend()
    stream = backend._stream
    rewritten = False

    async def rewritten_then_read(
        key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        nonlocal rewritten
        if key == "m/a.txt" and not rewritten:
            rewritten = True
            await backend.save(key, b"new")
        async for chunk in stream(key, start, end, chunk_size, if_match):
            yield chunk

    monkeypatch.setattr(backend, "_stream", rewritten_then_read)
    report = await migrate(backend, dest, delete_source=True)
    monkeypatch.undo()
    assert rewritten
    assert (report.copied, list(report.failed)) == (0, ["m/a.txt"])
    assert await dest.list_files() == []
    assert await backend.list_files("m") == ["m/a.txt"]
    assert await backend.load("m/a.txt") == b"new"
