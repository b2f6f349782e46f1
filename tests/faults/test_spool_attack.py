"""The fallback spool against a second writer and against faults: a flush never puts an
older spooled version over a newer object another writer stored in S3 after S3 came
back, and every flush of a spooled write emits its "created" event."""

from __future__ import annotations

import asyncio
import errno
import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    ObjectEvent,
    PreconditionFailedError,
    StorageConfigError,
    StorageUnavailableError,
)
from file_storage._spool import Entry, Spool, Writer
from tests.faults.conftest import MakeBackend
from tests.faults.proxy import FaultProxy
from tests.faults.test_spool import s3_body, spool_files
from tests.s3util import stored_keys

pytestmark = pytest.mark.s3


def spooled_earlier(spool_path: Path, seconds: float) -> None:
    """Move every manifest's spool time back: the outage was that long ago (S3's
    Last-Modified has whole seconds, so a write right after would look as old)."""
    for manifest in (spool_path / "entries").glob("*.json"):
        body = json.loads(manifest.read_text("utf-8"))
        then = datetime.fromisoformat(body["spooled_at"]) - timedelta(seconds=seconds)
        manifest.write_text(json.dumps(body | {"spooled_at": then.isoformat()}), "utf-8")


async def test_flush_keeps_a_newer_object_another_writer_stored_after_the_outage(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool"
    spooling = make_backend(fallback_path=spool_path)
    other = make_backend()  # another server: it writes straight to S3
    proxy.refuse()
    await spooling.save("a.txt", b"old, spooled")
    proxy.restore()
    spooled_earlier(spool_path, 60)
    await other.save("a.txt", b"new, from another server")
    assert await spooling.flush_spool() == 0
    assert s3_body(raw, s3_bucket, "a.txt") == b"new, from another server"
    assert await spooling.load("a.txt") == b"new, from another server"
    assert spool_files(spool_path) == []


async def test_flush_still_uploads_over_an_object_stored_before_the_outage(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool"
    spooling = make_backend(fallback_path=spool_path)
    await spooling.save("a.txt", b"stored before")  # the same second as the spooled one
    proxy.refuse()
    await spooling.save("a.txt", b"spooled after")
    proxy.restore()
    assert await spooling.flush_spool() == 1
    assert s3_body(raw, s3_bucket, "a.txt") == b"spooled after"
    assert spool_files(spool_path) == []


async def test_presigned_url_that_flushes_a_spooled_write_emits_created(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    spooling = make_backend(fallback_path=tmp_path / "spool")
    proxy.refuse()
    await spooling.save("a.txt", b"share me")
    proxy.restore()
    seen: list[ObjectEvent] = []
    spooling.subscribe(seen.append)
    await spooling.get_presigned_url("a.txt", expires_in=60)
    etag = raw.head_object(Bucket=s3_bucket, Key="storage/a.txt")["ETag"]
    assert seen == [ObjectEvent("created", "a.txt", 8, etag)]


async def test_manifest_that_cannot_be_written_leaves_no_data_file(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spool_path = tmp_path / "spool"
    spooling = make_backend(fallback_path=spool_path)

    def full(self: Spool, entry: Entry) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "commit_sync", full)
    proxy.refuse()
    with pytest.raises(StorageUnavailableError):
        await spooling.save("a.txt", b"x" * 1000)
    assert spool_files(spool_path) == []


async def test_flush_cancelled_mid_upload_keeps_the_entry_and_sends_it_once_later(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    spool_path = tmp_path / "spool"
    spooling = make_backend(fallback_path=spool_path)
    proxy.refuse()
    await spooling.save("a.txt", b"spooled")
    proxy.restore()
    proxy.clear()
    proxy.stall_next(1, match="PUT")  # the upload hangs until the flush is cancelled
    flush = asyncio.ensure_future(spooling.flush_spool())
    for _ in range(1000):  # until the proxy holds the PUT (10 s at most)
        if proxy.count("PUT"):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the flush sent no PUT")
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    assert await spooling.load("a.txt") == b"spooled"
    proxy.clear()
    assert await spooling.flush_spool() == 1
    assert proxy.count("PUT") == 1
    assert s3_body(raw, s3_bucket, "a.txt") == b"spooled"
    assert spool_files(spool_path) == []


async def test_direct_write_through_another_backend_on_the_same_spool_waits_for_its_flush(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool"
    first = make_backend(fallback_path=spool_path)
    second = make_backend(fallback_path=spool_path)  # the same folder, the same process
    proxy.refuse()
    await first.save("a.txt", b"old, spooled")
    proxy.restore()
    proxy.clear()
    proxy.stall_next(1, match="PUT")  # the flush's upload is held until botocore retries
    flush = asyncio.ensure_future(first.flush_spool())
    for _ in range(1000):  # until the proxy holds the PUT (10 s at most)
        if proxy.count("PUT"):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the flush sent no PUT")
    await second.save("a.txt", b"new, direct")
    await flush
    assert s3_body(raw, s3_bucket, "a.txt") == b"new, direct"
    assert await first.load("a.txt") == b"new, direct"
    assert spool_files(spool_path) == []


async def test_save_cancelled_while_its_spool_write_waits_on_the_disk_leaves_no_temp_file(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spool_path = tmp_path / "spool"
    spooling = make_backend(fallback_path=spool_path)
    writing, release, written = threading.Event(), threading.Event(), threading.Event()
    real_write = Writer._write

    def slow_disk(self: Writer, chunk: bytes) -> None:
        writing.set()
        release.wait(10)  # the disk answers only after the save was cancelled
        try:
            real_write(self, chunk)
        finally:
            written.set()

    monkeypatch.setattr(Writer, "_write", slow_disk)
    proxy.refuse()
    save = asyncio.ensure_future(spooling.save("a.txt", b"x"))
    assert await asyncio.to_thread(writing.wait, 10)
    save.cancel()
    with pytest.raises(asyncio.CancelledError):
        await save
    release.set()
    assert await asyncio.to_thread(written.wait, 10)  # the late write has run, or given up
    assert spool_files(spool_path) == []


async def test_if_match_with_the_etag_stat_gave_a_spooled_object_replaces_it(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    spooling = make_backend(fallback_path=tmp_path / "spool")
    proxy.refuse()
    await spooling.save("a.txt", b"spooled")
    etag = (await spooling.stat("a.txt")).etag
    assert etag is not None
    proxy.restore()
    await spooling.save("a.txt", b"replaced", if_match=etag)  # the flush sends it first
    assert s3_body(raw, s3_bucket, "a.txt") == b"replaced"
    with pytest.raises(PreconditionFailedError):  # that version is gone now
        await spooling.save("a.txt", b"again", if_match=etag)


async def test_backend_of_another_prefix_refuses_the_spool_folder_of_this_one(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool"
    first = make_backend(fallback_path=spool_path)
    tenant = make_backend(fallback_path=spool_path, prefix="tenant-b")  # the same folder
    proxy.refuse()
    await first.save("a.txt", b"first's, spooled")
    proxy.restore()
    with pytest.raises(StorageConfigError, match="another bucket or prefix"):
        await tenant.exists("a.txt")
    with pytest.raises(StorageConfigError, match="another bucket or prefix"):
        await tenant.flush_spool()
    assert stored_keys(raw, s3_bucket) == []
    assert await first.flush_spool() == 1
    assert stored_keys(raw, s3_bucket) == ["storage/a.txt"]


async def test_restore_version_replaces_the_spooled_version(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool"
    spooling = make_backend(fallback_path=spool_path)
    await spooling.set_versioning(True)  # on this test's own bucket
    await spooling.save("a.txt", b"first, stored")
    [first] = await spooling.list_versions("a.txt")
    proxy.refuse()
    await spooling.save("a.txt", b"second, spooled")
    proxy.restore()
    await spooling.restore_version("a.txt", first.version_id)
    assert await spooling.load("a.txt") == b"first, stored"
    assert await spooling.flush_spool() == 0
    assert s3_body(raw, s3_bucket, "a.txt") == b"first, stored"
    assert spool_files(spool_path) == []
