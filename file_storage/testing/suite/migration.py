"""migrate into the backend under test: a quota there stops each object that does not fit
with its own failure, never an overshoot, and a re-run with room moves the rest."""

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
