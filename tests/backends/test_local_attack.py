"""The local backend attacked after the hardening of issue #12: what a second process
renaming entries under the root, or a hostile caller, could still do."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend, StorageBackend
from file_storage.backends.local import _backend, _files
from file_storage.backends.local import _meta as meta_file

SECRET = b"outside the root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "clip.webm").write_bytes(SECRET)
    return folder


def open_fds() -> set[tuple[str, str]]:
    """This process's descriptors and what each is open on."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # (the listing's own, closed since)
            found.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
    return found


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
    # none left open (another test's leftovers may close theirs meanwhile: not counted)
    assert open_fds() - before == set()


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
from file_storage import LocalStorageBackend, StorageBackend
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
