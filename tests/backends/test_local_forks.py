"""The local backend in a process forked after its parent used it (``multiprocessing``
with ``fork``, a pre-forking server): the child has none of the parent's threads."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend
from file_storage.backends.local import _backend, _io, _meta
from tests.forks import DEADLINE, forked, in_child


async def chunks() -> AsyncIterator[bytes]:
    for _ in range(3):
        yield b"x" * 10


def test_a_child_forked_after_its_parent_streamed_streams_too(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path)

    async def use(key: str) -> list[str]:
        await backend.save(key, chunks())  # streamed: the backend's own I/O threads
        assert b"".join([c async for c in backend.stream(key)]) == b"x" * 30
        return sorted(await backend.list_files())

    assert asyncio.run(use("parent")) == ["parent"]
    assert forked(in_child(lambda: asyncio.run(use("child"))))() == ["child", "parent"]
    assert asyncio.run(use("parent-again")) == ["child", "parent", "parent-again"]


def test_a_child_forked_while_a_parent_thread_writes_a_key_writes_it_too(tmp_path: Path) -> None:
    # a write of the parent's I/O threads holds the key's lock (this process's thread
    # lock, then every process's flock) from its stamp to its rename: forked meanwhile,
    # the child waits for the parent's write to end, not for ever
    backend = LocalStorageBackend(tmp_path)
    asyncio.run(backend.save("k", b"before"))
    writing, done = threading.Event(), threading.Event()

    def write() -> None:  # another thread's write of "k", caught between stamp and rename
        with _meta.key_locks(backend._dir, "k"):
            writing.set()
            done.wait(DEADLINE)

    thread = threading.Thread(target=write)
    thread.start()
    writing.wait(DEADLINE)
    try:

        async def child() -> bytes:
            await backend.save("k", b"child")
            return await backend.load("k")

        child_sees = forked(in_child(lambda: asyncio.run(child())))
    finally:
        done.set()  # the parent's write ends: the child's may go on
        thread.join()
    assert child_sees() == b"child"
    assert asyncio.run(backend.load("k")) == b"child"  # the parent sees the child's write


def test_a_child_forked_while_a_parent_thread_opens_the_root_uses_it_too(
    tmp_path: Path,
) -> None:
    # a child opens the root anew on first use, under the root's lock: forked while a
    # parent's thread held it (opening the root, or a lock file's folder), it waited for
    # ever
    backend = LocalStorageBackend(tmp_path)
    asyncio.run(backend.save("k", b"before"))
    opening, done = threading.Event(), threading.Event()

    def open_root() -> None:  # another thread of the parent, caught in the root's lock
        with backend._dir._lock:
            opening.set()
            done.wait(DEADLINE)

    thread = threading.Thread(target=open_root)
    thread.start()
    opening.wait(DEADLINE)
    try:

        async def child() -> bytes:
            await backend.save("k", b"child")
            return await backend.load("k")

        child_sees = forked(in_child(lambda: asyncio.run(child())))
        assert child_sees() == b"child"
    finally:
        done.set()
        thread.join()
    assert asyncio.run(backend.load("k")) == b"child"


def test_a_child_forked_while_its_parent_saves_saves_reads_and_counts_the_parents_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the parent's streamed save is caught in an I/O thread, its bytes in its temp file:
    # the child needs I/O threads of its own, and temp names of its own, so that its
    # quota counts the parent's temp file as another process's write in flight
    backend = LocalStorageBackend(tmp_path, max_size_bytes=10**6)
    parent, writing, done = os.getpid(), threading.Event(), threading.Event()

    def write_all(fd: int, batch: list[bytes]) -> None:
        _io.write_all(fd, batch)
        if os.getpid() == parent and not writing.is_set():
            writing.set()
            done.wait(DEADLINE)

    monkeypatch.setattr(_backend, "write_all", write_all)
    saved: list[str] = []
    saving = threading.Thread(target=lambda: saved.append(asyncio.run(backend.save("p", chunks()))))
    saving.start()
    try:
        assert writing.wait(DEADLINE)

        async def child() -> tuple[int, bytes, list[str]]:
            await backend.refresh_usage()
            in_flight = (await backend.get_usage()).used  # the parent's temp file
            await backend.save("c", chunks())
            return in_flight, await backend.load("c"), await backend.list_files()

        child_sees = forked(in_child(lambda: asyncio.run(child())))
        assert child_sees() == (30, b"x" * 30, ["c"])
    finally:
        done.set()
        saving.join()
    assert saved == ["p"]
    assert asyncio.run(backend.list_files()) == ["c", "p"]


def test_a_child_forked_while_its_parent_loop_runs_purges_in_the_background(
    tmp_path: Path,
) -> None:
    # the parent's loop runs the background purge when it forks: the child's own loop
    # must get a purge of its own, not take the parent's task (never run here) for it
    backend = LocalStorageBackend(tmp_path, expire_interval_seconds=0.01)

    async def child() -> str:
        purged = asyncio.Event()
        backend.subscribe(lambda e: purged.set() if e.type == "deleted" else None)
        await backend.save("temp/old.bin", b"x")
        two_days_ago = time.time() - 2 * 86400
        os.utime(tmp_path / "temp" / "old.bin", (two_days_ago, two_days_ago))
        try:
            await asyncio.wait_for(purged.wait(), timeout=DEADLINE / 3)  # a bound
        except TimeoutError:
            return "never purged"
        return "purged"

    async def parent() -> str:
        await backend.set_expiration("temp", 1)  # starts the purge in this loop
        # forked while this loop runs; it waits for the child without running (so the
        # parent's purge cannot do the child's work)
        return str(forked(in_child(lambda: asyncio.run(child())))())

    assert asyncio.run(parent()) == "purged"
    asyncio.run(backend.aclose())


_KILLED_MID_WRITE = r"""
import asyncio, os, sys, threading
from file_storage import LocalStorageBackend
from file_storage.backends.local import _meta

backend = LocalStorageBackend(sys.argv[1])
asyncio.run(backend.save("k", b"before"))
held = threading.Event()

def write():  # a write of "k" caught between its stamp and its rename
    with _meta.key_locks(backend._dir, "k"):
        held.set()
        threading.Event().wait()

threading.Thread(target=write, daemon=True).start()
held.wait()
child = os.fork()  # a worker forked now, which never touches the folder
if child == 0:
    sys.stdin.read()  # lives until the test ends
    os._exit(0)
print(child, flush=True)
sys.stdin.read()
"""

_SAVE = r"""
import asyncio, sys
from file_storage import LocalStorageBackend
asyncio.run(LocalStorageBackend(sys.argv[1]).save("k", b"after"))
"""


def test_a_parent_killed_mid_write_leaves_no_key_locked_by_the_children_it_forked(
    tmp_path: Path,
) -> None:
    # the key's flock belongs to the open file: a child's inherited copy of the parent's
    # descriptor would keep it held after the parent died, for as long as the child lives
    import signal
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MID_WRITE, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)  # killed holding the key's lock
        parent.wait()
        # another process's write of the key goes on (the child still lives)
        subprocess.run(
            [sys.executable, "-c", _SAVE, str(tmp_path)], env=env, check=True, timeout=DEADLINE
        )
        assert asyncio.run(LocalStorageBackend(tmp_path).load("k")) == b"after"
    finally:
        os.kill(child, signal.SIGKILL)
        for pipe in (parent.stdin, parent.stdout):
            if pipe is not None:
                pipe.close()
