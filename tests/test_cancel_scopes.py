"""Cancellation as anyio (and so FastAPI and Starlette) delivers it: a cancel scope
cancels every await made inside it, the clean-up's too, until the scope is left. What a
cancelled operation cleans up must be done all the same."""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from file_storage import StorageBackend
from file_storage._quota.ledger import Reservation
from file_storage.backends._obstore._requests import to_the_end
from file_storage.backends._support import mark_landed, opened, run_whole, stop_then_wait

SIZE = 3 * 1024 * 1024


async def download_in_cancelled_scope(backend: StorageBackend, target: Path) -> None:
    await backend.save("big.bin", b"n" * SIZE)
    with anyio.CancelScope() as scope:

        def cancel(done: int, total: int | None) -> None:
            if done:
                scope.cancel()  # the client went away once the first bytes were written

        await backend.download_file("big.bin", target, progress=cancel)
    assert scope.cancelled_caught


async def test_download_cancelled_by_a_scope_leaves_nothing(
    backend: StorageBackend, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "big.bin"
    await download_in_cancelled_scope(backend, target)
    assert sorted(p.name for p in target.parent.iterdir()) == []


async def test_download_cancelled_by_a_scope_keeps_the_file_it_would_replace(
    backend: StorageBackend, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "big.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    await download_in_cancelled_scope(backend, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["big.bin"]
    assert target.read_bytes() == b"old"


async def test_local_copy_cancelled_by_a_scope_leaves_no_temp_folder(
    backend: StorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    await backend.save("v/clip.webm", b"n" * SIZE)
    with anyio.CancelScope() as scope:
        async with backend.local_copy("v/clip.webm") as path:
            assert path.exists()
            scope.cancel()  # the tool's caller went away while it ran
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("operation", ["delete_many", "delete_prefix"])
async def test_batch_delete_cancelled_by_a_scope_once_done_counts_nothing_it_deleted(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    backend.set_quota("", 1000)
    keys = [f"p/{i}" for i in range(5)]
    for key in keys:
        await backend.save(key, b"x" * 100)
    real = backend._delete_many
    with anyio.CancelScope() as scope:

        async def deleted_then_cancelled(batch: list[str]) -> None:
            await real(batch)
            scope.cancel()  # the request's client went away as the store answered
            cancelled = asyncio.CancelledError()
            mark_landed(cancelled)
            raise cancelled

        monkeypatch.setattr(backend, "_delete_many", deleted_then_cancelled)
        if operation == "delete_many":
            await backend.delete_many(keys)
        else:
            await backend.delete_prefix("p")
    assert scope.cancelled_caught
    assert await backend.list_files() == []
    assert (await backend.get_usage()).used == 0
    await backend.save("full", b"y" * 1000)  # the whole quota is free again


def open_descriptors(path: Path) -> int:
    """How many of this process's descriptors are open on ``path`` (Linux /proc)."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += Path(os.readlink(fd)) == path
        except OSError:
            continue
    return count


async def test_upload_file_cancelled_by_a_scope_closes_the_local_file(
    backend: StorageBackend, tmp_path: Path
) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"u" * SIZE)
    with anyio.CancelScope() as scope:

        def cancel(done: int, total: int | None) -> None:
            scope.cancel()  # the client went away once the first bytes were read

        await backend.upload_file(source, "k.bin", progress=cancel)
    # (S3 reads a file this small whole, and tells progress once it is sent: not cancelled)
    assert open_descriptors(source) == 0


def cancel_as_the_event_is_made(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, scope: anyio.CancelScope
) -> None:
    real = backend._created
    real_move = backend._move

    async def untold(src: str, dst: str) -> None:
        await real_move(src, dst)  # a store that does not tell the ETag: the event stats

    async def cancelled_while_stat(key: str, size: int | None) -> object:
        scope.cancel()  # the client went away once the move was done
        return await real(key, size)

    monkeypatch.setattr(backend, "_move", untold)
    monkeypatch.setattr(backend, "_created", cancelled_while_stat)


def cancel_as_the_store_answers(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, scope: anyio.CancelScope
) -> None:
    real = backend._move

    async def moved_then_cancelled(src: str, dst: str) -> None:
        await real(src, dst)
        scope.cancel()  # the client went away as the store answered
        cancelled = asyncio.CancelledError()
        mark_landed(cancelled)
        raise cancelled

    monkeypatch.setattr(backend, "_move", moved_then_cancelled)


@pytest.mark.parametrize("cancel", [cancel_as_the_event_is_made, cancel_as_the_store_answers])
async def test_move_cancelled_by_a_scope_once_done_frees_and_announces_the_source(
    backend: StorageBackend,
    monkeypatch: pytest.MonkeyPatch,
    cancel: Callable[[StorageBackend, pytest.MonkeyPatch, anyio.CancelScope], None],
) -> None:
    backend.set_quota("", 1000)
    await backend.save("src", b"x" * 600)
    seen: list[tuple[str, str]] = []
    backend.subscribe(lambda event: seen.append((event.type, event.key)))
    with anyio.CancelScope() as scope:
        cancel(backend, monkeypatch, scope)
        await backend.move("src", "dst")
    assert scope.cancelled_caught
    assert await backend.list_files() == ["dst"]
    assert sorted(seen) == [("created", "dst"), ("deleted", "src")]
    assert (await backend.get_usage()).used == 600  # the source no longer counted


async def test_purge_cancelled_by_a_scope_as_the_quota_forgets_still_announces(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend._rules.applies_itself:
        pytest.skip("the store applies the rules itself")
    backend.set_quota("", 1000)
    await backend.save("tmp/a", b"x" * 100)
    await backend.set_expiration("tmp", 1)
    seen: list[tuple[str, str]] = []
    backend.subscribe(lambda event: seen.append((event.type, event.key)))
    real = backend._quotas.forget
    with anyio.CancelScope() as scope:

        async def forgotten_then_cancelled(key: str) -> None:
            await real(key)
            scope.cancel()  # the request's client went away during the ledger's round trip
            await anyio.lowlevel.checkpoint()

        monkeypatch.setattr(backend._quotas, "forget", forgotten_then_cancelled)
        await backend.purge_expired(datetime.now(UTC) + timedelta(days=2))
    assert scope.cancelled_caught
    assert await backend.list_files() == []
    assert seen == [("deleted", "tmp/a")]


async def test_a_local_file_whose_last_bytes_cannot_be_written_raises_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # opened() closes files whole (a cancel scope cannot skip it); the close's own error,
    # the flush of buffered bytes onto a full disk, is still the caller's: a download
    # whose file was sized beforehand (S3's ranged GETs) would pass its size check.
    # (The new file is /dev/full: "wb" makes new files only.)
    from file_storage.backends import _support

    full = functools.partial(os.open, "/dev/full", os.O_WRONLY)
    monkeypatch.setitem(_support._OPENERS, "wb", lambda path, flags: full())
    with pytest.raises(OSError, match="space") as info:
        async with opened(tmp_path / "download.part", "wb") as out:
            await out.write(b"x")  # buffered: written by the close
    assert info.value.errno == errno.ENOSPC


async def test_a_local_file_that_cannot_be_opened_by_a_cancelled_caller_raises_the_cancel(
    tmp_path: Path,
) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with opened(tmp_path / "missing" / "f", "rb"):
            pass
    assert scope.cancelled_caught


@pytest.mark.parametrize("operation", ["save", "move"])
async def test_write_cancelled_by_a_scope_as_the_quota_counts_it_still_announces(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    backend.set_quota("", 1000)
    await backend.save("src", b"x" * 600)
    seen: list[tuple[str, str]] = []
    backend.subscribe(lambda event: seen.append((event.type, event.key)))
    commit = Reservation.commit
    with anyio.CancelScope() as scope:

        async def committed_then_cancelled(self: Reservation, size: int) -> None:
            await commit(self, size)
            scope.cancel()  # the client went away during the ledger's round trip
            await anyio.lowlevel.checkpoint()

        monkeypatch.setattr(Reservation, "commit", committed_then_cancelled)
        if operation == "save":
            await backend.save("dst", b"y" * 300)
        else:
            await backend.move("src", "dst")
    assert scope.cancelled_caught
    expected = [("created", "dst")]
    if operation == "move":
        expected.append(("deleted", "src"))
    assert sorted(seen) == expected
    used = 900 if operation == "save" else 600
    assert (await backend.get_usage()).used == used


@pytest.mark.parametrize("helper", ["run_whole", "stop_then_wait", "obstore_request"])
async def test_a_clean_up_waited_for_in_a_cancelled_scope_does_not_spin(
    monkeypatch: pytest.MonkeyPatch, helper: str
) -> None:
    # a cancel scope cancels the task again at every turn of the loop while it waits: the
    # wait must not wake for each (it spun, a core busy for as long as the clean-up ran)
    wakes = 0
    wait = asyncio.wait

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal wakes
        wakes += 1
        return await wait(*args, **kwargs)

    shield = asyncio.shield

    def counted_shield(step: Any) -> Any:
        nonlocal wakes
        wakes += 1
        return shield(step)

    monkeypatch.setattr(asyncio, "wait", counted)
    monkeypatch.setattr(asyncio, "shield", counted_shield)
    release = asyncio.Event()

    async def slow_clean_up() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await release.wait()

    asyncio.get_running_loop().call_later(0.05, release.set)
    with anyio.CancelScope() as scope:
        scope.cancel()
        if helper == "run_whole":
            _, cancelled = await run_whole(release.wait())
            assert cancelled is not None
            raise cancelled
        if helper == "obstore_request":
            await to_the_end(release.wait())
        await stop_then_wait(slow_clean_up())
    assert scope.cancelled_caught
    assert wakes < 10
