"""Local versions against a damaged or hostile versions store and failing reads of its
records: no prior version silently dropped, typed errors, nothing outside the root read."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend, ObjectNotFoundError, ObjectVersion, StorageError
from file_storage.backends.local import _meta as meta_file
from file_storage.backends.local import _versions as versions
from file_storage.backends.local._fs import Found, Root
from file_storage.backends.local._versions import STATE_FILE


async def _sizes(backend: LocalStorageBackend, key: str) -> list[int]:
    return [v.size for v in await backend.list_versions(key)]


async def _two_versions(backend: LocalStorageBackend) -> str:
    """``k.txt`` with a prior version ``b"old!"``; returns that version's id."""
    await backend.set_versioning(True)
    await backend.save("k.txt", b"old!")
    await backend.save("k.txt", b"new")
    return (await backend.list_versions("k.txt"))[1].version_id


def _failing_read(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Reading the record ``name`` fails as with every descriptor taken (EMFILE)."""
    read_small = versions.read_small

    def failing(dir_fd: int, file: str) -> bytes | None:
        if file == name:
            raise OSError(errno.EMFILE, "Too many open files")
        return read_small(dir_fd, file)

    monkeypatch.setattr(versions, "read_small", failing)


@pytest.mark.parametrize("record", [STATE_FILE, "current"])
async def test_a_failing_read_of_a_version_record_fails_the_write_and_keeps_every_version(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch, record: str
) -> None:
    await _two_versions(local_backend)
    if record == "current":
        await local_backend.set_versioning(False)  # the live version keeps its own id
    _failing_read(monkeypatch, record)
    with pytest.raises(StorageError):
        await local_backend.save("k.txt", b"newest")
    with pytest.raises(StorageError):
        await local_backend.delete("k.txt")
    monkeypatch.undo()
    assert await local_backend.load("k.txt") == b"new"
    assert await _sizes(local_backend, "k.txt") == [3, 4]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
async def test_a_versioning_state_replaced_by_a_non_file_still_keeps_versions_with_ids(
    local_backend: LocalStorageBackend, tmp_path: Path, kind: str
) -> None:
    await _two_versions(local_backend)
    state = local_backend.root / STATE_FILE
    state.unlink()
    if kind == "symlink":
        (tmp_path / "elsewhere").write_text("enabled")
        state.symlink_to(tmp_path / "elsewhere")
    elif kind == "fifo":
        os.mkfifo(state)
    else:
        state.mkdir()
    await local_backend.save("k.txt", b"newest")  # read as suspended: never as "off"
    assert await _sizes(local_backend, "k.txt") == [6, 3, 4]
    assert (tmp_path / "elsewhere").exists() is (kind == "symlink")


@pytest.mark.parametrize("name", ["v-junk", "v-", "v-1-"])
async def test_a_stray_entry_named_like_a_version_is_not_one(
    local_backend: LocalStorageBackend, name: str
) -> None:
    await _two_versions(local_backend)
    folder = local_backend.root.joinpath(*versions._folder("k.txt"))
    (folder / name).write_bytes(b"planted")
    local_backend.set_quota("", 1000)
    assert await _sizes(local_backend, "k.txt") == [3, 4]
    await local_backend.refresh_usage("")
    assert (await local_backend.get_usage("")).used == 7
    await local_backend.save("k.txt", b"newest")
    assert await _sizes(local_backend, "k.txt") == [6, 3, 4]


@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink"])
async def test_a_version_file_swapped_after_its_listing_reads_as_no_such_version(
    local_backend: LocalStorageBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    old = await _two_versions(local_backend)
    folder = local_backend.root.joinpath(*versions._folder("k.txt"))
    [kept] = [p for p in folder.iterdir() if p.name.startswith("v-")]
    (tmp_path / "outside").write_bytes(b"SECRET")
    listed = versions._Key.kept

    def swapped(self: versions._Key, live: os.stat_result | None) -> list[versions._Kept]:
        out = listed(self, live)
        if kept.exists() and not kept.is_symlink():  # swap it once, after its lstat
            kept.unlink()
            if kind == "folder":
                kept.mkdir()
            elif kind == "fifo":
                os.mkfifo(kept)
            else:
                kept.symlink_to(tmp_path / "outside")
        return out

    monkeypatch.setattr(versions._Key, "kept", swapped)
    with pytest.raises(ObjectNotFoundError) as caught:
        await local_backend.load("k.txt", version_id=old)
    assert (caught.value.operation, caught.value.key) == ("load", "k.txt")


async def test_a_scan_never_opens_a_key_named_outside_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000)
    try:
        await _two_versions(backend)
        folder = backend.root.joinpath(*versions._folder("k.txt"))
        # a planted record naming a file two levels above the root
        (tmp_path / "outside.txt").write_bytes(b"SECRET")
        (folder / "name").write_text("../../../outside.txt")
        opened: list[str] = []
        open_object = versions.open_object

        def recording(root: Root, key: str) -> Found:
            opened.append(key)
            return open_object(root, key)

        monkeypatch.setattr(versions, "open_object", recording)
        await backend.refresh_usage()
        assert not [key for key in opened if ".." in key.split("/")]
    finally:
        await backend.aclose()


@pytest.mark.parametrize("kind", ["fifo", "garbage"])
@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "suspended"])
async def test_a_damaged_version_record_never_drops_the_live_version(
    local_backend: LocalStorageBackend, kind: str, enabled: bool
) -> None:
    await _two_versions(local_backend)  # the live b"new" has an id of its own
    await local_backend.set_versioning(enabled)
    current = local_backend.root.joinpath(*versions._folder("k.txt"), "current")
    current.unlink()
    if kind == "fifo":
        os.mkfifo(current)
    else:
        current.write_text("{not json")
    await local_backend.save("k.txt", b"newest")
    await local_backend.set_versioning(False)
    await local_backend.save("k.txt", b"latest!")  # replaces the "null" version only
    listed = await local_backend.list_versions("k.txt")
    assert [v.size for v in listed] == ([7, 6, 3, 4] if enabled else [7, 3, 4])
    assert await local_backend.load("k.txt", version_id=listed[-2].version_id) == b"new"


async def test_a_failing_read_of_the_metadata_record_fails_the_write_and_keeps_it(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.set_versioning(True)
    await local_backend.save("k.txt", b"one", content_type="text/csv", metadata={"rev": "1"})

    def failing(dir_fd: int, name: str, limit: int = 0) -> bytes | None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(meta_file, "read_small", failing)
    with pytest.raises(StorageError):
        await local_backend.save("k.txt", b"two", metadata={"rev": "2"})
    monkeypatch.undo()
    await local_backend.save("k.txt", b"two", metadata={"rev": "2"})
    old = (await local_backend.list_versions("k.txt"))[1].version_id
    info = await local_backend.stat("k.txt", version_id=old)
    assert (info.content_type, info.metadata) == ("text/csv", {"rev": "1"})


async def test_a_write_landing_while_purge_lists_is_never_purged_with_keep_1(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.set_versioning(True)
    await local_backend.set_versioning(False)
    await local_backend.save("k.txt", b"null")  # the "null" version
    await local_backend.set_versioning(True)
    await local_backend.save("k.txt", b"kept")  # an id; "null" is a prior version now
    listed = versions.LocalVersions._list_versions

    async def then_a_write(self: LocalStorageBackend, key: str) -> list[ObjectVersion]:
        out = await listed(self, key)
        monkeypatch.undo()
        # another task suspends versioning and writes: a new "null" version, the latest
        await local_backend.set_versioning(False)
        await local_backend.save("k.txt", b"written after the listing")
        return out

    monkeypatch.setattr(versions.LocalVersions, "_list_versions", then_a_write)
    await local_backend.purge_versions("k.txt", keep=1)
    assert await local_backend.load("k.txt") == b"written after the listing"


@pytest.mark.parametrize("record", ["current", "name"])
async def test_a_folder_planted_at_a_version_record_fails_the_write_clearly_and_loses_nothing(
    local_backend: LocalStorageBackend, record: str
) -> None:
    await _two_versions(local_backend)
    folder = local_backend._dir.path.joinpath(*versions._folder("k.txt"))
    (folder / record).unlink()
    (folder / record).mkdir()
    (folder / record / "theirs").write_bytes(b"not ours")
    before = await local_backend.list_versions("k.txt")
    with pytest.raises(StorageError) as caught:
        await local_backend.save("k.txt", b"newest")
    # the key is no folder: the backend's own record is what is in the way
    assert type(caught.value) is StorageError
    assert (caught.value.operation, caught.value.key) == ("save", "k.txt")
    assert f"record {record!r}" in str(caught.value)
    assert await local_backend.load("k.txt") == b"new"
    assert await local_backend.list_versions("k.txt") == before
    assert (folder / record / "theirs").read_bytes() == b"not ours"
    assert sorted(p.name for p in folder.iterdir() if "tmp" in p.name) == []


async def test_a_folder_planted_at_the_versioning_state_fails_set_versioning_clearly(
    local_backend: LocalStorageBackend,
) -> None:
    (local_backend._dir.path / STATE_FILE).mkdir(parents=True)
    with pytest.raises(StorageError) as caught:
        await local_backend.set_versioning(True)
    assert type(caught.value) is StorageError
    assert caught.value.operation == "set_versioning"
    assert "record" in str(caught.value)
    await local_backend.save("k.txt", b"one")
    await local_backend.save("k.txt", b"two")  # read as suspended: nothing with an id lost
    assert await local_backend.load("k.txt") == b"two"


async def test_a_link_planted_at_the_current_record_is_never_followed(
    local_backend: LocalStorageBackend, tmp_path: Path
) -> None:
    await _two_versions(local_backend)
    folder = local_backend._dir.path.joinpath(*versions._folder("k.txt"))
    outside = tmp_path / "outside.json"
    outside.write_bytes(b"{}")
    (folder / "current").unlink()
    (folder / "current").symlink_to(outside)
    await local_backend.save("k.txt", b"newest")  # the link is replaced, not written through
    assert outside.read_bytes() == b"{}"
    assert [v.size for v in await local_backend.list_versions("k.txt")] == [6, 3, 4]
    assert await local_backend.load("k.txt") == b"newest"


async def test_a_restore_racing_a_rewrite_of_the_key_keeps_both(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await _two_versions(local_backend)
    loop = asyncio.get_running_loop()
    opened = versions.open_version

    def then_a_rewrite(root: Root, key: str, version_id: str) -> Any:
        out = opened(root, key, version_id)  # the restore has its source open
        monkeypatch.setattr(versions, "open_version", opened)
        # another task rewrites the key (and purges the version being restored) meanwhile
        write = local_backend.save("k.txt", b"rewritten")
        asyncio.run_coroutine_threadsafe(write, loop).result(timeout=60)
        purge = local_backend.purge_versions("k.txt", keep=1)
        asyncio.run_coroutine_threadsafe(purge, loop).result(timeout=60)
        return out

    monkeypatch.setattr(versions, "open_version", then_a_rewrite)
    await local_backend.restore_version("k.txt", old)
    assert await local_backend.load("k.txt") == b"old!"  # the restore, the latest
    assert await _sizes(local_backend, "k.txt") == [4, 9]  # the rewrite kept under it


@pytest.mark.parametrize("depth", [0, 1], ids=["key-folder", "mirrored-folder"])
async def test_a_file_planted_in_the_versions_folders_fails_writes_clearly(
    local_backend: LocalStorageBackend, depth: int
) -> None:
    await local_backend.set_versioning(True)
    await local_backend.save("a/k.txt", b"one")
    await local_backend.save("a/k.txt", b"two")
    parts = versions._folder("a/k.txt")
    target = local_backend._dir.path.joinpath(*parts[: len(parts) - depth])
    target.rename(target.with_name("moved away"))
    target.write_bytes(b"planted")
    for write in (
        lambda: local_backend.save("a/k.txt", b"three"),
        lambda: local_backend.delete("a/k.txt"),
    ):
        with pytest.raises(StorageError) as caught:
            await write()
        # the key lies under no object: the backend's own folder is what is in the way
        assert type(caught.value) is StorageError
        assert caught.value.key == "a/k.txt"
        assert "versions folder" in str(caught.value)
    assert await local_backend.load("a/k.txt") == b"two"
    assert target.read_bytes() == b"planted"
