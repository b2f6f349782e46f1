"""migrate into and out of the backend under test: a quota there stops each object that
does not fit with its own failure, never an overshoot, and a re-run with room moves the
rest; moved out with delete_source, each object's source is deleted."""

from __future__ import annotations

from file_storage import MemoryStorageBackend, StorageBackend, migrate

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
