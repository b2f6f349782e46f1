"""Writes of the local backend onto a key another process made a FIFO, socket or device:
refused with ObjectConflictError (as onto a folder) before any byte is written, without
waiting, with no temp file left and the entry untouched."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, ObjectConflictError, ObjectNotFoundError
from file_storage.backends.local import _files
from file_storage.backends.local._io import TMP_MARK

KEY = "d/dst"

Write = Callable[[LocalStorageBackend, Path], Awaitable[object]]


async def _save(backend: LocalStorageBackend, tmp_path: Path) -> object:
    return await backend.save(KEY, b"new bytes")


async def _save_create_only(backend: LocalStorageBackend, tmp_path: Path) -> object:
    return await backend.save(KEY, b"new bytes", overwrite=False)


async def _upload_file(backend: LocalStorageBackend, tmp_path: Path) -> object:
    local = tmp_path / "upload.bin"
    local.write_bytes(b"new bytes")
    return await backend.upload_file(local, KEY)


async def _copy(backend: LocalStorageBackend, tmp_path: Path) -> object:
    return await backend.copy("src.txt", KEY)


async def _copy_with_headers(backend: LocalStorageBackend, tmp_path: Path) -> object:
    return await backend.copy("src.txt", KEY, cache_control="no-store")


async def _move(backend: LocalStorageBackend, tmp_path: Path) -> object:
    return await backend.move("src.txt", KEY)


async def _restore_version(backend: LocalStorageBackend, tmp_path: Path) -> object:
    (first, *_) = [v for v in await backend.list_versions(KEY) if v.size == 3]
    return await backend.restore_version(KEY, first.version_id)


WRITES: dict[str, tuple[str, Write]] = {
    "save": ("save", _save),
    "save-create-only": ("save", _save_create_only),
    "upload_file": ("upload_file", _upload_file),
    "copy": ("copy", _copy),
    "copy-with-headers": ("copy", _copy_with_headers),
    "move": ("move", _move),
    "restore_version": ("restore_version", _restore_version),
}


def _temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if TMP_MARK in p.name]


@pytest.mark.parametrize("write", list(WRITES), ids=list(WRITES))
async def test_a_write_onto_a_fifo_socket_or_device_is_a_conflict_and_leaves_it(
    tmp_path: Path, special: Callable[[Path], None], write: str
) -> None:
    operation, act = WRITES[write]
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    try:
        await backend.set_versioning(True)
        await backend.save("src.txt", b"source")
        await backend.save(KEY, b"old")  # a prior version for restore_version
        await backend.save(KEY, b"newer")
        (backend.root / KEY).unlink()  # another process swaps the key's file for ...
        special(backend.root / KEY)
        before = os.lstat(backend.root / KEY)
        used = (await backend.get_usage()).used

        with pytest.raises(ObjectConflictError) as info:
            # a write opening the FIFO would block this thread: bounded
            await asyncio.wait_for(act(backend, tmp_path), 30)

        assert (info.value.operation, info.value.key) == (operation, KEY)
        after = os.lstat(backend.root / KEY)
        assert (after.st_ino, stat.S_IFMT(after.st_mode)) == (
            before.st_ino,
            stat.S_IFMT(before.st_mode),
        )
        assert _temp_files(backend.root) == []
        assert await backend.load("src.txt") == b"source"
        assert await backend.list_files() == ["src.txt"]
        assert (await backend.get_usage()).used == used
    finally:
        await backend.aclose()


@pytest.mark.parametrize("write", ["save", "save-create-only", "copy", "move"])
async def test_a_fifo_socket_or_device_made_just_before_the_rename_is_a_conflict(
    tmp_path: Path,
    special: Callable[[Path], None],
    write: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operation, act = WRITES[write]
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)

    def checkpoint(point: str, gate: object) -> None:
        if point == "rename":  # after the write's first look at the key, bytes written
            special(backend.root / KEY)

    try:
        await backend.save("src.txt", b"source")
        monkeypatch.setattr(_files, "_checkpoint", checkpoint)
        with pytest.raises(ObjectConflictError) as info:
            await asyncio.wait_for(act(backend, tmp_path), 30)
        assert (info.value.operation, info.value.key) == (operation, KEY)
        mode = os.lstat(backend.root / KEY).st_mode
        assert not stat.S_ISREG(mode)
        assert not stat.S_ISDIR(mode)
        assert _temp_files(backend.root) == []
        assert await backend.list_files() == ["src.txt"]
        assert (await backend.get_usage()).used == len(b"source")
    finally:
        await backend.aclose()


async def test_a_stream_of_a_fifo_socket_or_device_finds_no_object(
    local_backend: LocalStorageBackend, special: Callable[[Path], None]
) -> None:
    special(local_backend.root / "d" / "planted")
    with pytest.raises(ObjectNotFoundError):
        await asyncio.wait_for(_drain(local_backend.stream("d/planted")), 30)
    assert await local_backend.list_dirs() == []
    assert [info.key async for info in local_backend.iter_files("d/")] == []


async def _drain(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])
