"""The local backend against what another local user or process puts under the root
(FIFOs, sockets, folders in place of files), swaps between a check and its use, or a disk
failing part way: typed errors, nothing left behind, the quota exact."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    LocalStorageBackend,
    ObjectConflictError,
    ObjectEvent,
    ObjectNotFoundError,
    StorageError,
    StorageUnavailableError,
)
from file_storage.backends import _writes
from file_storage.backends.local import _files
from file_storage.backends.local import _meta as meta_file
from file_storage.backends.local import _versions as versions
from file_storage.backends.local._io import TMP_MARK


@pytest.mark.parametrize("progress", [None, print], ids=["plain", "progress"])
async def test_upload_of_a_file_swapped_for_a_fifo_after_its_stat_is_refused_at_once(
    local_backend: LocalStorageBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    progress: Any,
) -> None:
    src = tmp_path / "upload.bin"
    src.write_bytes(b"regular")
    real_stat = os.stat(src)
    os.unlink(src)
    os.mkfifo(src)  # someone swapped it between upload_file's stat and its open

    async def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        return real_stat

    monkeypatch.setattr(_writes.aiofiles.os, "stat", stat)
    call = asyncio.ensure_future(local_backend.upload_file(src, "u.bin", progress=progress))
    done, _ = await asyncio.wait({call}, timeout=10)
    if not done:  # hung: a writer (at once closed) ends it
        os.close(os.open(src, os.O_WRONLY | os.O_NONBLOCK))
    with pytest.raises(ObjectNotFoundError, match="not a regular file"):
        await call
    assert done, "upload_file of a FIFO blocked"
    assert await local_backend.list_files() == []
    assert (await local_backend.get_usage()).used == 0


def sidecar(backend: LocalStorageBackend, key: str) -> Path:
    return sidecar_path(backend.root, key)


def sidecar_path(root: Path, key: str) -> Path:
    parts, name = meta_file._where(key)
    return root.joinpath(*parts, name)


async def test_a_sidecar_that_cannot_be_dropped_fails_neither_the_delete_nor_the_save(
    tmp_path: Path,
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    try:
        await backend.save("k", b"hello", metadata={"m": "1"})
        await backend.save("other", b"12")
        # another process (or a disk refusing the unlink) leaves what cannot be unlinked
        sidecar(backend, "k").unlink()
        sidecar(backend, "k").mkdir()
        await backend.delete("k")  # the object is gone: the call says so
        assert not await backend.exists("k")
        assert (await backend.get_usage()).used == 2
        await backend.save("k", b"abc")  # landed: counted, not reported as failed
        assert await backend.load("k") == b"abc"
        assert (await backend.get_usage()).used == 5
    finally:
        await backend.aclose()


async def test_a_write_that_fails_after_its_rename_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000, durable=True)

    def eio(self: Any, dir_fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    try:
        await backend.save("a/k", b"hello")
        monkeypatch.setattr(_files.LocalFiles, "_fsync_dir", eio)
        with pytest.raises(StorageError, match="I/O error"):
            await backend.save("a/k", b"longer bytes")  # landed, its folder not synced
        with pytest.raises(StorageError, match="I/O error"):
            await backend.move("a/k", "b/k")
        assert await backend.load("b/k") == b"longer bytes"
        assert (await backend.get_usage()).used == len(b"longer bytes")
    finally:
        await backend.aclose()


@contextlib.contextmanager
def planted(path: Path, kind: str) -> Any:
    """A FIFO another process holds open for writing (a read would wait), or a folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        path.mkdir()
        yield
        return
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR)
    try:
        yield
    finally:
        os.close(writer)


@pytest.mark.parametrize("kind", ["fifo", "folder"])
async def test_a_fifo_or_folder_in_place_of_a_sidecar_reads_as_no_record(
    local_backend: LocalStorageBackend, kind: str
) -> None:
    await local_backend.save("k.txt", b"hello", metadata={"m": "1"})
    sidecar(local_backend, "k.txt").unlink()
    with planted(sidecar(local_backend, "k.txt"), kind):
        info = await local_backend.stat("k.txt")
        assert (info.content_type, dict(info.metadata)) == ("text/plain", {})
        await local_backend.save("k.txt", b"plain")
        assert await local_backend.load("k.txt") == b"plain"


@pytest.mark.parametrize("kind", ["fifo", "folder"])
async def test_a_fifo_or_folder_in_place_of_the_versioning_state_reads_as_suspended(
    local_backend: LocalStorageBackend, kind: str
) -> None:
    await local_backend.save("k.txt", b"hello")
    with planted(local_backend.root / ".file_storage\\versioning", kind):
        await local_backend.save("k.txt", b"again")
        assert await local_backend.load("k.txt") == b"again"
        assert [v.is_latest for v in await local_backend.list_versions("k.txt")] == [True]


@pytest.mark.parametrize("kind", ["fifo", "folder"])
async def test_a_fifo_or_folder_in_place_of_the_expiry_rules_is_a_damaged_rules_file(
    local_backend: LocalStorageBackend, kind: str
) -> None:
    await local_backend.save("k.txt", b"hello")
    damaged = pytest.raises(StorageError, match=r"expiry rules file .* is damaged")
    with planted(local_backend.root / ".file_storage\\lifecycle.json", kind), damaged:
        await local_backend.get_expiration()


async def test_a_fifo_among_the_prior_versions_is_not_a_version(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    try:
        await backend.set_versioning(True)
        await backend.save("k.txt", b"first")
        await backend.save("k.txt", b"second")
        with planted(backend.root.joinpath(*versions._folder("k.txt"), "v-0-planted"), "fifo"):
            listed = await backend.list_versions("k.txt")
            assert [v.size for v in listed] == [6, 5]
            await backend.refresh_usage()
            assert (await backend.get_usage()).used == 11
    finally:
        await backend.aclose()


@pytest.mark.parametrize("failing", ["current", ".json"])
async def test_a_version_record_failing_on_a_full_disk_leaves_no_prior_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    write_text = versions._write_text

    def full(root: Any, dir_fd: int, name: str, text: str) -> None:
        if name.endswith(failing):
            raise OSError(errno.ENOSPC, "No space left on device")
        write_text(root, dir_fd, name, text)

    try:
        await backend.set_versioning(True)
        await backend.save("k.txt", b"first", metadata={"m": "1"})
        monkeypatch.setattr(versions, "_write_text", full)
        with pytest.raises(StorageUnavailableError, match="no space left"):
            await backend.save("k.txt", b"second")
        monkeypatch.undo()
        assert await backend.load("k.txt") == b"first"
        assert [v.size for v in await backend.list_versions("k.txt")] == [5]
        await backend.refresh_usage()
        assert (await backend.get_usage()).used == 5
        folder = backend.root.joinpath(*versions._folder("k.txt"))
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith("v-")) == []
    finally:
        await backend.aclose()


@pytest.mark.parametrize("kind", ["folder", "fifo"])
async def test_a_move_source_swapped_for_a_folder_or_fifo_moves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    root = backend.root

    def swap(point: str, gate: Any) -> None:
        if point == "rename":  # another process, between the move's look and its rename
            os.unlink(root / "a.bin")
            if kind == "fifo":
                os.mkfifo(root / "a.bin")
            else:
                (root / "a.bin").mkdir()
                (root / "a.bin" / "inner.bin").write_bytes(b"inner")

    try:
        await backend.save("a.bin", b"hello")
        monkeypatch.setattr(_files, "_checkpoint", swap)
        with pytest.raises(ObjectNotFoundError):
            await backend.move("a.bin", "x/y/b.bin")
        assert not (root / "x").exists()  # nor the folders made for the destination
        assert await backend.list_files() == (["a.bin/inner.bin"] if kind == "folder" else [])
    finally:
        await backend.aclose()


async def test_a_socket_at_a_key_is_no_object(local_backend: LocalStorageBackend) -> None:
    await local_backend.set_versioning(True)
    await local_backend.save("x.bin", b"hi")
    with contextlib.closing(socket.socket(socket.AF_UNIX)) as sock:
        sock.bind(str(local_backend.root / "sock"))  # another local user's socket
        os.symlink("sock", local_backend.root / "link")
        for key in ("sock", "link"):
            assert not await local_backend.exists(key)
            with pytest.raises(ObjectNotFoundError):
                await local_backend.load(key)
            with pytest.raises(ObjectNotFoundError):
                await local_backend.copy(key, "copied")
        assert await local_backend.list_files() == ["x.bin"]
        with pytest.raises(ObjectConflictError):  # never replaced: it may be in use
            await local_backend.save("sock", b"replaced")
        assert stat.S_ISSOCK(os.lstat(local_backend.root / "sock").st_mode)


@pytest.mark.parametrize("how", ["bytes", "stream", "copy", "upload"])
async def test_a_temp_file_refused_by_a_full_disk_leaves_no_folder_behind(
    local_backend: LocalStorageBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    await local_backend.save("src.bin", b"source")
    source = tmp_path / "upload.bin"
    source.write_bytes(b"upload")

    def full(stem: str = "") -> str:  # no inode left for the temp file
        raise OSError(errno.ENOSPC, "No space left on device")

    async def body() -> Any:
        yield b"streamed"

    calls = {
        "bytes": lambda: local_backend.save("a/b/c.bin", b"bytes"),
        "stream": lambda: local_backend.save("a/b/c.bin", body()),
        "copy": lambda: local_backend.copy("src.bin", "a/b/c.bin"),
        "upload": lambda: local_backend.upload_file(source, "a/b/c.bin"),
    }
    monkeypatch.setattr(_files, "tmp_name", full)
    with pytest.raises(StorageUnavailableError, match="no space left"):
        await calls[how]()
    monkeypatch.undo()
    assert sorted(p.name for p in local_backend.root.iterdir() if "\\" not in p.name) == ["src.bin"]
    await local_backend.save("a", b"an object where the folder was")


def _fsync_spy() -> tuple[list[str], Callable[[int], None]]:
    """An ``os.fsync`` that records the path of each descriptor it syncs (by /proc)."""
    synced: list[str] = []
    fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    return synced, spy


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names descriptors by /proc")
async def test_durable_writes_sync_the_metadata_and_version_records_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", durable=True)
    synced, spy = _fsync_spy()
    try:
        await backend.set_versioning(True)
        await backend.save("k.txt", b"first", metadata={"m": "1"})
        monkeypatch.setattr(os, "fsync", spy)
        # a power loss after it returns must not leave an empty record (its metadata lost)
        await backend.save("k.txt", b"second", metadata={"m": "2"})
    finally:
        await backend.aclose()
    names = [Path(p).name for p in synced]  # files under their temp names
    assert any(n.startswith(meta_file._where("k.txt")[1]) for n in names)  # its record
    assert any(n.startswith("current") for n in names)  # the live file's version id
    assert any(n.startswith("v-") and ".json" in n for n in names)  # the prior's record


async def test_a_crash_between_keeping_a_version_and_the_rename_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    try:
        await backend.set_versioning(True)
        await backend.save("d/k.txt", b"first")
        await backend.save("d/k.txt", b"second")  # one prior version: 5 bytes
        # a writer killed after linking the live file as a prior version (named with the
        # live file's version id), before its rename
        (live,) = [v for v in await backend.list_versions("d/k.txt") if v.is_latest]
        folder = backend.root.joinpath(*versions._folder("d/k.txt"))
        crashed = f"v-99999999999999999999-{live.version_id}"
        os.link(backend.root / "d" / "k.txt", folder / crashed)
        assert [v.size for v in await backend.list_versions("d/k.txt")] == [6, 5]
        await backend.refresh_usage()
        assert (await backend.get_usage()).used == 11
    finally:
        await backend.aclose()


async def test_a_file_truncated_in_place_while_streamed_fails_the_stream(
    local_backend: LocalStorageBackend,
) -> None:
    mib = 1024 * 1024
    await local_backend.save("big.bin", os.urandom(3 * mib))
    received: list[bytes] = []

    async def read_all() -> None:
        async for chunk in local_backend.stream("big.bin", chunk_size=mib):
            if not received:  # another program rewrites the file in place (`> big.bin`)
                os.truncate(local_backend.root / "big.bin", 10)
            received.append(chunk)

    with pytest.raises(StorageError, match="truncated"):
        await read_all()  # the caller is told its copy is short, not handed it as whole
    assert sum(map(len, received)) < 3 * mib


async def test_a_file_truncated_in_place_while_loaded_fails_the_load(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("k.bin", b"0123456789")
    open_object = _files.open_object

    def truncating(root: Any, key: str) -> Any:
        found = open_object(root, key)
        os.truncate(local_backend.root / "k.bin", 4)  # after the open, before the read
        return found

    monkeypatch.setattr(_files, "open_object", truncating)
    with pytest.raises(StorageError, match="truncated"):
        await local_backend.load("k.bin")


@pytest.mark.parametrize("change", ["truncated", "grew"])
async def test_a_copy_source_rewritten_in_place_meanwhile_fails_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    open_object = _files.open_object

    def rewriting(root: Any, key: str) -> Any:
        found = open_object(root, key)
        # another program rewrites the file in place after the copy opened it
        os.truncate(backend.root / "src.bin", 4 if change == "truncated" else 40)
        return found

    try:
        await backend.save("src.bin", b"0123456789")
        monkeypatch.setattr(_files, "open_object", rewriting)
        with pytest.raises(StorageError, match=change):
            await backend.copy("src.bin", "dst.bin")
        monkeypatch.undo()
        assert not await backend.exists("dst.bin")
        assert (await backend.get_usage()).used == 10  # src as last counted, nothing more
    finally:
        await backend.aclose()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names descriptors by /proc")
async def test_durable_moves_and_deletes_sync_the_folder_they_removed_a_name_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", durable=True)
    synced, spy = _fsync_spy()
    try:
        await backend.save("src/a.bin", b"a")
        await backend.save("src/keep.bin", b"k")  # the folder stays
        await backend.save("gone/b.bin", b"b")
        await backend.save("gone/keep.bin", b"k")
        monkeypatch.setattr(os, "fsync", spy)
        # a power loss after they return must not bring the source or the object back
        await backend.move("src/a.bin", "dst/a.bin")
        await backend.delete("gone/b.bin")
    finally:
        await backend.aclose()
    assert str(backend.root / "src") in synced
    assert str(backend.root / "gone") in synced


@pytest.mark.parametrize("overwrite", [True, False])
async def test_a_temp_file_removed_before_its_rename_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)

    def sweep(point: str, gate: Any) -> None:
        if point == "rename":  # another process's sweep took it for a crashed writer's
            for entry in (backend.root / "d").iterdir():
                entry.unlink()

    try:
        monkeypatch.setattr(_files, "_checkpoint", sweep)
        with pytest.raises(StorageError, match="temp file was removed") as info:
            await backend.save("d/k.bin", b"bytes", overwrite=overwrite)
        assert not isinstance(info.value, ObjectNotFoundError)  # never "not found"
        assert not (backend.root / "d").exists()
        assert (await backend.get_usage()).used == 0
    finally:
        await backend.aclose()


async def test_stale_temp_files_in_the_versions_folder_are_swept(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "s", temp_max_age_seconds=60)
    try:
        await backend.set_versioning(True)
        await backend.save("d/k.txt", b"first")
        await backend.save("d/k.txt", b"second")
        folder = backend.root.joinpath(*versions._folder("d/k.txt"))
        # a writer killed while replacing the key's version list
        stale = folder / f"current{TMP_MARK}deadbeef0000-1"
        stale.write_bytes(b"{}")
        old = time.time() - 3600
        os.utime(stale, (old, old))
        await backend.refresh_usage()
        assert not stale.exists()
        assert [v.size for v in await backend.list_versions("d/k.txt")] == [6, 5]
    finally:
        await backend.aclose()


@pytest.mark.parametrize("made_again", [False, True])
async def test_a_root_folder_deleted_under_the_backend_is_used_again_at_its_path(
    tmp_path: Path, made_again: bool
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    try:
        await backend.save("a/x.bin", b"old")
        shutil.rmtree(backend.root)  # an operator's clean-up, a deploy making it anew
        if made_again:
            backend.root.mkdir()
        await backend.save("a/y.bin", b"new", metadata={"m": "1"})
        assert (backend.root / "a" / "y.bin").read_bytes() == b"new"
        assert await backend.list_files() == ["a/y.bin"]
        assert dict((await backend.stat("a/y.bin")).metadata) == {"m": "1"}
    finally:
        await backend.aclose()


def test_a_huge_file_planted_at_a_sidecar_is_not_read_into_memory(tmp_path: Path) -> None:
    # another local user puts an 8 GiB (sparse) file where a key's metadata lives: every
    # stat read it whole (MemoryError under a memory limit); it now reads as no metadata
    root = tmp_path / "s"
    script = f"""
import asyncio, resource
from file_storage import LocalStorageBackend

async def main():
    async with LocalStorageBackend({str(root)!r}) as backend:
        await backend.save("k.txt", b"hello", metadata={{"m": "1"}})
        with open({str(sidecar_path(root, "k.txt"))!r}, "r+b") as f:
            f.truncate(8 * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))
        info = await backend.stat("k.txt")
        print(info.size, info.content_type, dict(info.metadata))

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["5", "text/plain", "{}"]


@pytest.mark.parametrize("versioning", [False, True], ids=["plain", "versioning"])
async def test_delete_of_a_key_holding_a_fifo_socket_or_device_answers_as_for_a_missing_key(
    tmp_path: Path, special: Callable[[Path], None], versioning: bool
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    try:
        await backend.set_versioning(versioning)
        await backend.save("d/keep.txt", b"kept")
        for key in ("d/planted", "d/many"):
            special(backend.root / key)
        seen: list[ObjectEvent] = []
        backend.subscribe(seen.append)
        await backend.delete("d/never-stored")
        missing = [event.type for event in seen]
        seen.clear()

        await backend.delete("d/planted")
        await backend.delete_many(["d/many"])
        # the same answer as for a key that holds no object (S3 reports such a delete
        # too): no error, and nothing of another process's removed
        assert [event.type for event in seen] == missing * 2
        for key in ("d/planted", "d/many"):
            mode = os.lstat(backend.root / key).st_mode
            assert not stat.S_ISREG(mode)
            assert not stat.S_ISDIR(mode)
        assert await backend.list_files() == ["d/keep.txt"]
        assert (await backend.get_usage()).used == 4
        assert [v.size for v in await backend.list_versions("d/planted")] == []
        assert await backend.delete_prefix("d") == 1
        assert os.path.lexists(backend.root / "d/planted")
    finally:
        await backend.aclose()


async def test_reads_of_a_key_holding_a_fifo_socket_or_device_find_no_object(
    local_backend: LocalStorageBackend, special: Callable[[Path], None]
) -> None:
    special(local_backend.root / "planted")
    assert not await local_backend.exists("planted")
    for read in (local_backend.stat, local_backend.get_size, local_backend.load):
        with pytest.raises(ObjectNotFoundError) as info:
            await read("planted")
        assert info.value.key == "planted"
    assert await local_backend.list_files() == []


async def test_a_sidecar_of_a_million_metadata_names_reads_as_the_defaults(
    tmp_path: Path,
) -> None:
    # no write makes such a record (50 names, 2 KiB at most): another process did, and
    # each stat parsed 14 MB into 150 MB and handed the app a million names
    import hashlib
    import json
    import tracemalloc

    async with LocalStorageBackend(tmp_path) as backend:
        await backend.save("a.txt", b"x", metadata={"k": "v"})
        digest = hashlib.sha256(b"a.txt").hexdigest()
        sidecar = tmp_path / ".file_storage\\meta" / digest[:2] / digest
        raw = json.loads(sidecar.read_text())
        for record in raw["versions"].values():
            record["metadata"] = {f"m{i}": "" for i in range(1_150_000)}
        sidecar.write_text(json.dumps(raw, separators=(",", ":")))
        tracemalloc.start()
        try:
            info = await backend.stat("a.txt")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (info.content_type, info.metadata) == ("text/plain", {})
        assert peak < 16 << 20
        assert await backend.load("a.txt") == b"x"
