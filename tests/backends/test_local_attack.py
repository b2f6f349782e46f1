"""The local backend attacked after the hardening of issue #12: what a second process
renaming entries under the root, or a hostile caller, could still do."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend

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
