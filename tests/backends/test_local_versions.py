"""Versions on local disk: the layout under the root, restarts, crash leftovers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend
from file_storage.backends.local._versions import STATE_FILE, VERSIONS_DIR


async def test_versions_survive_a_new_backend_on_the_same_root(tmp_path: Path) -> None:
    first = LocalStorageBackend(tmp_path / "storage")
    await first.set_versioning(True)
    await first.save("docs/a.txt", b"one", metadata={"rev": "1"})
    await first.save("docs/a.txt", b"two")
    await first.save("docs/gone.txt", b"bye")
    await first.delete("docs/gone.txt")
    before = await first.list_versions("docs/a.txt")
    await first.aclose()

    second = LocalStorageBackend(tmp_path / "storage")
    try:
        assert await second.list_versions("docs/a.txt") == before
        old = before[1].version_id
        assert await second.load("docs/a.txt", version_id=old) == b"one"
        assert (await second.stat("docs/a.txt", version_id=old)).metadata == {"rev": "1"}
        [gone] = await second.list_versions("docs/gone.txt")
        await second.restore_version("docs/gone.txt", gone.version_id)
        assert await second.load("docs/gone.txt") == b"bye"
        await second.save("docs/a.txt", b"three")  # still versioned: the flag was kept
        assert len(await second.list_versions("docs/a.txt")) == 3
        second.set_quota("docs", 1000)
        assert (await second.get_usage("docs")).used == 3 + 3 + 5 + 3 + 3  # every version
    finally:
        await second.aclose()


async def test_versions_live_in_the_reserved_area_and_are_never_listed(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.set_versioning(True)
    await local_backend.save("a/b.txt", b"1")
    await local_backend.save("a/b.txt", b"22")
    root = local_backend.root
    assert (root / STATE_FILE).read_text() == "enabled"
    kept = [p for p in (root / VERSIONS_DIR).rglob("v-*") if not p.name.endswith(".json")]
    assert [p.read_bytes() for p in kept] == [b"1"]
    assert kept[0].parent.parent == root / VERSIONS_DIR / "a"
    assert await local_backend.list_files() == ["a/b.txt"]
    assert await local_backend.list_dirs() == ["a"]


async def test_a_kept_link_to_the_live_file_is_ignored(local_backend: LocalStorageBackend) -> None:
    # a crash between keeping the old file and renaming the new one leaves a link to
    # the file that is still live, named by its own version id: it is not a prior version
    await local_backend.set_versioning(True)
    await local_backend.save("k.txt", b"live")
    await local_backend.save("k.txt", b"live2")
    live_id = (await local_backend.list_versions("k.txt"))[0].version_id
    [kept] = [p for p in (local_backend.root / VERSIONS_DIR).rglob("v-*")]
    os.link(local_backend.root / "k.txt", kept.parent / f"v-99999999999999999999-{live_id}")
    versions = await local_backend.list_versions("k.txt")
    assert [v.size for v in versions] == [5, 4]


async def test_purge_removes_the_kept_files(local_backend: LocalStorageBackend) -> None:
    await local_backend.set_versioning(True)
    for body in (b"1", b"2", b"3"):
        await local_backend.save("deep/p.txt", body)
    await local_backend.purge_versions("deep/p.txt", keep=0)
    assert not (local_backend.root / VERSIONS_DIR / "deep").exists()
    assert not (local_backend.root / "deep").exists()


async def test_a_write_survives_the_versions_folder_being_cleaned_up_under_it(
    local_backend: LocalStorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another key's clean-up removes the (empty) versions folder just after this write
    # made it and before it makes its key's folder inside: the write walks again
    from file_storage.backends.local import _fs

    real_mkdir = os.mkdir
    cleaned = []

    def mkdir(name: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        if name.startswith("\\") and not cleaned:
            cleaned.append(name)
            os.rmdir(tmp_path / VERSIONS_DIR)  # what remove_empty_parents does
        real_mkdir(name, mode, dir_fd=dir_fd)

    await local_backend.set_versioning(True)
    monkeypatch.setattr(_fs.os, "mkdir", mkdir)
    await local_backend.save("a", b"one")
    await local_backend.save("a", b"two")
    monkeypatch.undo()
    assert cleaned
    assert await local_backend.load("a") == b"two"
    assert [v.size for v in await local_backend.list_versions("a")] == [3, 3]
