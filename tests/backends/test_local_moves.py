"""Local move: the moved object gets the move's time, as on memory and the cloud stores,
with its metadata, versions, other names and the caller's cancellation kept right."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    LocalStorageBackend,
    ObjectEvent,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
)
from file_storage.backends.local import _files, _moves, _versions
from file_storage.backends.local._io import TMP_MARK, Gate
from file_storage.backends.local._versions import write_state

OLD = time.time() - 10 * 86400  # ten days ago


def age(path: Path) -> None:
    """Make a file ten days old (its metadata record, named by its old mtime, is lost)."""
    os.utime(path, (OLD, OLD), follow_symlinks=False)


def just_now(when: datetime) -> bool:
    return abs(datetime.now(UTC) - when) < timedelta(minutes=1)


def on_disk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.fixture
async def quota_backend(tmp_path: Path) -> Any:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=10_000)
    yield backend
    await backend.aclose()


async def test_a_moved_object_has_the_moves_time_its_metadata_and_etag(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("in/a.bin", b"bytes", content_type="video/webm", metadata={"k": "v"})
    saved = await local_backend.stat("in/a.bin")
    seen: list[ObjectEvent] = []
    local_backend.subscribe(seen.append)
    await local_backend.move("in/a.bin", "out/a.bin")
    info = await local_backend.stat("out/a.bin")
    assert info.last_modified > saved.last_modified
    assert (info.content_type, dict(info.metadata)) == ("video/webm", {"k": "v"})
    # the created event names the object as it is stored at its new key
    assert seen[0] == ObjectEvent("created", "out/a.bin", 5, info.etag)
    assert [v.last_modified for v in await local_backend.list_versions("out/a.bin")] == [
        info.last_modified
    ]


async def test_a_moved_object_with_a_guessed_type_keeps_it(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("a.txt", b"x")
    age(local_backend.root / "a.txt")
    await local_backend.move("a.txt", "b.png")
    info = await local_backend.stat("b.png")
    assert (info.content_type, just_now(info.last_modified)) == ("text/plain", True)


async def test_a_move_leaves_another_hard_link_of_the_file_as_it_was(
    local_backend: LocalStorageBackend,
) -> None:
    # another name of the same file (a key, or a file beside the storage): its time and
    # bytes are its own, never changed by a move of the other name
    await local_backend.save("a.bin", b"shared bytes")
    os.link(local_backend.root / "a.bin", local_backend.root / "other.bin")
    age(local_backend.root / "a.bin")
    before = await local_backend.stat("other.bin")
    await local_backend.move("a.bin", "moved.bin")
    assert just_now((await local_backend.stat("moved.bin")).last_modified)
    after = await local_backend.stat("other.bin")
    assert (after.last_modified, after.etag) == (before.last_modified, before.etag)
    assert await local_backend.load("other.bin") == b"shared bytes"
    assert await local_backend.load("moved.bin") == b"shared bytes"
    assert await local_backend.list_files() == ["moved.bin", "other.bin"]


async def test_a_versioned_move_keeps_the_sources_version_as_old_as_it_was(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.set_versioning(True)
    await local_backend.save("a.txt", b"first", metadata={"k": "v"})
    [kept] = await local_backend.list_versions("a.txt")
    old = await local_backend.stat("a.txt", version_id=kept.version_id)
    await local_backend.move("a.txt", "b.txt")
    moved = await local_backend.stat("b.txt")
    assert moved.last_modified > old.last_modified
    assert dict(moved.metadata) == {"k": "v"}
    [prior] = await local_backend.list_versions("a.txt")
    assert (prior.version_id, prior.last_modified, prior.is_latest) == (
        kept.version_id,
        old.last_modified,
        False,
    )
    again = await local_backend.stat("a.txt", version_id=kept.version_id)
    assert (again.etag, dict(again.metadata)) == (old.etag, {"k": "v"})
    [latest] = await local_backend.list_versions("b.txt")
    assert (latest.last_modified, latest.is_latest) == (moved.last_modified, True)


async def test_a_moved_symlink_is_a_name_its_target_keeps_its_time(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("t.bin", b"target")
    os.symlink("t.bin", local_backend.root / "l.bin")
    age(local_backend.root / "t.bin")
    before = await local_backend.stat("t.bin")
    await local_backend.move("l.bin", "d/l.bin")
    assert (await local_backend.stat("t.bin")).last_modified == before.last_modified
    assert await local_backend.load("d/l.bin") == b"target"
    assert os.path.islink(local_backend.root / "d" / "l.bin")


@pytest.mark.parametrize("versioned", [False, True])
async def test_a_move_cancelled_before_its_rename_leaves_the_source_as_it_was(
    quota_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch, versioned: bool
) -> None:
    if versioned:  # the bytes are copied: no temp file is left either
        await quota_backend.set_versioning(True)
    await quota_backend.save("a.bin", b"payload", metadata={"k": "v"})
    before = await quota_backend.stat("a.bin")
    reached = threading.Event()

    def checkpoint(at: str, gate: Gate) -> None:
        if at == "rename":
            reached.set()
            gate.cancelled.wait(timeout=30)

    monkeypatch.setattr(_files, "_checkpoint", checkpoint)
    task = asyncio.ensure_future(quota_backend.move("a.bin", "d/b.bin"))
    assert await asyncio.to_thread(reached.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await quota_backend.stat("a.bin") == before
    assert await quota_backend.list_files() == ["a.bin"]
    assert not any(TMP_MARK in name for name in on_disk(quota_backend.root))
    assert (await quota_backend.get_usage()).used == len(b"payload")


def refuse_renames_to(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The disk refuses the rename onto ``name`` only (the records are written)."""
    replace = os.replace

    def refused(src: Any, dst: Any, **dir_fds: int) -> None:
        if dst == name:
            raise PermissionError(errno.EACCES, "Permission denied")
        replace(src, dst, **dir_fds)

    monkeypatch.setattr(os, "replace", refused)


async def test_a_move_refused_by_the_disk_leaves_the_source_as_it_was(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("a.bin", b"payload", metadata={"k": "v"})
    before = await local_backend.stat("a.bin")
    refuse_renames_to(monkeypatch, "b.bin")  # after the time was set and records written
    with pytest.raises(StoragePermissionError):
        await local_backend.move("a.bin", "b.bin")
    monkeypatch.undo()
    assert await local_backend.stat("a.bin") == before  # time, ETag and metadata
    assert await local_backend.list_files() == ["a.bin"]


async def test_a_refused_move_keeps_the_sources_metadata_when_its_time_stays(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a file system keeping whole seconds (HFS+, FAT, some network mounts) gives a file
    # moved in the second it was written the time it had: the record the move noted for
    # that time is the source's own, and a refused rename must not take it away
    await local_backend.save("a.bin", b"payload", content_type="video/webm", metadata={"k": "v"})
    before = await local_backend.stat("a.bin")
    utime = os.utime

    def same_second(path: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(path, int):
            utime(path, *args, **kwargs)

    monkeypatch.setattr(os, "utime", same_second)
    refuse_renames_to(monkeypatch, "b.bin")
    with pytest.raises(StoragePermissionError):
        await local_backend.move("a.bin", "b.bin")
    monkeypatch.undo()
    assert await local_backend.stat("a.bin") == before  # content type and metadata too
    assert await local_backend.list_files() == ["a.bin"]


async def test_a_source_replaced_before_the_moves_lock_is_moved_as_it_is_then(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another process writes the key (a temp file renamed over it) after the move opened
    # the old file: the new file moves, the old one is not renamed over it, nothing lost
    root = local_backend.root
    await local_backend.save("a.bin", b"old")
    fired: list[bool] = []

    def replaced(at: str, gate: Gate) -> None:
        if at == "rename" and not fired:
            fired.append(True)
            (root / "new.tmp").write_bytes(b"new bytes")
            age(root / "new.tmp")
            os.replace(root / "new.tmp", root / "a.bin")

    monkeypatch.setattr(_files, "_checkpoint", replaced)
    await local_backend.move("a.bin", "b.bin")
    assert await local_backend.list_files() == ["b.bin"]
    assert await local_backend.load("b.bin") == b"new bytes"
    assert just_now((await local_backend.stat("b.bin")).last_modified)


@pytest.mark.parametrize(
    "refusal", [errno.EPERM, errno.ENOTSUP, errno.ENOSYS], ids=["EPERM", "ENOTSUP", "ENOSYS"]
)
async def test_a_file_whose_times_cannot_be_set_is_moved_as_a_copy(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    # another user's file in a shared root: only its owner may set its times; a FUSE or
    # network file system may set none (a rename worked there before moves set times)
    await local_backend.save("a.bin", b"theirs", metadata={"k": "v"})
    saved = await local_backend.stat("a.bin")
    utime = os.utime

    def not_owner(path: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(path, int):
            raise OSError(refusal, os.strerror(refusal))
        utime(path, *args, **kwargs)

    monkeypatch.setattr(os, "utime", not_owner)
    await local_backend.move("a.bin", "b.bin")
    info = await local_backend.stat("b.bin")
    assert info.last_modified > saved.last_modified
    assert dict(info.metadata) == {"k": "v"}
    assert await local_backend.list_files() == ["b.bin"]


async def test_a_file_whose_time_change_is_ignored_is_moved_as_a_copy(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # some FUSE mounts answer a time change and keep the old time: renamed, the old
    # object would be as old at its new key as before (and expire there at once)
    await local_backend.save("a.bin", b"payload")
    age(local_backend.root / "a.bin")
    utime = os.utime

    def ignored(path: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(path, int):
            utime(path, *args, **kwargs)

    monkeypatch.setattr(os, "utime", ignored)
    await local_backend.move("a.bin", "b.bin")
    assert just_now((await local_backend.stat("b.bin")).last_modified)
    assert await local_backend.load("b.bin") == b"payload"
    assert await local_backend.list_files() == ["b.bin"]


async def test_a_copied_move_whose_source_cannot_be_removed_counts_both(
    quota_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await quota_backend.save("a.bin", b"payload")
    os.link(quota_backend.root / "a.bin", quota_backend.root / "other.bin")  # copied
    await quota_backend.refresh_usage()
    unlink = os.unlink

    def refused(path: Any, *args: Any, **kwargs: Any) -> None:
        if path == "a.bin":
            raise PermissionError(errno.EPERM, "Operation not permitted")
        unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refused)
    with pytest.raises(StoragePermissionError):
        await quota_backend.move("a.bin", "b.bin")
    monkeypatch.undo()
    assert await quota_backend.list_files() == ["a.bin", "b.bin", "other.bin"]
    used = (await quota_backend.get_usage()).used
    await quota_backend.refresh_usage()
    assert used == (await quota_backend.get_usage()).used == 3 * len(b"payload")


async def test_versioning_turned_on_while_a_move_runs_keeps_the_sources_time(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # set_versioning lands after the move looked (never versioned: it would rename),
    # before its locks: the source's kept version must not be touched with it
    await local_backend.save("a.bin", b"payload")
    saved = await local_backend.stat("a.bin")

    def enabled(at: str, gate: Gate) -> None:
        if at == "rename":
            write_state(local_backend._dir, True)

    monkeypatch.setattr(_files, "_checkpoint", enabled)
    await local_backend.move("a.bin", "b.bin")
    assert (await local_backend.stat("b.bin")).last_modified > saved.last_modified
    [prior] = await local_backend.list_versions("a.bin")
    assert (prior.last_modified, prior.size, prior.is_latest) == (saved.last_modified, 7, False)
    kept = await local_backend.stat("a.bin", version_id=prior.version_id)
    assert kept.etag == saved.etag


async def test_two_moves_of_one_source_land_once(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # both looked at the source before either took its lock (two processes: a quota
    # would make this process's two moves of one key take turns before that)
    await local_backend.save("a.bin", b"payload")
    both = threading.Barrier(2, timeout=30)

    def together(at: str, gate: Gate) -> None:
        if at == "rename":
            both.wait()

    monkeypatch.setattr(_files, "_checkpoint", together)
    results = await asyncio.gather(
        local_backend.move("a.bin", "b.bin"),
        local_backend.move("a.bin", "c.bin"),
        return_exceptions=True,
    )
    landed = [r for r in results if isinstance(r, str)]
    assert len(landed) == 1
    assert [type(r) for r in results if not isinstance(r, str)] == [ObjectNotFoundError]
    assert await local_backend.list_files() == landed
    assert await local_backend.load(landed[0]) == b"payload"


@pytest.mark.parametrize("how", ["renamed", "versioned", "hard-linked"])
async def test_a_move_onto_its_own_file_through_a_linked_folder_is_refused(
    local_backend: LocalStorageBackend, how: str
) -> None:
    # `l -> a` under the root: "l/b.bin" is "a/b.bin" itself. Renamed onto itself then
    # removed (copied over itself then unlinked), the object was lost, or its metadata
    root = local_backend.root
    if how == "versioned":
        await local_backend.set_versioning(True)
    await local_backend.save("a/b.bin", b"payload", content_type="video/webm", metadata={"k": "v"})
    if how == "hard-linked":
        os.link(root / "a" / "b.bin", root / "other.bin")
    os.symlink("a", root / "l")
    before = await local_backend.stat("a/b.bin")
    listed = await local_backend.list_files()
    with pytest.raises(StorageError, match="one file"):
        await local_backend.move("a/b.bin", "l/b.bin")
    assert await local_backend.stat("a/b.bin") == before
    assert await local_backend.load("a/b.bin") == b"payload"
    assert await local_backend.list_files() == listed
    assert not any(TMP_MARK in name for name in on_disk(root))


@pytest.mark.parametrize("how", ["versioned", "hard-linked"])
@pytest.mark.parametrize("mode", [0o600, 0o640], ids=["0600", "0640"])
async def test_a_copied_move_keeps_the_files_mode_and_its_copy_is_private_meanwhile(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch, how: str, mode: int
) -> None:
    # a rename keeps a private file private; the copy made instead (versioning on, other
    # hard links) was the umask's (0644: readable by every user) while and after it was
    # written
    root = local_backend.root
    if how == "versioned":
        await local_backend.set_versioning(True)
    await local_backend.save("a.bin", b"secret")
    if how == "hard-linked":
        os.link(root / "a.bin", root / "other.bin")
    os.chmod(root / "a.bin", mode)
    modes: list[int] = []
    copy_fd = _moves.copy_fd

    def watched(src: int, dst: int, gate: Gate) -> int:
        modes.append(os.fstat(dst).st_mode & 0o7777)
        return copy_fd(src, dst, gate)

    monkeypatch.setattr(_moves, "copy_fd", watched)
    umask = os.umask(0o022)
    try:
        await local_backend.move("a.bin", "b.bin")
    finally:
        os.umask(umask)
    assert modes == [0o600]
    assert os.stat(root / "b.bin").st_mode & 0o7777 == mode
    assert await local_backend.load("b.bin") == b"secret"


async def test_a_copied_move_whose_versions_tidying_fails_announces_the_source_gone(
    quota_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the source's name was removed (kept as a prior version), then tidying its versions
    # folder was refused: the error is raised, but the source is gone, and subscribers
    # hear so (it was reported kept: no "deleted" event, a listener kept a phantom key)
    await quota_backend.set_versioning(True)
    await quota_backend.save("a.bin", b"payload")
    seen: list[ObjectEvent] = []
    quota_backend.subscribe(seen.append)

    def refused(self: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(_versions._Key, "prune", refused)
    with pytest.raises(StoragePermissionError):
        await quota_backend.move("a.bin", "b.bin")
    monkeypatch.undo()
    assert await quota_backend.list_files() == ["b.bin"]
    assert [(e.type, e.key) for e in seen] == [("created", "b.bin"), ("deleted", "a.bin")]
    used = (await quota_backend.get_usage()).used
    await quota_backend.refresh_usage()
    assert used == (await quota_backend.get_usage()).used
