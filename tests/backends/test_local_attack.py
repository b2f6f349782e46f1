"""The local backend attacked after the hardening of issue #12: what a second process
renaming entries under the root, or a hostile caller, could still do."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    LocalStorageBackend,
    ObjectNotFoundError,
    StorageBackend,
    StorageError,
    StorageUnavailableError,
)
from file_storage.backends import _writes
from file_storage.backends.local import _backend, _files
from file_storage.backends.local import _meta as meta_file
from file_storage.backends.local import _versions as versions

SECRET = b"outside the root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "clip.webm").write_bytes(SECRET)
    return folder


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_folder_swapped_for_a_link_out_while_a_local_copy_is_held_never_reads_outside(
    local_backend: LocalStorageBackend, outside: Path
) -> None:
    await local_backend.save("v/clip.webm", b"inside")
    root = local_backend.root
    async with local_backend.local_copy("v/clip.webm") as path:
        # a tool (FFmpeg) opens the path later: meanwhile someone swaps the folder
        os.rename(root / "v", root / "v-moved")
        os.symlink(outside, root / "v")
        assert path.read_bytes() == b"inside"


async def test_local_copy_of_an_object_replaced_meanwhile_keeps_the_version_opened(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("v/clip.webm", b"first")
    async with local_backend.local_copy("v/clip.webm") as path:
        await local_backend.save("v/clip.webm", b"second")
        assert path.read_bytes() == b"first"
    assert await local_backend.load("v/clip.webm") == b"second"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
async def test_local_copy_releases_its_descriptor_and_temp_folder(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("v/clip.webm", b"x")
    async with local_backend.local_copy("v/clip.webm"):
        pass  # the root's descriptor is open from here on
    before = open_fds()
    for _ in range(3):
        async with local_backend.local_copy("v/clip.webm") as path:
            assert path.read_bytes() == b"x"
        assert not path.exists()
        assert not path.parent.exists()
    with pytest.raises(ValueError, match="the tool failed"):
        async with local_backend.local_copy("v/clip.webm"):
            raise ValueError("the tool failed")
    assert open_fds() == before


async def test_local_copy_without_proc_hands_a_private_copy(
    local_backend: LocalStorageBackend, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("v/clip.webm", b"inside")
    real_exists = os.path.exists
    monkeypatch.setattr(
        os.path, "exists", lambda p: False if str(p).startswith("/proc/") else real_exists(p)
    )
    root = local_backend.root
    async with local_backend.local_copy("v/clip.webm") as path:
        os.rename(root / "v", root / "v-moved")
        os.symlink(outside, root / "v")
        assert path.read_bytes() == b"inside"
        assert not path.is_symlink()
    assert not path.exists()


async def test_listings_of_the_root_during_the_first_use_sweep_see_every_object(
    tmp_path: Path,
) -> None:
    # each scan reads the root folder through its own descriptor: a dup of the root's
    # shares the read position, so a listing running beside the temp-file sweep that the
    # first use starts (or beside another listing) ended early, empty
    keys = sorted(f"f{i:03}.txt" for i in range(60))
    root = tmp_path / "root"
    root.mkdir()
    for key in keys:
        (root / key).write_bytes(b"x")
    for _ in range(30):
        backend = LocalStorageBackend(root)  # a new process's first use: a sweep starts
        try:
            listings = await asyncio.gather(*(backend.list_files() for _ in range(3)))
            assert listings == [keys] * 3
        finally:
            await backend.aclose()


# Another process writing one key: it says "go" when about to save, then saves.
_OTHER = """
import asyncio, sys
from file_storage import (
    LocalStorageBackend,
    ObjectNotFoundError,
    StorageBackend,
    StorageError,
    StorageUnavailableError,
)
async def main():
    backend = LocalStorageBackend(sys.argv[1])
    print("go", flush=True)
    await backend.save(sys.argv[2], b"other", metadata={"by": "other"})
    await backend.aclose()
asyncio.run(main())
"""


def run_other_process_during(root: Path, key: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """A hook that starts another process writing ``key`` and gives it until it is done,
    or (blocked by this process's lock) a bounded while; the caller then ``wait()``s."""
    procs: list[subprocess.Popen[str]] = []

    def hook() -> None:
        if procs:
            return
        proc = subprocess.Popen(
            [sys.executable, "-c", _OTHER, str(root), key], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "go\n"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=3)  # the save itself takes milliseconds unless it waits for us

    def wait() -> None:
        assert procs
        with procs[0] as proc:  # closes its pipe
            assert proc.wait(timeout=60) == 0

    return hook, wait


async def test_another_process_writing_between_a_rename_and_its_sidecar_drop_keeps_its_metadata(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("d/a.txt", b"first", metadata={"by": "first"})
    hook, wait = run_other_process_during(local_backend.root, "d/a.txt")
    drop = meta_file.drop

    def widened(*args: Any) -> None:
        hook()  # our rename is done; its sidecar drop is next
        drop(*args)

    monkeypatch.setattr(meta_file, "drop", widened)
    await local_backend.save("d/a.txt", b"ours")  # defaults: no sidecar, the old one dropped
    wait()
    # the last write landed is the other process's: its bytes with its metadata
    assert await local_backend.load("d/a.txt") == b"other"
    assert (await local_backend.stat("d/a.txt")).metadata == {"by": "other"}


async def test_if_match_is_exact_against_another_process_writing_the_key(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("d/a.txt", b"first")
    etag = (await local_backend.stat("d/a.txt")).etag
    assert etag is not None
    hook, wait = run_other_process_during(local_backend.root, "d/a.txt")
    check = _files.check_match

    def widened(*args: Any) -> None:
        check(*args)  # the condition held: the rename is next
        hook()

    monkeypatch.setattr(_files, "check_match", widened)
    await local_backend.save("d/a.txt", b"ours", if_match=etag)
    wait()
    # ours replaced "first" as its condition said; the other write came after, and stays
    assert await local_backend.load("d/a.txt") == b"other"


async def cancel_in_thread(
    task: asyncio.Task[Any],
    started: threading.Event,
    go: threading.Event,
    finished: threading.Event,
) -> None:
    """Cancel ``task`` while its worker thread waits at ``started`` (then let it ``go``):
    the call must raise CancelledError; returns once the thread has ``finished``."""
    await asyncio.to_thread(started.wait)
    task.cancel()
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(finished.wait)


@pytest.mark.parametrize("many", [False, True])
async def test_a_delete_cancelled_in_its_thread_is_either_undone_or_uncounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, many: bool
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    await backend.save("a.bin", b"x" * 600)
    started, go, finished = threading.Event(), threading.Event(), threading.Event()
    delete_sync = _files.LocalFiles._delete_sync

    def paused(self: _files.LocalFiles, *args: Any) -> bool:
        started.set()
        go.wait()
        try:
            return delete_sync(self, *args)
        finally:
            finished.set()

    monkeypatch.setattr(_files.LocalFiles, "_delete_sync", paused)
    task = asyncio.create_task(backend.delete_many(["a.bin"]) if many else backend.delete("a.bin"))
    await cancel_in_thread(task, started, go, finished)
    if await backend.exists("a.bin"):
        return  # not deleted: still counted, rightly
    await backend.save("b.bin", b"y" * 600)  # deleted: its 600 bytes are free
    await backend.aclose()


async def test_a_download_cancelled_in_its_thread_leaves_no_file_beside_the_target(
    local_backend: LocalStorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("a.bin", b"x" * 600)
    started, go, finished = threading.Event(), threading.Event(), threading.Event()
    open_object, copy_fd = _backend.open_object, _backend.copy_fd

    def paused(*args: Any) -> Any:
        started.set()
        go.wait()
        return open_object(*args)

    def copied(*args: Any) -> int:
        try:
            return copy_fd(*args)
        finally:
            finished.set()  # the file beside the target is open (made) by now

    monkeypatch.setattr(_backend, "open_object", paused)
    monkeypatch.setattr(_backend, "copy_fd", copied)
    out = tmp_path / "out"
    task = asyncio.create_task(local_backend.download_file("a.bin", out / "a.bin"))
    await cancel_in_thread(task, started, go, finished)
    assert sorted(p.name for p in out.iterdir()) == []


async def test_a_version_purge_cancelled_in_its_thread_frees_what_it_purged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from file_storage.backends.local import _versions

    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    await backend.set_versioning(True)
    await backend.save("a.bin", b"x" * 400)
    await backend.save("a.bin", b"y" * 400)  # the first stays as a prior version
    started, go, finished = threading.Event(), threading.Event(), threading.Event()
    purge = _versions.purge

    def paused(*args: Any) -> None:
        started.set()
        go.wait()
        try:
            purge(*args)
        finally:
            finished.set()

    monkeypatch.setattr(_versions, "purge", paused)
    task = asyncio.create_task(backend.purge_versions("a.bin", keep=1))
    await cancel_in_thread(task, started, go, finished)
    if len(await backend.list_versions("a.bin")) == 2:
        return  # not purged: still counted, rightly
    await backend.save("b.bin", b"z" * 500)  # purged: the prior version's 400 bytes are free
    await backend.aclose()


@pytest.fixture(
    params=[("local", "local_copy"), ("memory", "local_copy"), ("memory", "staged_upload")],
    ids=["local-local_copy", "memory-local_copy", "memory-staged_upload"],
)
def temp_user(request: pytest.FixtureRequest) -> tuple[StorageBackend, str]:
    """A backend and a method of it that makes a temp folder (the local backend's own
    local_copy, the base class's local_copy and staged_upload)."""
    kind, use = request.param
    backend: StorageBackend = request.getfixturevalue(f"{kind}_backend")
    return backend, use


async def test_a_temp_folder_cancelled_while_being_made_is_not_left_behind(
    temp_user: tuple[StorageBackend, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, use = temp_user
    await backend.save("v/clip.webm", b"x")
    temp = tmp_path / "temp"
    temp.mkdir()
    started, go, finished = threading.Event(), threading.Event(), threading.Event()
    mkdtemp = tempfile.mkdtemp

    def paused(*args: Any, **kwargs: Any) -> str:
        started.set()
        go.wait()  # the caller is cancelled here, before the folder exists
        try:
            return mkdtemp(*args, **{**kwargs, "dir": temp})
        finally:
            finished.set()

    monkeypatch.setattr(tempfile, "mkdtemp", paused)

    async def hold() -> None:
        async with getattr(backend, use)("v/clip.webm"):
            raise AssertionError("never entered")

    task = asyncio.create_task(hold())
    await cancel_in_thread(task, started, go, finished)
    assert list(temp.iterdir()) == []


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
    parts, name = meta_file._where(key)
    return backend.root.joinpath(*parts, name)


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
async def test_a_fifo_or_folder_in_place_of_the_versioning_state_reads_as_never_enabled(
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
        await local_backend.save("sock", b"replaced")  # a write puts an object in its place
        assert await local_backend.load("sock") == b"replaced"


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


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names descriptors by /proc")
async def test_durable_writes_sync_the_metadata_and_version_records_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", durable=True)
    synced: list[str] = []
    fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

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
