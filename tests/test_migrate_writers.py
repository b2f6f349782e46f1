"""migrate while the application writes: what it writes at the destination right after
a copy landed is never deleted by migrate's own clean-up of that copy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    S3StorageBackend,
    StorageBackend,
    migrate,
)
from file_storage.backends._write_options import PLAIN, WriteOptions
from tests.s3util import SERVER

APP = b"the application's write, just after the copy landed"


class _WrittenAfterCopy:
    """A destination the application writes each key to once, just after migrate's copy
    of it landed and before migrate looks at it again (writes go to the new store during
    a move, as docs/migration.md's ``Moving`` does); ``replace_source`` also replaces the
    source object in that instant."""

    replace_source: StorageBackend | None = None

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
        options: WriteOptions = PLAIN,
    ) -> str:
        etag: str = await super()._save(key, body, content_type, metadata, options)  # type: ignore[misc]
        written: set[str] = self.__dict__.setdefault("written", set())
        if key not in written:
            written.add(key)
            if self.replace_source is not None:
                await self.replace_source.save(key, b"version 2 at the source")
            await super()._save(key, APP, "text/plain", {}, PLAIN)  # type: ignore[misc]
        return etag  # the copy's own ETag: the write that landed was migrate's


class MemoryWrittenAfterCopy(_WrittenAfterCopy, MemoryStorageBackend):
    pass


class LocalWrittenAfterCopy(_WrittenAfterCopy, LocalStorageBackend):
    pass


def destination(kind: str, tmp_path: Path) -> StorageBackend:
    if kind == "memory":
        return MemoryWrittenAfterCopy()
    return LocalWrittenAfterCopy(tmp_path / "dest")


@pytest.mark.parametrize("kind", ["memory", "local"])
async def test_a_write_at_the_destination_just_after_the_copy_landed_is_kept(
    kind: str, tmp_path: Path
) -> None:
    source, dest = MemoryStorageBackend(), destination(kind, tmp_path)
    await source.save("w/a.txt", b"the old version", metadata={"owner": "u1"})
    report = await migrate(source, dest, delete_source=True)
    # the newer write at the destination wins, as it does when it lands before the copy
    assert await dest.load("w/a.txt") == APP
    assert (report.copied, report.skipped, report.failed) == (0, 1, {})
    assert await source.list_files() == []


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("kind", ["memory", "local"])
async def test_a_copy_failed_for_a_changed_source_never_takes_a_newer_write_with_it(
    kind: str, verify: bool, tmp_path: Path
) -> None:
    source, dest = MemoryStorageBackend(), destination(kind, tmp_path)
    dest.replace_source = source  # type: ignore[attr-defined]
    await source.save("w/a.txt", b"the old version")
    report = await migrate(source, dest, verify=verify)
    assert "the source changed" in report.failed["w/a.txt"]
    assert await dest.load("w/a.txt") == APP  # not migrate's to remove
    assert await source.load("w/a.txt") == b"version 2 at the source"


class S3WrittenAfterCopy(_WrittenAfterCopy, S3StorageBackend):
    pass


@pytest.mark.s3
@pytest.mark.parametrize("size", [15, 6 * 2**20], ids=["one-put", "in-parts"])
async def test_a_write_at_an_s3_destination_just_after_the_copy_landed_is_kept(
    size: int, moto_endpoint: str, s3_bucket: str
) -> None:
    # the copy's ETag as S3 answered the PUT or the completion, against the stat's
    dest = S3WrittenAfterCopy(
        s3_bucket,
        endpoint_url=moto_endpoint,
        access_key_id=SERVER.access_key_id,
        secret_access_key=SERVER.secret_access_key,
        addressing_style="path",
        multipart_threshold=5 * 2**20,
        multipart_chunk_size=5 * 2**20,
    )
    async with dest:
        source = MemoryStorageBackend()
        await source.save("w/a.bin", b"o".ljust(size, b"."), metadata={"owner": "u1"})
        report = await migrate(source, dest, delete_source=True)
        assert await dest.load("w/a.bin") == APP
        assert (report.copied, report.skipped, report.failed) == (0, 1, {})
        assert await source.list_files() == []
