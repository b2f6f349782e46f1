"""The S3 fallback spool's key lock across processes where it held already (checked when
it was attacked): a file system refusing record locks, a wait cancelled, two processes
copying the same keys in opposite directions, the lock file's mode."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

import pytest

from file_storage import S3StorageBackend, _spool_keys
from file_storage._spool import Spool
from tests.faults.conftest import MakeBackend, appears, hold_in_child
from tests.faults.proxy import FaultProxy
from tests.faults.test_spool_keylock import _probed
from tests.forks import DEADLINE, forked, in_child


@pytest.mark.s3
async def test_a_file_system_refusing_record_locks_is_warned_of_once_and_spools(
    make_backend: MakeBackend, proxy: FaultProxy, spool_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:  # fmt: skip
    def refused(*args: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", refused)
    monkeypatch.setattr(_spool_keys, "_unlockable", {})
    backend = make_backend(fallback_path=spool_path)
    with caplog.at_level(logging.WARNING, "file_storage.spool"):
        await backend.save("a.txt", b"stored")
        proxy.refuse()
        await backend.save("b.txt", b"spooled")
        await backend.copy("b.txt", "c.txt")
        proxy.restore()
        assert await backend.flush_spool() == 2
        await backend.delete_many(["a.txt", "b.txt"])
    warned = [r for r in caplog.records if "refuses record locks" in r.getMessage()]
    assert len(warned) == 1
    assert await backend.list_files() == ["c.txt"]
    assert await backend.load("c.txt") == b"spooled"
    assert _spool_keys._KEYS_FILES == {}  # no descriptor left open


async def test_a_wait_for_a_key_cancelled_takes_nothing_later(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    holding, go = tmp_path / "holding", tmp_path / "go"

    result = hold_in_child(root, "k", holding, go)
    try:
        assert await appears(holding), "the child never took the key"
        waiting = asyncio.Event()

        async def seen(self: Spool) -> None:
            waiting.set()

        async def take() -> None:
            async with Spool(root).locked("a", "k"):  # "a" taken, "k" awaited
                raise AssertionError("taken after its wait was cancelled")

        original = Spool._waiting_for_key
        Spool._waiting_for_key = seen  # type: ignore[method-assign]
        try:
            task = asyncio.create_task(take())
            await asyncio.wait_for(waiting.wait(), timeout=DEADLINE)  # a bound
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            Spool._waiting_for_key = original  # type: ignore[method-assign]
        assert _spool_keys._KEYS_FILES == {}  # its descriptor closed
        assert await asyncio.to_thread(_probed, root, "a") == "free"  # given back
    finally:
        go.touch()
    assert await asyncio.to_thread(result) == "done"


@pytest.mark.s3
@pytest.mark.parametrize("down", [False, True], ids=["s3_up", "s3_down"])
async def test_two_processes_copying_keys_in_opposite_directions_both_end(
    make_backend: MakeBackend, proxy: FaultProxy, spool_path: Path, down: bool
) -> None:
    # each copy holds its source and its destination: taken in key order in every
    # process, never one process holding a.txt waiting for b.txt and the other the reverse
    backend = make_backend(fallback_path=spool_path)
    proxy.refuse()  # spooled sources: the copies read them from the spool
    await backend.save("a.txt", b"A")
    await backend.save("b.txt", b"B")
    if not down:
        proxy.restore()

    async def child() -> str:
        for _ in range(30):
            await backend.copy("b.txt", "a.txt")
        return "ended"

    result = forked(in_child(lambda: asyncio.run(child())))
    for _ in range(30):
        await backend.copy("a.txt", "b.txt")
    assert await asyncio.to_thread(result) == "ended"
    proxy.restore()
    await backend.flush_spool()
    assert await backend.load("a.txt") == await backend.load("b.txt")


@pytest.mark.s3
async def test_the_keys_lock_file_is_the_owners_alone(
    spooling: S3StorageBackend, spool_path: Path
) -> None:
    await spooling.save("a.txt", b"x")
    assert stat.S_IMODE(os.stat(spool_path / "keys.lock").st_mode) == 0o600


async def test_a_refusal_of_record_locks_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one ENOLCK (a lock table full for a moment, a lock daemon restarting) left the
    # folder ordered per process only until the process restarted
    monkeypatch.setattr(_spool_keys, "_unlockable", {})
    monkeypatch.setattr(_spool_keys, "RETRY_SECONDS", 0.0)  # the retry's time has come
    root = tmp_path / "spool"
    holding, go = tmp_path / "holding", tmp_path / "go"
    result = hold_in_child(root, "k", holding, go)  # forked before any refusal
    try:
        assert await appears(holding), "the child never took the key"
        real = fcntl.lockf

        def refused(*args: object) -> None:
            raise OSError(errno.ENOLCK, "No locks available")

        monkeypatch.setattr(fcntl, "lockf", refused)
        async with Spool(root).locked("j"):  # refused: ordered per process only
            pass
        monkeypatch.setattr(fcntl, "lockf", real)  # the file system takes locks again
        found_held = asyncio.Event()

        async def seen(self: Spool) -> None:
            found_held.set()
            go.touch()

        monkeypatch.setattr(Spool, "_waiting_for_key", seen)
        async with asyncio.timeout(DEADLINE), Spool(root).locked("k"):
            pass
    finally:
        go.touch()
    assert found_held.is_set(), "the key was taken while another process held it"
    assert await asyncio.to_thread(result) == "done"
