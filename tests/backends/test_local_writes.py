"""Local writes under cancellation and concurrency, crash leftovers, object-or-folder clashes."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    ObjectConflictError,
    StorageError,
    StorageUnavailableError,
)
from file_storage.backends._support import map_os_error
from file_storage.backends.local import _files as local_module
from file_storage.backends.local import _moves
from file_storage.backends.local._io import TMP_MARK, Gate, tmp_name

OLD = b"previous version"
NEW = b"the new version, longer"
MiB = 1 << 20


def files_on_disk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def chunks() -> AsyncIterator[bytes]:
    yield NEW[:5]
    yield NEW[5:]


Write = Callable[[LocalStorageBackend, Path], Awaitable[object]]
WRITES: dict[str, Write] = {
    "save": lambda b, _: b.save("k.bin", NEW),
    "streamed-save": lambda b, _: b.save("k.bin", chunks()),
    "upload_file": lambda b, src: b.upload_file(src, "k.bin"),
    "copy": lambda b, _: b.copy("src.bin", "k.bin"),
}


@pytest.fixture
async def quota_backend(tmp_path: Path) -> AsyncIterator[LocalStorageBackend]:
    backend = LocalStorageBackend(tmp_path / "storage", max_size_bytes=10_000)
    await backend.save("k.bin", OLD)
    await backend.save("src.bin", NEW)
    (tmp_path / "upload.bin").write_bytes(NEW)
    yield backend
    await backend.aclose()


async def cancel_at(point: str, write: Awaitable[object], monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancel ``write`` while its worker thread stands at ``point``; the worker goes on
    once the cancellation reached it."""
    reached = threading.Event()

    def checkpoint(at: str, gate: Gate) -> None:
        if at == point:
            reached.set()
            gate.cancelled.wait(timeout=30)

    monkeypatch.setattr(local_module, "_checkpoint", checkpoint)
    task = asyncio.ensure_future(write)
    assert await asyncio.to_thread(reached.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("how", list(WRITES))
async def test_a_write_cancelled_before_its_rename_keeps_the_previous_version(
    quota_backend: LocalStorageBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    await cancel_at("rename", WRITES[how](quota_backend, tmp_path / "upload.bin"), monkeypatch)
    assert await quota_backend.load("k.bin") == OLD
    assert files_on_disk(quota_backend.root) == ["k.bin", "src.bin"]
    used = (await quota_backend.get_usage()).used
    await quota_backend.refresh_usage()
    assert used == (await quota_backend.get_usage()).used == len(OLD) + len(NEW)


@pytest.mark.parametrize("how", [*WRITES, "move"])
async def test_a_write_cancelled_after_its_rename_is_counted(
    quota_backend: LocalStorageBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    write = (
        quota_backend.move("src.bin", "k.bin")
        if how == "move"
        else WRITES[how](quota_backend, tmp_path / "upload.bin")
    )
    await cancel_at("landed", write, monkeypatch)
    assert await quota_backend.load("k.bin") == NEW
    stored = sum(p.stat().st_size for p in quota_backend.root.rglob("*") if p.is_file())
    assert (await quota_backend.get_usage()).used == stored


async def test_a_write_cancelled_after_its_rename_ends_before_its_caller_hears(
    quota_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # after its rename the worker still drops the key's metadata file: a caller told of
    # the cancellation that saves the key again with metadata must not lose it to that
    reached, release = threading.Event(), threading.Event()
    gates: list[Gate] = []

    def checkpoint(at: str, gate: Gate) -> None:
        if at == "landed":
            gates.append(gate)
            reached.set()
            release.wait(timeout=10)

    monkeypatch.setattr(local_module, "_checkpoint", checkpoint)
    task = asyncio.ensure_future(quota_backend.save("k.bin", NEW))
    assert await asyncio.to_thread(reached.wait, 10)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()  # its worker is still at work
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gates[0].done.done()
    assert await quota_backend.load("k.bin") == NEW


async def test_concurrent_saves_of_one_key_keep_bytes_and_metadata_together(
    local_backend: LocalStorageBackend,
) -> None:
    def expect(size: int) -> tuple[str, dict[str, str]]:
        return f"type/v{size}", {"n": str(size)}

    async def save(i: int) -> None:
        ctype, meta = expect(i + 1)
        await local_backend.save("k", b"x" * (i + 1), content_type=ctype, metadata=meta)

    async def check() -> None:
        info = await local_backend.stat("k")
        assert (info.content_type, info.metadata) == expect(info.size)

    await save(0)
    for _ in range(40):
        await asyncio.gather(*(save(i) for i in range(6)), *(check() for _ in range(3)))
        await check()
        assert len(await local_backend.load("k")) == (await local_backend.stat("k")).size


async def test_stale_temp_files_are_swept_and_live_ones_of_others_counted(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "s", max_size_bytes=1000, temp_max_age_seconds=60)
    await backend.save("d/a.bin", b"x" * 100)
    folder = backend.root / "d"
    stale = folder / f".{TMP_MARK}deadbeef0000-1"
    live = folder / f".{TMP_MARK}deadbeef0000-2"
    ours = folder / tmp_name()  # a write of this process in flight: reserved already
    for path, size in ((stale, 300), (live, 200), (ours, 50)):
        path.write_bytes(b"t" * size)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(ours, (old, old))
    await backend.refresh_usage()
    assert (await backend.get_usage()).used == 300  # the object and the live temp file
    assert not stale.exists()
    assert live.exists()
    assert ours.exists()
    os.utime(live, (old, old))
    await backend.refresh_usage()
    assert not live.exists()
    assert (await backend.get_usage()).used == 100
    assert await backend.list_files() == ["d/a.bin"]
    await backend.aclose()


def test_temp_max_age_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        LocalStorageBackend(tmp_path, temp_max_age_seconds=0)


@pytest.mark.parametrize(
    ("first", "second"), [("a", "a/b"), ("a/b", "a"), ("a/b/c", "a/b")], ids=str
)
async def test_object_or_folder_clash_raises_object_conflict(
    local_backend: LocalStorageBackend, first: str, second: str
) -> None:
    await local_backend.save(first, b"1")
    await local_backend.save("elsewhere", b"2")
    with pytest.raises(ObjectConflictError) as info:
        await local_backend.save(second, b"x")
    assert (info.value.operation, info.value.key) == ("save", second)
    with pytest.raises(ObjectConflictError):
        await local_backend.copy("elsewhere", second)
    with pytest.raises(ObjectConflictError):
        await local_backend.move("elsewhere", second)
    assert await local_backend.load(first) == b"1"
    assert await local_backend.load("elsewhere") == b"2"


@pytest.mark.parametrize("exc", [NotADirectoryError(20, "x"), IsADirectoryError(21, "x")])
def test_os_clash_errors_map_to_object_conflict(exc: OSError) -> None:
    assert isinstance(map_os_error(exc, "save", "a"), ObjectConflictError)


def leave_temp_files(folder: Path) -> tuple[Path, Path]:
    """A crashed writer's temp file (an hour old) and a live one of another process."""
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / f".{TMP_MARK}deadbeef0000-1"
    live = folder / f".{TMP_MARK}deadbeef0000-2"
    for path in (stale, live):
        path.write_bytes(b"t" * 10)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    return stale, live


async def test_stale_temp_files_are_swept_on_first_use_without_a_quota(tmp_path: Path) -> None:
    stale, live = leave_temp_files(tmp_path / "s" / "d")
    backend = LocalStorageBackend(tmp_path / "s", temp_max_age_seconds=60)
    assert await backend.list_files() == []
    assert backend._sweeping is not None  # started in the background by the first use
    await asyncio.wrap_future(backend._sweeping)
    assert not stale.exists()
    assert live.exists()
    await backend.aclose()


async def test_refresh_usage_sweeps_stale_temp_files_without_a_quota(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path / "s", temp_max_age_seconds=60)
    await backend.save("d/a.bin", b"x")
    stale, live = leave_temp_files(tmp_path / "s" / "d")
    await backend.refresh_usage()
    assert not stale.exists()
    assert live.exists()
    assert await backend.list_files() == ["d/a.bin"]
    await backend.aclose()


async def broken() -> AsyncIterator[bytes]:
    yield b"partial"
    raise RuntimeError("the upload broke")


REFUSED: dict[str, Callable[[LocalStorageBackend], Awaitable[object]]] = {
    "if_match": lambda b: b.save("a/b/c.txt", b"x", if_match='"nope"'),
    "broken-stream": lambda b: b.save("a/b/c.txt", broken()),
}


@pytest.mark.parametrize("write", REFUSED.values(), ids=REFUSED.keys())
async def test_a_refused_write_leaves_no_folder_that_blocks_a_later_save(
    local_backend: LocalStorageBackend, write: Callable[[LocalStorageBackend], Awaitable[object]]
) -> None:
    await local_backend.save("src.txt", b"s")
    with pytest.raises((StorageError, RuntimeError)):
        await write(local_backend)
    await local_backend.save("a", b"no object under a: a may be an object")
    assert await local_backend.list_files() == ["a", "src.txt"]


async def test_a_save_beside_a_delete_emptying_its_folder_lands(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("d/old.txt", b"old")
    refuse_taken = local_module.refuse_taken
    fired: list[bool] = []

    def delete_first(dir_fd: int, name: str) -> None:
        if not fired:  # the folder is open; the last object in it goes, and the folder
            fired.append(True)
            local_backend._delete_sync("d/old.txt")
        refuse_taken(dir_fd, name)

    monkeypatch.setattr(local_module, "refuse_taken", delete_first)
    await local_backend.save("d/new.txt", b"new")
    assert await local_backend.list_files() == ["d/new.txt"]


async def test_a_move_beside_a_delete_emptying_its_destination_folder_lands(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("d/old.txt", b"old")
    await local_backend.save("src.txt", b"moved")
    refuse_taken = _moves.refuse_taken
    fired: list[bool] = []

    def delete_first(dir_fd: int, name: str) -> None:
        if not fired:  # the destination folder is open; its last object goes, and it
            fired.append(True)
            local_backend._delete_sync("d/old.txt")
        refuse_taken(dir_fd, name)

    monkeypatch.setattr(_moves, "refuse_taken", delete_first)
    await local_backend.move("src.txt", "d/new.txt")
    assert await local_backend.list_files() == ["d/new.txt"]
    assert await local_backend.load("d/new.txt") == b"moved"


@pytest.mark.parametrize("backend", ["local", "memory", "local-with-progress"])
async def test_upload_file_of_a_file_rewritten_in_place_midway_fails_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    # a tool rewrites the file in place (same size) while it is read: what was read holds
    # two versions of it, so nothing is stored
    stored = MemoryStorageBackend() if backend == "memory" else LocalStorageBackend(tmp_path / "r")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * MiB))

    def rewrite() -> None:
        with source.open("r+b") as out:
            out.write(os.urandom(3 * MiB))

    rewritten: list[int] = []

    def progress(done: int, total: int | None) -> None:
        if not rewritten:
            rewritten.append(done)
            rewrite()

    copy_fd = local_module.copy_fd

    def copy_then_rewrite(src: int, dst: int, gate: Gate) -> int:
        copied = copy_fd(src, dst, gate)
        rewrite()
        return copied

    monkeypatch.setattr(local_module, "copy_fd", copy_then_rewrite)
    upload = stored.upload_file(source, "k.bin", progress=None if backend == "local" else progress)
    with pytest.raises(StorageUnavailableError, match="local file changed while reading"):
        await upload
    assert await stored.list_files() == []
