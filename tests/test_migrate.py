"""migrate(): any backend to any, resumable, verified, one failure never stops the others."""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import (
    InvalidKeyError,
    LocalStorageBackend,
    MemoryStorageBackend,
    MigrationReport,
    ObjectEvent,
    ObjectInfo,
    S3StorageBackend,
    StorageBackend,
    StorageConfigError,
    migrate,
)
from file_storage.backends._core import BackendCore
from file_storage.backends._write_options import PLAIN, WriteOptions

META = {"owner": "u1", "kind": "avatar"}


async def fill(backend: StorageBackend, count: int = 20, folder: str = "data") -> dict[str, bytes]:
    objects = {f"{folder}/{i:03}.txt": f"object {i} ".encode() * (i + 1) for i in range(count)}
    for key, content in objects.items():
        await backend.save(key, content, metadata=META)
    return objects


def touch(root: Path, key: str, seconds_from_now: float) -> None:
    """Set a local object's mtime (its last_modified) relative to now."""
    when = time.time() + seconds_from_now
    os.utime(root / key, (when, when))


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    return tmp_path / "local"


@pytest.fixture
def local(local_root: Path) -> LocalStorageBackend:
    return LocalStorageBackend(local_root)


@pytest.mark.parametrize(("src", "dst"), [("memory", "local"), ("local", "memory")])
async def test_migrate_copies_bytes_content_type_and_metadata(
    src: str, dst: str, local: LocalStorageBackend
) -> None:
    backends: dict[str, StorageBackend] = {"memory": MemoryStorageBackend(), "local": local}
    source, dest = backends[src], backends[dst]
    objects = await fill(source)
    await source.save("data/pic", b"\x89PNG", content_type="image/png")
    report = await migrate(source, dest)
    assert report == MigrationReport(
        copied=21, skipped=0, failed={}, bytes=sum(map(len, objects.values())) + 4
    )
    for key, content in objects.items():
        assert await dest.load(key) == content
        info = await dest.stat(key)
        assert (info.content_type, dict(info.metadata)) == ("text/plain", META)
    assert (await dest.stat("data/pic")).content_type == "image/png"


async def test_migrate_local_to_s3_then_rerun_copies_nothing(
    local: LocalStorageBackend, s3_backend: StorageBackend
) -> None:
    objects = await fill(local, 30)
    first = await migrate(local, s3_backend, concurrency=4)
    assert (first.copied, first.skipped, first.failed) == (30, 0, {})
    again = await migrate(local, s3_backend, concurrency=4)
    assert again == MigrationReport(copied=0, skipped=30, failed={}, bytes=0)
    for key, content in objects.items():
        assert await s3_backend.load(key) == content
        assert dict((await s3_backend.stat(key)).metadata) == META


async def test_migrate_moves_only_the_prefix(local: LocalStorageBackend) -> None:
    dest = MemoryStorageBackend()
    await fill(local, 3, "users/u1")
    await fill(local, 3, "users/u10")
    report = await migrate(local, dest, "users/u1")
    assert report.copied == 3
    assert await dest.list_files("") == await local.list_files("users/u1")


async def test_migrate_skips_an_identical_older_copy_by_checksum(
    local: LocalStorageBackend, local_root: Path
) -> None:
    # dest (local) older than the source (memory): kept only because the MD5s agree
    # (written first: a touched local file is another version, without its metadata)
    source = MemoryStorageBackend()
    await local.save("k/same", b"same bytes", metadata=META)
    await local.save("k/other", b"old  bytes")  # same size, other content
    await source.save("k/same", b"same bytes", metadata=META)
    await source.save("k/other", b"new  bytes")
    report = await migrate(source, local)
    assert (report.copied, report.skipped, report.failed) == (1, 1, {})
    assert await local.load("k/other") == b"new  bytes"


@pytest.mark.parametrize("dst", ["memory", "local"])
async def test_an_older_copy_with_the_same_bytes_but_other_metadata_is_copied_again(
    local: LocalStorageBackend, dst: str
) -> None:
    # the source was saved again with the same bytes and new metadata after an earlier
    # run: the older copy at dest has the right MD5 but not the object's description,
    # so keeping it (and deleting the source with delete_source) would lose that
    source = MemoryStorageBackend()
    dest = MemoryStorageBackend() if dst == "memory" else local
    await dest.save("k/a.csv", b"same bytes", content_type="text/plain")
    await dest.save("k/b.csv", b"same bytes", content_type="text/csv", metadata={"v": "1"})
    await dest.save("k/c.csv", b"same bytes", content_type="text/csv", metadata=META)
    await source.save("k/a.csv", b"same bytes", content_type="text/csv", metadata=META)
    await source.save("k/b.csv", b"same bytes", content_type="text/csv", metadata={"v": "2"})
    await source.save("k/c.csv", b"same bytes", content_type="text/csv", metadata=META)
    report = await migrate(source, dest, delete_source=True)
    assert (report.copied, report.skipped, report.failed) == (2, 1, {})
    a, b = await dest.stat("k/a.csv"), await dest.stat("k/b.csv")
    assert (a.content_type, a.metadata, b.metadata) == ("text/csv", META, {"v": "2"})
    assert await source.list_files() == []


async def test_migrate_recopies_a_source_changed_since_the_last_run(
    local: LocalStorageBackend, local_root: Path
) -> None:
    dest = MemoryStorageBackend()
    await local.save("c/a.txt", b"version 1")
    await migrate(local, dest)
    await local.save("c/a.txt", b"version 2")
    touch(local_root, "c/a.txt", 3600)  # written after the copy, whatever the clock's grain
    report = await migrate(local, dest)
    assert (report.copied, report.skipped) == (1, 0)
    assert await dest.load("c/a.txt") == b"version 2"


async def test_migrate_keeps_a_newer_write_at_the_destination(
    local: LocalStorageBackend, local_root: Path
) -> None:
    # writes already go to dest: the app's newer version must not be overwritten
    source = MemoryStorageBackend()
    await source.save("n/a.txt", b"stale")
    await local.save("n/a.txt", b"the app's newer write")
    touch(local_root, "n/a.txt", 3600)
    report = await migrate(source, local)
    assert (report.copied, report.skipped) == (0, 1)
    assert await local.load("n/a.txt") == b"the app's newer write"


async def test_one_failed_object_never_stops_the_others(local: LocalStorageBackend) -> None:
    source = MemoryStorageBackend()
    await fill(source, 10, "small")
    await source.save("big/huge.bin", b"x" * 1000)
    local.set_quota("big", 100)
    report = await migrate(source, local, concurrency=2)
    assert report.copied == 10
    assert list(report.failed) == ["big/huge.bin"]
    assert "quota" in report.failed["big/huge.bin"]
    assert await local.list_files("big") == []


class LyingSizes(MemoryStorageBackend):
    """A destination whose stat reports one byte too many for keys under bad/."""

    async def _stat(self, key: str) -> ObjectInfo:
        info = await super()._stat(key)
        if key.startswith("bad/"):
            return ObjectInfo(info.key, info.size + 1, info.last_modified, None, "x/y", {})
        return info


async def test_verify_failure_is_reported_and_keeps_the_source() -> None:
    source, dest = MemoryStorageBackend(), LyingSizes()
    await source.save("bad/a", b"aaa")
    await source.save("good/b", b"bbb")
    report = await migrate(source, dest, delete_source=True)
    assert report.copied == 1
    assert "verify 'bad/a'" in report.failed["bad/a"]
    assert await source.list_files("") == ["bad/a"]  # the unverified object stays


async def test_a_copy_that_failed_verify_is_not_trusted_by_the_next_run() -> None:
    source, dest = MemoryStorageBackend(), LyingSizes()
    await source.save("bad/a", b"aaa")
    first = await migrate(source, dest, delete_source=True)
    assert list(first.failed) == ["bad/a"]
    # run again: the copy left by the failed run is newer than the source, but it never
    # verified, so it is neither kept as it is nor a reason to delete the source
    again = await migrate(source, dest, delete_source=True)
    assert (again.skipped, list(again.failed)) == (0, ["bad/a"])
    assert await source.load("bad/a") == b"aaa"


class SourceBesideDest(MemoryStorageBackend):
    """A source that also acts on ``dest`` while migrate reads it (the application's
    writes go on during a migration)."""

    def __init__(self, dest: StorageBackend) -> None:
        super().__init__()
        self.dest = dest


class DeletedWhileRead(SourceBesideDest):
    """A source whose object the application deletes while migrate reads it, from both
    backends as docs/migration.md's ``Moving`` does: after the last byte was read (an
    open file reads on after an unlink), before the copy lands at ``dest``."""

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        async for chunk in super()._stream(key, start, end, chunk_size, if_match):
            yield chunk
        await self.dest.delete(key)
        await self.delete(key)


async def test_an_object_deleted_during_its_copy_is_not_brought_back() -> None:
    dest = MemoryStorageBackend()
    source = DeletedWhileRead(dest)
    await source.save("gone/a.txt", b"deleted by the application")
    report = await migrate(source, dest)
    assert report.copied == 0
    assert "gone from the source" in report.failed["gone/a.txt"]
    assert await dest.list_files("") == []


class SecondRunAtVerify(MemoryStorageBackend):
    """A destination at which a second migration with ``delete_source`` (started at the
    same time, by a retried job or cron) runs to its end while the first verifies its
    copy: the second finds that copy there and deletes the source it came from."""

    def __init__(self, source: StorageBackend) -> None:
        super().__init__()
        self.source = source
        self.second: MigrationReport | None = None

    async def _stat(self, key: str) -> ObjectInfo:
        if self.second is None:
            self.second = MigrationReport()
            self.second = await migrate(self.source, self, delete_source=True)
        return await super()._stat(key)


async def test_two_migrations_at_once_never_delete_both_copies() -> None:
    source = MemoryStorageBackend()
    dest = SecondRunAtVerify(source)
    await source.save("k/a.txt", b"the only copy", metadata=META)
    report = await migrate(source, dest, delete_source=True)
    assert dest.second is not None
    assert (dest.second.skipped, dest.second.failed) == (1, {})
    assert (report.copied, report.failed) == (1, {})
    assert await dest.load("k/a.txt") == b"the only copy"
    assert await source.list_files() == []


class SecondRunAtFailedVerify(SecondRunAtVerify):
    """As :class:`SecondRunAtVerify`, at a destination that mangles metadata (as some S3
    servers do with ``_`` in names): the first run's copy fails its verification."""

    async def _stat(self, key: str) -> ObjectInfo:
        info = await super()._stat(key)
        return dataclasses.replace(info, metadata={"mangled": "yes"})


async def test_a_copy_failing_verify_is_kept_when_a_second_run_deleted_its_source() -> None:
    # the copy is all that is left of the object: deleting it would lose it
    source = MemoryStorageBackend()
    dest = SecondRunAtFailedVerify(source)
    await source.save("k/a.txt", b"the only copy", metadata=META)
    # written an hour ago: the second run takes the first one's copy for done on its time
    stored = source._objects["k/a.txt"]
    then = stored.last_modified - datetime.timedelta(hours=1)
    source._objects["k/a.txt"] = dataclasses.replace(stored, last_modified=then)
    report = await migrate(source, dest, delete_source=True)
    assert await source.list_files() == []
    assert "the source is gone meanwhile, so the copy is kept" in report.failed["k/a.txt"]
    assert await dest.load("k/a.txt") == b"the only copy"


def flipped(etag: str | None) -> str | None:
    return None if etag is None else '"' + etag.strip('"')[::-1] + '"'


class KmsLike(MemoryStorageBackend):
    """ETags that look like MD5s and are none, as S3's under SSE-KMS: the backend says so
    (an S3 backend with ``sse="aws:kms"``)."""

    _md5_etags = False
    # its ETags are told apart as S3's are: by a stat of the key, before the delete
    _delete_expired = BackendCore._delete_expired

    async def _stat(self, key: str) -> ObjectInfo:
        info = await super()._stat(key)
        return dataclasses.replace(info, etag=flipped(info.etag))

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in super()._iter_files(prefix):
            yield dataclasses.replace(info, etag=flipped(info.etag))

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        async for chunk in super()._stream(key, start, end, chunk_size, flipped(if_match)):
            yield chunk


@pytest.mark.parametrize("kms", ["source", "dest"])
async def test_etags_that_are_no_md5_are_not_taken_for_one(kms: str) -> None:
    # every object failed: "the source changed while it was copied" (a KMS source) or
    # "checksum differs" (a KMS destination), though nothing had changed
    source = KmsLike() if kms == "source" else MemoryStorageBackend()
    dest = KmsLike() if kms == "dest" else MemoryStorageBackend()
    objects = await fill(source, 3)
    report = await migrate(source, dest, delete_source=True)
    assert (report.copied, report.failed) == (3, {})
    assert await dest.load_many(objects) == objects
    assert await source.list_files() == []


def test_an_s3_backend_under_sse_kms_says_its_etags_are_no_md5() -> None:
    plain = S3StorageBackend("media")
    kms = S3StorageBackend("media", sse="aws:kms", sse_kms_key_id="alias/k")
    assert (plain._md5_etags, kms._md5_etags) == (True, False)


class DeletedAtLastByte(MemoryStorageBackend):
    """A source whose object the application deletes once migrate read its last byte."""

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        async for chunk in super()._stream(key, start, end, chunk_size, if_match):
            yield chunk
        await self.delete(key)


@pytest.mark.parametrize("size", [15, 9 * 2**20], ids=["small", "above-8MiB"])
async def test_a_source_deleted_at_its_last_byte_lands_nothing_at_the_destination(
    backend: StorageBackend, size: int
) -> None:
    # the write fails before it completes, on every destination: no copy to delete again
    source = DeletedAtLastByte()
    await source.save("g/a.bin", b"x" * size)
    events: list[ObjectEvent] = []
    backend.subscribe(events.append)
    report = await migrate(source, backend, delete_source=True)
    assert "gone from the source" in report.failed["g/a.bin"]
    assert events == []  # never written, not written then deleted
    assert await backend.list_files() == []


class WrittenAtDestWhileRead(SourceBesideDest):
    """A source during whose read the application writes the same key at ``dest`` (its
    writes go there, as in docs/migration.md), after migrate listed ``dest``."""

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        await self.dest.save(key, b"the app's write during the copy")
        async for chunk in super()._stream(key, start, end, chunk_size, if_match):
            yield chunk


@pytest.mark.parametrize("size", [15, 9 * 2**20], ids=["small", "above-8MiB"])
@pytest.mark.parametrize("stale_copy", [False, True])
async def test_a_write_at_the_destination_during_the_copy_is_kept(
    stale_copy: bool, size: int, local: LocalStorageBackend, local_root: Path
) -> None:
    source = WrittenAtDestWhileRead(local)
    await source.save("w/a.txt", b"the old version".ljust(size, b"."), metadata=META)
    if stale_copy:  # an older copy that is no longer the source's bytes: copied again
        await local.save("w/a.txt", b"an older copy")
        touch(local_root, "w/a.txt", -3600)
    report = await migrate(source, local, delete_source=True)
    assert (report.copied, report.skipped, report.failed) == (0, 1, {})
    assert await local.load("w/a.txt") == b"the app's write during the copy"


@pytest.mark.s3_needs("conditional_completion")  # else the copy goes without one
async def test_a_write_at_the_destination_during_a_copy_in_parts_is_kept(
    backend: StorageBackend,
) -> None:
    # above S3's multipart threshold (16 MiB): the copy completes only over what the
    # listing found; GCS and Azure would hold such a conditional stream whole in memory,
    # so there (and on backends that do not say they check streamed conditions) it is
    # written without one, as docs/migration.md says
    if not backend._streams_conditional_writes:
        pytest.skip("conditions on streams are not checked streamed on this backend")
    source = WrittenAtDestWhileRead(backend)
    await source.save("w/big.bin", b"the old version".ljust(17 * 2**20, b"."))
    report = await migrate(source, backend, delete_source=True)
    assert (report.copied, report.skipped, report.failed) == (0, 1, {})
    assert await backend.load("w/big.bin") == b"the app's write during the copy"


class ChangedAfterListing(MemoryStorageBackend):
    """A source whose objects the application changes once migrate has listed them and
    before their turn comes (a listing is read ahead of the copies, a page at a time)."""

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        listed = [info async for info in super()._iter_files(prefix)]
        for info in listed:
            await self.change(info.key)
        for info in listed:
            yield info

    async def change(self, key: str) -> None:
        raise NotImplementedError


class DeletedAfterListing(ChangedAfterListing):
    async def change(self, key: str) -> None:
        await self.delete(key)


async def test_an_object_already_moved_and_deleted_at_the_source_since_the_listing_is_done() -> (
    None
):
    # the destination holds it and the application deleted it from the source: nothing
    # is lost and nothing is left to do, so it is skipped, not failed
    source, dest = DeletedAfterListing(), MemoryStorageBackend()
    await source.save("d/a.txt", b"moved before")
    await dest.save("d/a.txt", b"moved before")
    outcomes: list[tuple[str, str]] = []
    report = await migrate(
        source,
        dest,
        delete_source=True,
        progress=lambda key, outcome, _: outcomes.append((key, outcome)),
    )
    assert (report.copied, report.skipped, report.failed) == (0, 1, {})
    assert outcomes == [("d/a.txt", "skipped")]
    assert await dest.load("d/a.txt") == b"moved before"


class ReplacedBeforeRead(MemoryStorageBackend):
    """A source whose object is replaced between migrate's stat and its pinned read."""

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        await self.save(key, b"a newer version")
        async for chunk in super()._stream(key, start, end, chunk_size, if_match):
            yield chunk


async def test_a_source_replaced_before_its_read_is_a_failure_not_a_skip() -> None:
    source, dest = ReplacedBeforeRead(), MemoryStorageBackend()
    await source.save("r/empty", b"")
    report = await migrate(source, dest, delete_source=True)
    assert (report.skipped, list(report.failed)) == (0, ["r/empty"])
    assert await source.load("r/empty") == b"a newer version"  # not deleted
    assert await dest.list_files("") == []


class NoConditionsInParts(MemoryStorageBackend):
    """A destination refusing conditional writes of streams, as the S3 backend does in
    parts (a low multipart threshold) on a server that does not check them (Ceph RGW)."""

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
        options: WriteOptions = PLAIN,
    ) -> None:
        if options.conditional and not isinstance(body, bytes):
            raise StorageConfigError("this server does not check conditions on uploads in parts")
        await super()._save(key, body, content_type, metadata, options)


async def test_a_destination_refusing_conditional_writes_is_written_without_one() -> None:
    source, dest = MemoryStorageBackend(), NoConditionsInParts()
    await source.save("s/a.txt", b"a", metadata=META)
    report = await migrate(source, dest)
    assert (report.copied, report.failed) == (1, {})
    assert await dest.load("s/a.txt") == b"a"


async def test_delete_source_removes_copied_and_skipped_objects(
    local: LocalStorageBackend,
) -> None:
    dest = MemoryStorageBackend()
    objects = await fill(local, 6)
    await migrate(local, dest, "data")  # an earlier run copied everything...
    await local.save("data/new.txt", b"new")  # ...and one object came since
    report = await migrate(local, dest, delete_source=True)
    assert (report.copied, report.skipped, report.failed) == (1, 6, {})
    assert await local.list_files("") == []
    assert await dest.load_many(objects) == objects


async def test_progress_reports_every_object() -> None:
    source, dest = MemoryStorageBackend(), MemoryStorageBackend()
    await fill(source, 5)
    await migrate(source, dest)
    await source.save("data/extra", b"e")
    seen: list[tuple[str, str, int]] = []
    await migrate(source, dest, progress=lambda k, o, r: seen.append((k, o, r.skipped)))
    assert sorted(seen)[-1] == ("data/extra", "copied", 5)
    assert [o for _, o, _ in seen].count("skipped") == 5


async def test_migrate_refuses_bad_arguments() -> None:
    source, dest = MemoryStorageBackend(), MemoryStorageBackend()
    await source.save("a", b"a")
    with pytest.raises(ValueError, match="verify"):
        await migrate(source, dest, delete_source=True, verify=False)
    with pytest.raises(ValueError, match="same"):
        await migrate(source, source)
    with pytest.raises(ValueError, match="concurrency"):
        await migrate(source, dest, concurrency=0)
    with pytest.raises(InvalidKeyError):
        await migrate(source, dest, "../up")
    assert await dest.list_files("") == []
    assert await source.list_files("") == ["a"]


async def test_migrate_copies_object_headers(backend: StorageBackend) -> None:
    source = MemoryStorageBackend()
    await source.save("h/a.txt", b"x", cache_control="max-age=60", content_disposition="inline")
    report = await migrate(source, backend)
    assert report.failed == {}
    info = await backend.stat("h/a.txt")
    assert (info.cache_control, info.content_disposition) == ("max-age=60", "inline")


class ReplacedWhileRead(MemoryStorageBackend):
    """A source whose object the application replaces while migrate reads it, after the
    last byte was read (an open file reads on after a rename replaced it)."""

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        async for chunk in super()._stream(key, start, end, chunk_size, if_match):
            yield chunk
        await self.save(key, b"the app's new version")


async def test_an_object_replaced_during_its_copy_is_not_deleted_from_the_source() -> None:
    # the copy holds the old bytes: deleting the source would lose the new version
    source, dest = ReplacedWhileRead(), MemoryStorageBackend()
    await source.save("doc.txt", b"the old version")
    report = await migrate(source, dest, delete_source=True)
    assert report.copied == 0
    assert "changed" in report.failed["doc.txt"]
    assert await source.load("doc.txt") == b"the app's new version"
    assert await dest.list_files("") == []  # the old copy is not left to be trusted


class BareListedETags(MemoryStorageBackend):
    """A destination whose listing gives each ETag in another form than ``stat`` and its
    write conditions take (weak, ``W/"..."``; GCS and Azure listings once gave them
    without the quotes, which conditions now take as the same ETag)."""

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in super()._iter_files(prefix):
            etag = None if info.etag is None else "W/" + info.etag
            yield dataclasses.replace(info, etag=etag)


async def test_a_copy_refused_with_the_destination_unchanged_is_a_failure_not_a_skip() -> None:
    # the refused condition is no newer write of the application's: the destination still
    # holds what the listing found, so the object is failed and the source kept
    dest = BareListedETags()
    await dest.save("k.txt", b"stale")
    source = MemoryStorageBackend()
    await source.save("k.txt", b"the only up-to-date copy")
    report = await migrate(source, dest, delete_source=True)
    assert (report.copied, report.skipped, list(report.failed)) == (0, 0, ["k.txt"])
    assert await source.load("k.txt") == b"the only up-to-date copy"


class ReplacedAfterListed(ChangedAfterListing):
    async def change(self, key: str) -> None:
        await self.save(key, b"the app's write after the listing")


async def test_an_object_replaced_after_its_listing_is_copied_not_deleted_as_already_there() -> (
    None
):
    # the destination holds a copy newer than the listed version (an earlier run): kept,
    # and delete_source deleted the application's newer write at the source with it
    source, dest = ReplacedAfterListed(), MemoryStorageBackend()
    await source.save("doc.txt", b"the old version")
    await dest.save("doc.txt", b"the old version")
    report = await migrate(source, dest, delete_source=True)
    assert (report.copied, report.skipped, report.failed) == (1, 0, {})
    assert await dest.load("doc.txt") == b"the app's write after the listing"
    assert await source.list_files("") == []
