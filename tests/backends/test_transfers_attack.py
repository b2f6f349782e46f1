"""download_file, local_copy, staged_upload and upload_file attacked as a user running
tools on local copies of large files, and as a second process on the same machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import aiofiles.base
import aiofiles.os
import pytest

from file_storage import StorageBackend, StorageError

from .test_local_attack import open_fds

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")


@pytest.fixture(params=["local", "memory"])
def backend(request: pytest.FixtureRequest) -> StorageBackend:
    b: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return b


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


async def _tool_fails_in(block: contextlib.AbstractAsyncContextManager[Path]) -> None:
    async with block as path:
        path.write_bytes(b"half")
        raise ValueError("the tool failed")


async def test_failed_transfers_leak_no_descriptor_nor_temp_file(
    backend: StorageBackend, tmp_path: Path, temp: Path
) -> None:
    await backend.save("a.bin", b"a" * 10)
    async with backend.local_copy("a.bin"):
        pass
    before = open_fds()
    for _ in range(3):
        with pytest.raises(StorageError):
            await backend.download_file("missing.bin", tmp_path / "o" / "x.bin")
        with pytest.raises(StorageError):
            await backend.upload_file(tmp_path / "missing", "u.bin")
        with pytest.raises(ValueError, match="the tool failed"):
            await _tool_fails_in(backend.staged_upload("s.bin"))
        with pytest.raises(ValueError, match="the tool failed"):
            await _tool_fails_in(backend.local_copy("a.bin"))
    assert open_fds() == before
    assert list(temp.iterdir()) == []
    assert list((tmp_path / "o").iterdir()) == []


async def test_staged_upload_cancelled_in_its_block_stores_nothing(
    backend: StorageBackend, temp: Path
) -> None:
    entered = asyncio.Event()
    staged: list[Path] = []

    async def tool() -> None:
        async with backend.staged_upload("s.bin") as path:
            staged.append(path)
            path.write_bytes(b"half")
            entered.set()
            await asyncio.Event().wait()  # the tool runs until the request is cancelled

    task = asyncio.create_task(tool())
    await entered.wait()
    assert staged[0].parent.parent == temp
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await backend.list_files() == []
    assert list(temp.iterdir()) == []


async def test_download_onto_a_file_system_without_permission_bits_still_replaces_the_file(
    backend: StorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FAT (a USB stick) refuses chmod: the replaced file's bits cannot be kept, nor exist
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    await backend.save("a.bin", b"new")

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refused)
    await backend.download_file("a.bin", target)
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir() if p.name != "storage"] == ["out.bin"]


async def test_local_download_without_progress_writes_a_private_temp_file(
    local_backend: StorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without progress the local backend copies in a thread of its own (copy_fd): the
    # file it copies into must be private too, until download_file gives it its mode
    from file_storage.backends.local import _backend

    modes: list[int] = []

    def looking(src: int, dst: int, gate: _backend.Gate) -> int:
        modes.append(os.fstat(dst).st_mode & 0o777)
        return copy_fd(src, dst, gate)

    copy_fd = _backend.copy_fd
    monkeypatch.setattr(_backend, "copy_fd", looking)
    await local_backend.save("a.bin", b"new bytes")
    target = tmp_path / "out" / "a.bin"
    umask = os.umask(0o022)
    try:
        await local_backend.download_file("a.bin", target)
    finally:
        os.umask(umask)
    assert modes == [0o600]
    assert target.read_bytes() == b"new bytes"
    assert target.stat().st_mode & 0o777 == 0o644


async def test_local_copy_cancelled_as_its_folder_is_made_leaves_no_temp_folder(
    memory_backend: StorageBackend, temp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the download makes the folders above its target in a thread: a caller cancelled
    # meanwhile removed the temp folder at once, and the thread then made it again
    await memory_backend.save("v/clip.webm", b"n" * 10)
    entered, removed, made = threading.Event(), threading.Event(), threading.Event()
    real_makedirs, real_rmtree = os.makedirs, shutil.rmtree

    def makedirs(name: Any, *args: Any, **kwargs: Any) -> None:
        if Path(name).parent == temp:
            entered.set()
            removed.wait(2)  # a window the clean-up ran in (2 s at most when it waits)
            try:
                real_makedirs(name, *args, **kwargs)
            finally:
                made.set()
        else:
            real_makedirs(name, *args, **kwargs)

    def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
        real_rmtree(path, *args, **kwargs)
        removed.set()

    monkeypatch.setattr(aiofiles.os, "makedirs", aiofiles.base.wrap(makedirs))
    monkeypatch.setattr(shutil, "rmtree", rmtree)

    async def use() -> None:
        async with memory_backend.local_copy("v/clip.webm"):
            pass

    task = asyncio.create_task(use())
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(made.wait, 10)  # the thread has done what it would
    assert list(temp.iterdir()) == []
