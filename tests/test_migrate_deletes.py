"""migrate(delete_source=True) while the application writes to the source, or its caller
cancels it: a source object replaced in the instant before migrate deletes it is kept,
never deleted with the version that was moved; a cancelled run leaves nothing partial and
writes or deletes nothing once its caller was told."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    MigrationReport,
    ObjectInfo,
    StorageBackend,
    migrate,
)
from file_storage.backends._write_options import PLAIN

NEW = b"the application's write, just before migrate's delete"


class _WrittenBeforeDelete:
    """A source the application writes each key to once, just before migrate's delete of
    it is carried out (after every look migrate takes at it)."""

    async def land(self, key: str) -> None:
        written: set[str] = self.__dict__.setdefault("written", set())
        if key not in written:
            written.add(key)
            await super()._save(key, NEW, "text/plain", {}, PLAIN)  # type: ignore[misc]

    async def _delete(self, key: str) -> None:
        await self.land(key)
        await super()._delete(key)  # type: ignore[misc]

    async def _delete_expired(self, key: str, listed: ObjectInfo) -> bool:
        await self.land(key)
        gone: bool = await super()._delete_expired(key, listed)  # type: ignore[misc]
        return gone


class MemoryWrittenBeforeDelete(_WrittenBeforeDelete, MemoryStorageBackend):
    pass


class LocalWrittenBeforeDelete(_WrittenBeforeDelete, LocalStorageBackend):
    pass


def source_for(kind: str, tmp_path: Path) -> StorageBackend:
    if kind == "memory":
        return MemoryWrittenBeforeDelete()
    return LocalWrittenBeforeDelete(tmp_path / "src")


@pytest.mark.parametrize("already_there", [False, True], ids=["copied", "skipped"])
@pytest.mark.parametrize("kind", ["memory", "local"])
async def test_a_source_replaced_just_before_its_delete_is_kept(
    kind: str, already_there: bool, tmp_path: Path
) -> None:
    source, dest = source_for(kind, tmp_path), MemoryStorageBackend()
    await source.save("d/a.txt", b"the version moved")
    if already_there:  # moved by an earlier run without delete_source
        await migrate(source, dest)
    report = await migrate(source, dest, delete_source=True)
    assert await source.load("d/a.txt") == NEW  # the only copy of the new version
    assert "changed" in report.failed["d/a.txt"]
    assert (report.copied, report.skipped) == (0, 0)
    # the next run moves the new version
    again = await migrate(source, dest, delete_source=True)
    assert (again.copied, again.failed) == (1, {})
    assert await dest.load("d/a.txt") == NEW
    assert await source.list_files() == []


class CancelsAtLastByte(MemoryStorageBackend):
    """A source that cancels the migration (the caller's task) once the ``nth`` object's
    last byte was read: the copy of it is being written, others may be in flight."""

    def __init__(self, nth: int) -> None:
        super().__init__()
        self.nth, self.reads = nth, 0
        self.task: asyncio.Task[MigrationReport] | None = None

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        async for chunk in super()._stream(key, start, end, chunk_size, if_match):
            yield chunk
        self.reads += 1
        if self.reads == self.nth and self.task is not None:
            self.task.cancel()


@pytest.mark.parametrize("nth", [1, 3, 6])
async def test_a_cancelled_migration_writes_and_deletes_nothing_after_it_ends(
    nth: int, tmp_path: Path
) -> None:
    source, dest = CancelsAtLastByte(nth), LocalStorageBackend(tmp_path / "dst")
    objects = {f"c/{i}.bin": bytes([i]) * (3 * 2**20) for i in range(8)}
    for key, content in objects.items():
        await source.save(key, content)
    source.task = asyncio.ensure_future(migrate(source, dest, concurrency=3, delete_source=True))
    with pytest.raises(asyncio.CancelledError):
        await source.task
    moved, kept = await dest.list_files(), await source.list_files()
    files = on_disk(tmp_path / "dst")
    # every thread a write or delete of it ran in is done (none can be stopped midway)
    await asyncio.get_running_loop().shutdown_default_executor()
    assert (on_disk(tmp_path / "dst"), await source.list_files()) == (files, kept)
    assert set(moved) | set(kept) == set(objects)  # nothing lost
    for key in moved:
        assert (tmp_path / "dst" / key).read_bytes() == objects[key]  # nothing partial
    assert [name for name in files if "tmp-" in name] == []  # no temp file left


def on_disk(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


class ProgressBroke(Exception):
    pass


async def test_a_progress_callback_that_raises_stops_the_run_with_its_error(
    tmp_path: Path,
) -> None:
    source, dest = MemoryStorageBackend(), LocalStorageBackend(tmp_path / "dst")
    objects = {f"p/{i}.bin": bytes([i]) * (2 * 2**20) for i in range(8)}
    for key, content in objects.items():
        await source.save(key, content)
    seen: list[str] = []

    def progress(key: str, outcome: str, report: MigrationReport) -> None:
        seen.append(key)
        if len(seen) == 2:
            raise ProgressBroke(key)

    with pytest.raises(ProgressBroke):
        await migrate(source, dest, concurrency=3, delete_source=True, progress=progress)
    moved, kept = await dest.list_files(), await source.list_files()
    files = on_disk(tmp_path / "dst")
    await asyncio.get_running_loop().shutdown_default_executor()
    assert (on_disk(tmp_path / "dst"), await source.list_files()) == (files, kept)
    assert set(moved) | set(kept) == set(objects)
    assert set(seen) <= set(moved)  # each object reported was moved before the error
    for key in moved:
        assert (tmp_path / "dst" / key).read_bytes() == objects[key]


@pytest.mark.parametrize("kind", ["memory", "local"])
async def test_a_versioned_source_keeps_its_prior_versions_when_moved(
    kind: str, tmp_path: Path
) -> None:
    # only the current version moves; delete_source deletes as delete does: the prior
    # versions stay at the source (docs/migration.md, docs/versioning.md)
    source: StorageBackend = (
        MemoryStorageBackend() if kind == "memory" else LocalStorageBackend(tmp_path / "src")
    )
    await source.set_versioning(True)
    await source.save("v/a.txt", b"version 1")
    await source.save("v/a.txt", b"version 2")
    dest = MemoryStorageBackend()
    report = await migrate(source, dest, delete_source=True)
    assert (report.copied, report.failed) == (1, {})
    assert await dest.load("v/a.txt") == b"version 2"
    assert await source.list_files() == []
    kept = await source.list_versions("v/a.txt")
    assert [v.is_latest for v in kept] == [False, False]
    assert sorted([await source.load("v/a.txt", version_id=v.version_id) for v in kept]) == [
        b"version 1",
        b"version 2",
    ]


async def test_an_async_progress_callback_is_awaited_for_every_object() -> None:
    source, dest = MemoryStorageBackend(), MemoryStorageBackend()
    for i in range(5):
        await source.save(f"a/{i}.txt", b"x")
    seen: list[tuple[str, str]] = []

    async def progress(key: str, outcome: str, report: MigrationReport) -> None:
        await asyncio.sleep(0)  # a slow one holds its worker, not the event loop
        seen.append((key, outcome))

    await migrate(source, dest, concurrency=2, progress=progress)
    assert sorted(seen) == [(f"a/{i}.txt", "copied") for i in range(5)]
