"""Local disk faults beyond save (tests/backends/test_local.py has save): copy, move,
upload_file and download_file under a full disk or a refused permission.

The disk "fills up" where the bytes are written: the copy call writes part of the file,
then fails with ENOSPC, as a real full disk does.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    LocalStorageBackend,
    StoragePermissionError,
    StorageUnavailableError,
)
from file_storage.backends.local import _backend, _files

PREVIOUS = b"previous version"


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file copy writes a few bytes of the target, then the disk is full."""

    def copy_fd(src: int, dst: int, gate: Any) -> int:
        os.write(dst, b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    for module in (_backend, _files):  # copies and moves; download_file
        monkeypatch.setattr(module, "copy_fd", copy_fd)


@pytest.fixture
async def stored(local_backend: LocalStorageBackend) -> LocalStorageBackend:
    await local_backend.save("src.bin", b"source bytes")
    await local_backend.save("dst.bin", PREVIOUS)
    return local_backend


@pytest.mark.usefixtures("disk_full")
async def test_copy_on_a_full_disk_keeps_the_previous_version_and_no_temp_file(
    stored: LocalStorageBackend,
) -> None:
    with pytest.raises(StorageUnavailableError, match="no space left") as info:
        await stored.copy("src.bin", "dst.bin")
    assert (info.value.operation, info.value.key) == ("copy", "src.bin")
    assert await stored.load("dst.bin") == PREVIOUS
    assert files_under(stored.root) == ["dst.bin", "src.bin"]


@pytest.mark.usefixtures("disk_full")
async def test_upload_file_on_a_full_disk_keeps_the_previous_version_and_no_temp_file(
    stored: LocalStorageBackend, tmp_path: Path
) -> None:
    source = tmp_path / "upload.bin"
    source.write_bytes(b"new version")
    with pytest.raises(StorageUnavailableError, match="no space left"):
        await stored.upload_file(source, "dst.bin")
    assert await stored.load("dst.bin") == PREVIOUS
    assert files_under(stored.root) == ["dst.bin", "src.bin"]


async def test_streamed_upload_file_on_a_full_disk_leaves_no_temp_file(
    stored: LocalStorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "upload.bin"
    source.write_bytes(b"new version")

    def full(fd: int, buffers: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", full)
    with pytest.raises(StorageUnavailableError):  # with progress: the streamed path
        await stored.upload_file(source, "dst.bin", progress=lambda done, total: None)
    assert await stored.load("dst.bin") == PREVIOUS
    assert files_under(stored.root) == ["dst.bin", "src.bin"]


@pytest.mark.usefixtures("disk_full")
async def test_download_file_on_a_full_disk_leaves_nothing_at_the_target(
    stored: LocalStorageBackend, tmp_path: Path
) -> None:
    target = tmp_path / "downloads" / "out.bin"
    with pytest.raises(StorageUnavailableError, match="no space left"):
        await stored.download_file("src.bin", target)
    assert list(target.parent.iterdir()) == []


async def test_move_refused_by_the_disk_keeps_both_objects(
    stored: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(src: Any, dst: Any, **dir_fds: int) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(StoragePermissionError) as info:
        await stored.move("src.bin", "dst.bin")
    assert (info.value.operation, info.value.key) == ("move", "src.bin")
    monkeypatch.undo()
    assert await stored.load("src.bin") == b"source bytes"
    assert await stored.load("dst.bin") == PREVIOUS
    assert files_under(stored.root) == ["dst.bin", "src.bin"]
