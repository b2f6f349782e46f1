"""The fallback spool: writes while S3 is down are kept on local disk and flushed later.

S3 is "down" when the fault proxy refuses connections (``proxy.refuse()``), or fails a
request on every attempt; botocore's retries run first, as in production.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from file_storage import (
    PreconditionFailedError,
    S3StorageBackend,
    StorageConfigError,
    StoragePermissionError,
    StorageQuotaExceededError,
    StorageSettings,
    StorageUnavailableError,
)
from file_storage._spool import Spool, Writer
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.faults.conftest import (
    ATTEMPTS,
    SMALL,
    MakeBackend,
    MiB,
    chunks,
)
from tests.faults.proxy import FaultProxy
from tests.s3util import closed_port, open_uploads, stored_keys

pytestmark = pytest.mark.s3


def spool_files(spool_path: Path) -> list[str]:
    """Files in the spool folder, the lock files and the store's name aside."""
    if not spool_path.exists():
        return []
    return sorted(
        str(p.relative_to(spool_path))
        for p in spool_path.rglob("*")
        if p.is_file() and p.name not in ("flush.lock", "keys.lock", "store")
    )


def s3_body(raw: Any, bucket: str, key: str) -> bytes:
    body: bytes = raw.get_object(Bucket=bucket, Key=f"storage/{key}")["Body"].read()
    return body


# ---------------------------------------------------------------- writes while S3 is down


async def test_save_while_s3_is_down_is_spooled_and_read_back(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    proxy.refuse()
    assert await spooling.save("docs/a.txt", b"hello", metadata={"K": "v"}) == "docs/a.txt"
    # reads of a spooled object need no S3
    assert await spooling.load("docs/a.txt") == b"hello"
    assert await spooling.exists("docs/a.txt")
    assert await spooling.get_size("docs/a.txt") == 5
    info = await spooling.stat("docs/a.txt")
    assert (info.size, info.content_type, dict(info.metadata)) == (5, "text/plain", {"k": "v"})
    assert [c async for c in spooling.stream("docs/a.txt", start=1, end=3)] == [b"el"]
    out = await spooling.download_file("docs/a.txt", tmp_path / "out.txt")
    assert out.read_bytes() == b"hello"
    proxy.restore()  # listings merge S3's and the spool's
    assert await spooling.list_files() == ["docs/a.txt"]
    assert await spooling.list_dirs() == ["docs"]
    assert [i.key async for i in spooling.iter_files("docs")] == ["docs/a.txt"]
    assert await spooling.get_total_size() == 5
    assert stored_keys(raw, s3_bucket) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
async def test_download_of_a_spooled_object_writes_a_private_temp_file(
    spooling: S3StorageBackend, proxy: FaultProxy, tmp_path: Path
) -> None:
    # a spooled object is copied from the spool's file, not from S3: that temp file too
    # is private until download_file gives it its mode
    proxy.refuse()
    await spooling.save("docs/a.txt", b"hello")
    folder = tmp_path / "out"
    modes: list[int] = []

    def look(done: int, total: int | None) -> None:
        modes.extend(p.stat().st_mode & 0o777 for p in folder.glob(".a.txt.*.part"))

    umask = os.umask(0o022)
    try:
        out = await spooling.download_file("docs/a.txt", folder / "a.txt", progress=look)
    finally:
        os.umask(umask)
    assert modes == [0o600]
    assert out.read_bytes() == b"hello"
    assert out.stat().st_mode & 0o777 == 0o644


async def test_listing_merges_spooled_and_stored_objects_in_order(
    spooling: S3StorageBackend, proxy: FaultProxy
) -> None:
    for key in ("a.txt", "c.txt", "e.txt"):
        await spooling.save(key, b"s3")
    proxy.refuse()
    for key in ("b.txt", "c.txt", "f.txt"):
        await spooling.save(key, b"spooled")
    proxy.restore()
    infos = [(i.key, i.size) async for i in spooling.iter_files()]
    assert infos == [("a.txt", 2), ("b.txt", 7), ("c.txt", 7), ("e.txt", 2), ("f.txt", 7)]


async def test_flush_uploads_each_spooled_object_once_and_empties_the_spool(
    spooling: S3StorageBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    spool_path: Path,
    tmp_path: Path,
) -> None:
    source = tmp_path / "clip.webm"
    source.write_bytes(b"video")
    proxy.refuse()
    await spooling.save("a.txt", b"A", metadata={"k": "v"})
    await spooling.save("b.bin", b"B", content_type="image/png")
    await spooling.upload_file(source, "c.webm")
    source.unlink()  # the spool has its own copy
    proxy.restore()
    proxy.clear()
    assert await spooling.flush_spool() == 3
    assert proxy.count("PUT") == 3
    assert [s3_body(raw, s3_bucket, k) for k in ("a.txt", "b.bin", "c.webm")] == [
        b"A",
        b"B",
        b"video",
    ]
    head = raw.head_object(Bucket=s3_bucket, Key="storage/b.bin")
    assert head["ContentType"] == "image/png"
    assert raw.head_object(Bucket=s3_bucket, Key="storage/a.txt")["Metadata"] == {"k": "v"}
    assert spool_files(spool_path) == []
    assert await spooling.flush_spool() == 0


async def test_stream_failing_after_some_parts_is_spooled_whole(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    backend = make_backend(**SMALL, fallback_path=spool_path)
    data = os.urandom(12 * MiB)
    proxy.reset_after(MiB, times=ATTEMPTS, match="partNumber=2")
    await backend.save("big.bin", chunks(data))  # part 1 went out; the stream is spent
    assert open_uploads(raw, s3_bucket) == []  # the multipart upload was aborted
    assert hashlib.sha256(await backend.load("big.bin")).digest() == hashlib.sha256(data).digest()
    assert await backend.flush_spool() == 1
    assert s3_body(raw, s3_bucket, "big.bin") == data
    assert spool_files(spool_path) == []


async def test_healthy_streamed_save_leaves_nothing_in_the_spool(
    make_backend: MakeBackend, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    backend = make_backend(**SMALL, fallback_path=spool_path)
    data = os.urandom(6 * MiB)
    await backend.save("big.bin", chunks(data))
    assert s3_body(raw, s3_bucket, "big.bin") == data
    assert spool_files(spool_path) == []


async def test_throttling_beyond_the_retries_is_spooled(
    spooling: S3StorageBackend, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="file_storage")
    proxy.fail_next(ATTEMPTS, status=503, code="SlowDown")
    await spooling.save("a.txt", b"x")
    assert proxy.count("PUT") == ATTEMPTS
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'a.txt' spooled, 1 bytes" in warning.getMessage()
    assert await spooling.flush_spool() == 1


async def test_permission_errors_are_raised_not_spooled(
    spooling: S3StorageBackend, proxy: FaultProxy, spool_path: Path
) -> None:
    proxy.fail_next(1, status=403, code="AccessDenied")
    with pytest.raises(StoragePermissionError):
        await spooling.save("a.txt", b"x")
    assert spool_files(spool_path) == []


async def test_callers_stream_error_is_raised_not_spooled(
    make_backend: MakeBackend, proxy: FaultProxy, spool_path: Path
) -> None:
    backend = make_backend(**SMALL, fallback_path=spool_path)
    proxy.refuse()

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * MiB
        raise ConnectionResetError("the browser went away")

    with pytest.raises(ConnectionResetError):
        await backend.save("a.bin", broken())
    assert spool_files(spool_path) == []


async def test_spool_disk_full_raises_the_s3_error_and_leaves_no_temp_file(
    spooling: S3StorageBackend,
    proxy: FaultProxy,
    spool_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def full(self: Writer, chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Writer, "_write", full)
    proxy.refuse()
    with pytest.raises(StorageUnavailableError, match="S3 unreachable after 3 attempts"):
        await spooling.save("a.txt", b"x")
    assert "fallback spool failed too" in caplog.text
    assert spool_files(spool_path) == []


async def test_spool_disk_full_does_not_fail_a_healthy_streamed_save(
    make_backend: MakeBackend,
    raw: Any,
    s3_bucket: str,
    spool_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_write = Writer._write

    def full_after_a_chunk(self: Writer, chunk: bytes) -> None:
        if self.size:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, chunk)

    monkeypatch.setattr(Writer, "_write", full_after_a_chunk)
    backend = make_backend(**SMALL, fallback_path=spool_path)
    data = os.urandom(6 * MiB)
    await backend.save("big.bin", chunks(data))
    assert s3_body(raw, s3_bucket, "big.bin") == data
    assert spool_files(spool_path) == []


# ---------------------------------------------------------------- flushing


async def test_concurrent_flushes_upload_each_object_once(
    make_backend: MakeBackend, proxy: FaultProxy, spool_path: Path
) -> None:
    first = make_backend(fallback_path=spool_path)
    second = make_backend(fallback_path=spool_path)  # another worker on the same spool
    proxy.refuse()
    for n in range(6):
        await first.save(f"k{n}.txt", b"x")
    proxy.restore()
    proxy.clear()
    counts = await asyncio.gather(
        first.flush_spool(), first.flush_spool(), second.flush_spool(), second.flush_spool()
    )
    assert sum(counts) == 6
    assert proxy.count("PUT") == 6
    assert spool_files(spool_path) == []


class Crash(Exception):
    """The process dies here."""


async def test_crash_between_upload_and_removal_uploads_the_same_bytes_again(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    spool_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = make_backend(fallback_path=spool_path)
    proxy.refuse()
    await backend.save("a.txt", b"precious")
    proxy.restore()

    async def crash(self: Spool, entry: object) -> bool:
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(Spool, "remove", crash)
        with pytest.raises(Crash):
            await backend.flush_spool()  # uploaded, not yet removed
    assert s3_body(raw, s3_bucket, "a.txt") == b"precious"
    restarted = make_backend(fallback_path=spool_path)
    assert await restarted.load("a.txt") == b"precious"
    assert await restarted.flush_spool() == 1
    assert s3_body(raw, s3_bucket, "a.txt") == b"precious"
    assert stored_keys(raw, s3_bucket) == ["storage/a.txt"]
    assert spool_files(spool_path) == []


async def test_spool_survives_a_process_restart(
    make_backend: MakeBackend, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    code = f"""
import asyncio
from file_storage import S3StorageBackend

async def main():
    backend = S3StorageBackend(
        {s3_bucket!r}, endpoint_url="http://127.0.0.1:{closed_port()}", addressing_style="path",
        access_key_id={FAKE_KEY_ID!r}, secret_access_key={FAKE_SECRET!r},
        max_attempts=1, fallback_path={str(spool_path)!r},
    )
    async with backend:
        await backend.save("one.txt", b"1")
        await backend.save("dir/two.txt", b"22", content_type="text/csv")

asyncio.run(main())
"""
    command = [sys.executable, "-c", code]
    await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True, timeout=60)
    backend = make_backend(fallback_path=spool_path)
    assert await backend.list_files() == ["dir/two.txt", "one.txt"]
    assert await backend.flush_spool() == 2
    assert s3_body(raw, s3_bucket, "dir/two.txt") == b"22"
    assert raw.head_object(Bucket=s3_bucket, Key="storage/dir/two.txt")["ContentType"] == (
        "text/csv"
    )


async def test_periodic_flush_uploads_in_the_background(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    spool_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flushed = asyncio.Event()
    original = S3StorageBackend.flush_spool

    async def observed(self: S3StorageBackend) -> int:
        count = await original(self)
        if count:
            flushed.set()
        return count

    monkeypatch.setattr(S3StorageBackend, "flush_spool", observed)
    backend = make_backend(fallback_path=spool_path, flush_interval_seconds=0.05)
    proxy.refuse()
    await backend.save("a.txt", b"later")  # the flusher starts with the client
    proxy.restore()
    await asyncio.wait_for(flushed.wait(), timeout=10)
    assert s3_body(raw, s3_bucket, "a.txt") == b"later"
    assert spool_files(spool_path) == []
    await backend.aclose()  # cancels the flusher
    assert backend._fallback._flusher.task is None


# ---------------------------------------------------------------- ordering with direct writes


async def test_newer_write_replaces_the_spooled_version(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    proxy.refuse()
    await spooling.save("a.txt", b"old")
    await spooling.save("a.txt", b"older is gone")  # replaces the spooled version
    assert await spooling.load("a.txt") == b"older is gone"
    proxy.restore()
    await spooling.save("a.txt", b"new")  # reaches S3: the spooled version is dropped
    assert await spooling.load("a.txt") == b"new"
    assert await spooling.flush_spool() == 0
    assert s3_body(raw, s3_bucket, "a.txt") == b"new"
    assert spool_files(spool_path) == []


async def test_stream_of_a_spooled_object_is_pinned_to_its_etag(
    spooling: S3StorageBackend, proxy: FaultProxy
) -> None:
    proxy.refuse()
    await spooling.save("a.txt", b"spooled one")
    etag = (await spooling.stat("a.txt")).etag
    assert etag is not None
    assert [c async for c in spooling.stream("a.txt", start=8, if_match=etag)] == [b"one"]
    await spooling.save("a.txt", b"spooled two")  # a newer spooled version
    with pytest.raises(PreconditionFailedError) as info:
        await anext(aiter(spooling.stream("a.txt", if_match=etag)))
    assert (info.value.operation, info.value.key) == ("stream", "a.txt")


async def test_delete_removes_the_spooled_and_the_stored_version(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    await spooling.save("a.txt", b"stored")
    await spooling.save("dir/b.txt", b"stored")
    proxy.refuse()
    await spooling.save("a.txt", b"spooled")
    await spooling.save("dir/b.txt", b"spooled")
    await spooling.save("dir/c.txt", b"spooled")
    proxy.restore()
    await spooling.delete("a.txt")
    assert not await spooling.exists("a.txt")
    assert await spooling.delete_prefix("dir") == 2
    assert await spooling.list_files() == []
    assert stored_keys(raw, s3_bucket) == []
    assert await spooling.flush_spool() == 0


async def test_copy_and_move_of_a_spooled_object(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    proxy.refuse()
    await spooling.save("a.txt", b"spooled", metadata={"k": "v"})
    await spooling.copy("a.txt", "copy-while-down.txt")  # spooled as well
    proxy.restore()
    await spooling.copy("a.txt", "b.txt")  # from the spool to S3
    assert s3_body(raw, s3_bucket, "b.txt") == b"spooled"
    await spooling.move("b.txt", "c.txt")
    assert await spooling.load("c.txt") == b"spooled"
    assert (await spooling.stat("copy-while-down.txt")).metadata == {"k": "v"}
    assert await spooling.flush_spool() == 2
    assert sorted(stored_keys(raw, s3_bucket)) == [
        "storage/a.txt",
        "storage/c.txt",
        "storage/copy-while-down.txt",
    ]


async def test_presigned_url_of_a_spooled_object_flushes_it_first(
    spooling: S3StorageBackend, proxy: FaultProxy, spool_path: Path
) -> None:
    proxy.refuse()
    await spooling.save("a.txt", b"share me")
    proxy.restore()
    url = await spooling.get_presigned_url("a.txt", expires_in=60)
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.content == b"share me"
    assert spool_files(spool_path) == []


async def test_spooled_bytes_count_against_the_quota(
    make_backend: MakeBackend, proxy: FaultProxy, spool_path: Path
) -> None:
    backend = make_backend(fallback_path=spool_path, max_size_bytes=10)
    await backend.get_usage()  # a quota learns the usage from one listing of S3, first
    proxy.refuse()
    await backend.save("a.bin", b"12345678")
    with pytest.raises(StorageQuotaExceededError):
        await backend.save("b.bin", b"12345")
    proxy.restore()
    restarted = make_backend(fallback_path=spool_path, max_size_bytes=10)
    assert (await restarted.get_usage()).used == 8  # learned from the merged listing


async def test_damaged_spooled_copy_is_kept_and_not_sent(
    spooling: S3StorageBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    spool_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy.refuse()
    await spooling.save("a.txt", b"original")
    proxy.restore()
    [data] = (spool_path / "data").iterdir()
    data.write_bytes(b"bit rot!")
    assert await spooling.flush_spool() == 0
    assert "damaged" in caplog.text
    assert stored_keys(raw, s3_bucket) == []
    assert len(spool_files(spool_path)) == 2  # manifest and data, kept for a human


def test_flush_interval_without_a_spool_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_S3_FLUSH_INTERVAL_SECONDS", "60")
    with pytest.raises(StorageConfigError, match="STORAGE_S3_FALLBACK_PATH"):
        StorageSettings()


async def test_flush_sweeps_what_crashes_left_behind(
    spooling: S3StorageBackend, proxy: FaultProxy, spool_path: Path
) -> None:
    proxy.refuse()
    await spooling.save("kept.txt", b"x")
    proxy.restore()
    old = 2 * 24 * 3600
    leftovers = [
        spool_path / "data" / "dead.part",
        spool_path / "data" / "orphan.data",
        spool_path / "entries" / "manifest.tmp",
    ]
    fresh = spool_path / "data" / "in-progress.part"  # another writer, still running
    for path in [*leftovers, fresh]:
        path.write_bytes(b"junk")
    for path in leftovers:
        stat = path.stat()
        os.utime(path, (stat.st_atime - old, stat.st_mtime - old))
    assert await spooling.flush_spool() == 1
    assert spool_files(spool_path) == ["data/in-progress.part"]


async def test_a_key_saved_from_two_threads_each_with_its_loop_waits_its_turn_and_lands(
    make_backend: MakeBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one process-wide backend serving a threaded worker (each thread its own loop): the
    # thread's save of a key waits for this loop's save of it, and is woken when it ends
    backend = make_backend(fallback_path=tmp_path / "spool")
    await backend.save("warm.txt", b"w")
    reading, release = asyncio.Event(), asyncio.Event()
    asking = threading.Event()  # the other thread asks for the key's turn
    locked = Spool.locked

    def observed(self: Spool, *keys: str) -> Any:
        if threading.current_thread() is not threading.main_thread():
            asking.set()
        return locked(self, *keys)

    monkeypatch.setattr(Spool, "locked", observed)

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        reading.set()  # asked for more: this save holds the key
        await release.wait()

    first = asyncio.ensure_future(backend.save("a.txt", body()))
    await asyncio.wait_for(reading.wait(), timeout=30)  # a bound
    done = threading.Event()
    outcome: list[object] = []

    def other_thread() -> None:
        try:
            outcome.append(asyncio.run(backend.save("a.txt", b"second")))
        except BaseException as exc:  # reported below
            outcome.append(exc)
        done.set()

    threading.Thread(target=other_thread, daemon=True).start()
    assert await asyncio.to_thread(asking.wait, 30)
    # it waits for the key from here (a moment to get there; it cannot end before)
    assert not await asyncio.to_thread(done.wait, 0.2)
    release.set()
    await first
    assert await asyncio.to_thread(done.wait, 30), "the other thread's save never woke"
    assert outcome == ["a.txt"]
    assert await backend.load("a.txt") == b"second"
