"""migrate's "written after the source's last change" rule under coarse clocks: S3 gives
`last_modified` in whole seconds (HFS+ too; FAT and exFAT in two), so a copy made within
the second in which its source was then rewritten looks newer than the rewrite. Such a
copy is never kept on its time alone."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path

from file_storage import LocalStorageBackend, MemoryStorageBackend, ObjectInfo, migrate
from file_storage.backends._core import BackendCore


def whole_second(info: ObjectInfo) -> ObjectInfo:
    return dataclasses.replace(info, last_modified=info.last_modified.replace(microsecond=0))


class WholeSeconds(MemoryStorageBackend):
    """A source that tells times in whole seconds, as S3 does (and tells a version from
    another as S3 does: by a stat of the key, before the delete)."""

    _delete_expired = BackendCore._delete_expired

    async def _stat(self, key: str) -> ObjectInfo:
        return whole_second(await super()._stat(key))

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in super()._iter_files(prefix):
            yield whole_second(info)


async def test_a_copy_made_in_the_second_its_source_was_rewritten_is_not_kept(
    tmp_path: Path,
) -> None:
    source, dest = WholeSeconds(), LocalStorageBackend(tmp_path / "dst")
    await source.save("k/a.txt", b"version 1")
    assert (await migrate(source, dest)).copied == 1
    await source.save("k/a.txt", b"version 2, written later in the same second")
    # the copy of version 1 was made half a second into that second, before the rewrite
    second = (await source.stat("k/a.txt")).last_modified.timestamp()
    os.utime(tmp_path / "dst" / "k/a.txt", (second + 0.5, second + 0.5))

    report = await migrate(source, dest, delete_source=True)

    assert await dest.load("k/a.txt") == b"version 2, written later in the same second"
    assert (report.copied, report.skipped, report.failed) == (1, 0, {})
    assert await source.list_files() == []


async def test_a_copy_checked_at_once_is_still_kept_by_its_bytes(tmp_path: Path) -> None:
    # local to local: neither side has an MD5; a re-run right after the copy reads and
    # hashes both rather than copying again
    source = LocalStorageBackend(tmp_path / "src")
    dest = LocalStorageBackend(tmp_path / "dst")
    await source.save("k/a.txt", b"moved", metadata={"owner": "u1"})
    assert (await migrate(source, dest)).copied == 1
    again = await migrate(source, dest, delete_source=True)
    assert (again.copied, again.skipped, again.failed) == (0, 1, {})
    assert await dest.load("k/a.txt") == b"moved"
