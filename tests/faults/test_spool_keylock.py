"""The S3 fallback spool's key lock across processes (a POSIX record lock on a byte of the
folder's ``keys.lock``), attacked where POSIX record locks are fragile: a process holds
them through any descriptor of the file and drops them all when it closes any one; a
forked child inherits the parent's memory, not its locks nor its threads."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import shutil
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from file_storage import _spool_keys
from file_storage._spool import Spool
from file_storage._spool_keys import byte
from tests.faults.conftest import appears, hold_in_child
from tests.forks import DEADLINE, forked, in_child


class _Held(Exception):
    """Raised in a child by the hook called when another process holds the key."""


async def _probe(root: Path, key: str) -> str:
    """In a forked child: "held" when another process holds ``key``, else "free"."""

    async def held(self: Spool) -> None:
        raise _Held

    Spool._waiting_for_key = held  # type: ignore[method-assign]  # the child's copy only
    try:
        async with Spool(root).locked(key):
            return "free"
    except _Held:
        return "held"


def _probed(root: Path, key: str) -> str:
    return str(forked(in_child(lambda: asyncio.run(_probe(root, key))))())


async def test_a_child_forked_while_a_thread_opens_the_keys_file_takes_keys(
    tmp_path: Path,
) -> None:
    # another thread of the parent was opening keys.lock at the fork (under the guard of
    # the process's descriptors): the child's copy of that guard is never released, and
    # the child hung on its first spooled write, delete or flush
    root = tmp_path / "spool"
    with _spool_keys._KEYS_GUARD:
        result = forked(in_child(lambda: asyncio.run(_probe(root, "k"))))
    assert await asyncio.to_thread(result) == "free"


async def test_a_spool_folder_reached_by_a_second_path_keeps_the_first_paths_locks(
    tmp_path: Path,
) -> None:
    # a deploy switches the `current` link while the process runs: the backend made
    # before uses the folder at the link's new target, and a backend made after names that
    # same folder by another real path. That second name opened a second descriptor of
    # keys.lock, took the key the first holds (both in one process), and its close dropped
    # the first's lock: another worker took the key during the first's flush
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "current").symlink_to(tmp_path / "v1")
    first = Spool(tmp_path / "current" / "spool")
    (tmp_path / "current").unlink()
    (tmp_path / "current").symlink_to(tmp_path / "v2")
    second = Spool(tmp_path / "v2" / "spool")
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with first.locked("k"):
            entered.set()
            await release.wait()

    async def take() -> None:
        async with second.locked("k"):
            pass

    holder = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), timeout=DEADLINE)  # a bound
    taker = asyncio.create_task(take())
    for _ in range(100):  # as far as it can go while the first holds the key
        await asyncio.sleep(0)
    try:
        seen = await asyncio.to_thread(_probed, tmp_path / "v2" / "spool", "k")
    finally:
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, taker), timeout=DEADLINE)
    assert seen == "held"


async def test_a_spool_folder_made_again_while_a_key_is_held_orders_later_keys(
    tmp_path: Path,
) -> None:
    # the folder is removed and made again (by the next write) while this process holds
    # a key: it went on locking its descriptor of the removed keys.lock for every key as
    # long as any of them was held, while other workers lock the new file
    root = tmp_path / "spool"
    spool = Spool(root)
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with spool.locked("j"):
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), timeout=DEADLINE)  # a bound
    shutil.rmtree(root)
    holding, go = tmp_path / "holding", tmp_path / "go"

    result = hold_in_child(root, "k", holding, go)
    assert await appears(holding), "the child never took the key"
    found_held = asyncio.Event()

    async def seen(self: Spool) -> None:
        found_held.set()
        go.touch()

    original = Spool._waiting_for_key
    Spool._waiting_for_key = seen  # type: ignore[method-assign]
    try:
        async with spool.locked("k"):
            pass
    finally:
        Spool._waiting_for_key = original  # type: ignore[method-assign]
        go.touch()
        release.set()
        await asyncio.wait_for(holder, timeout=DEADLINE)
    assert found_held.is_set(), "the key was taken while another process held it"
    assert await asyncio.to_thread(result) == "done"


async def test_a_holder_whose_loop_was_closed_leaves_the_key_to_its_new_holder(
    tmp_path: Path,
) -> None:
    # a sync worker closed its loop with a task of its job holding a key: the next
    # save in the process takes the key over. When that task's coroutine was collected,
    # its exit unlocked the key's byte, which the new holder held: another worker
    # wrote or flushed the key during the new holder's
    root = tmp_path / "spool"
    spool = Spool(root)
    entered = threading.Event()
    stale: list[Coroutine[Any, Any, None]] = []

    async def hold() -> None:
        async with spool.locked("k"):
            entered.set()
            await asyncio.Event().wait()  # never ends: its loop is closed under it

    def worker() -> None:
        loop = asyncio.new_event_loop()
        stale.append(hold())
        task = loop.create_task(stale[0])

        async def until_entered() -> None:
            for _ in range(int(DEADLINE / 0.01)):  # a bound
                if entered.is_set():
                    return
                await asyncio.sleep(0.01)

        loop.run_until_complete(until_entered())
        loop.close()  # the task still holds the key
        stale.append(task)  # type: ignore[arg-type]  # kept: collected when the test says

    await asyncio.to_thread(worker)
    assert entered.is_set()
    async with spool.locked("k"):  # taken over from the closed loop's task
        stale[0].close()  # its coroutine collected: its exits run
        seen = await asyncio.to_thread(_probed, root, "k")
    assert seen == "held"


async def test_a_key_that_cannot_be_unlocked_fails_nothing_and_frees_the_other_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the kernel refused to unlock one key's byte (ENOLCK: no room to split a lock): the
    # operation, done, raised as if it failed, and the keys after it stayed locked
    # against the other workers while the process went on using its descriptor
    root = tmp_path / "spool"
    spool = Spool(root)
    real = fcntl.lockf

    def lockf(fd: int, cmd: int, length: int = 0, start: int = 0, whence: int = 0) -> Any:
        if cmd == fcntl.LOCK_UN and start == byte("b"):
            raise OSError(errno.ENOLCK, "No locks available")
        return real(fd, cmd, length, start, whence)

    monkeypatch.setattr(fcntl, "lockf", lockf)
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:  # keeps the process's descriptor of keys.lock open
        async with spool.locked("z"):
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), timeout=DEADLINE)  # a bound
    try:
        with caplog.at_level(logging.ERROR, "file_storage.spool"):
            async with spool.locked("a", "b"):
                pass
        seen = await asyncio.to_thread(_probed, root, "a")
    finally:
        release.set()
        await asyncio.wait_for(holder, timeout=DEADLINE)
    assert seen == "free"
    assert "cannot unlock" in caplog.text
