"""Quotas in a process forked after its parent used the backend (``multiprocessing``
with ``fork``, a pre-forking server, ``os.fork``): the child starts from a copy of the
parent's memory, with none of the parent's writes in flight running in it.

The child must not wait for key locks or count reservations that only the parent's
writes in flight held, and the parent must keep working.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend
from tests.forks import DEADLINE, forked, in_child


class GatedLocal(LocalStorageBackend):
    """Holds each write of ``gated`` after it landed, until ``gate`` is set."""

    gated = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.landed = asyncio.Event()
        self.gate = asyncio.Event()

    async def _save(self, key: str, body: Any, content_type: str, metadata: Any) -> None:
        await super()._save(key, body, content_type, metadata)
        if key == self.gated:
            self.landed.set()
            await self.gate.wait()


@pytest.fixture(params=["in-process", "redis"])
def options(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "in-process":
        return {}
    server = request.getfixturevalue("redis_server")
    return {"quota_redis_url": server.url, "quota_redis_namespace": uuid.uuid4().hex}


async def test_a_child_forked_while_its_parent_writes_a_key_writes_it_too(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    backend = GatedLocal(tmp_path, max_size_bytes=1000, **options)
    backend.gated = "k"
    parent = asyncio.create_task(backend.save("k", b"a" * 100))
    await backend.landed.wait()  # the parent holds k's lock and 100 reserved bytes

    async def child() -> int:
        backend.gated = ""
        await backend.save("k", b"b" * 10)
        await backend.refresh_usage()
        return (await backend.get_usage()).used

    child_sees = forked(in_child(lambda: asyncio.run(child())))
    backend.gate.set()
    await parent
    # the child overwrote k once the parent's write ended (Redis lock), or at once
    # (in-process: the parent's lock is not this process's), and counts what is stored
    assert await asyncio.to_thread(child_sees) == 10
    await backend.refresh_usage()
    assert (await backend.get_usage()).used == 10 == len(await backend.load("k"))
    await backend.save("k2", b"c" * 5)  # the parent keeps working
    assert (await backend.get_usage()).used == 15
    await backend.aclose()


def test_a_child_forked_while_another_thread_steps_the_ledger_does_not_hang(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    from file_storage._quota import ledger as _quota

    backend = LocalStorageBackend(tmp_path, max_size_bytes=1000, **options)
    asyncio.run(backend.save("a", b"x" * 10))
    stepping, done = threading.Event(), threading.Event()

    def step() -> None:  # a reservation of another thread's loop, caught mid-step
        with _quota._LEDGER:
            stepping.set()
            done.wait(DEADLINE)

    thread = threading.Thread(target=step)
    thread.start()
    stepping.wait(DEADLINE)
    try:

        async def child() -> int:
            await backend.save("b", b"y" * 20)
            return (await backend.get_usage()).used

        assert forked(in_child(lambda: asyncio.run(child())))() == 30
    finally:
        done.set()
        thread.join()
    asyncio.run(backend.save("c", b"z"))  # the parent keeps working


class GatedVersioning(LocalStorageBackend):
    """Holds its next ``set_versioning`` in the store until ``gate`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def _set_versioning(self, enabled: bool) -> None:
        if not self.entered.is_set():
            self.entered.set()
            await self.gate.wait()
        await super()._set_versioning(enabled)


async def test_a_child_forked_during_its_parents_set_versioning_can_set_it(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    # the parent's set_versioning held the backend's turn: the child, where it never
    # ends, waited for that turn for ever
    backend = GatedVersioning(tmp_path, max_size_bytes=1000, **options)
    parent = asyncio.create_task(backend.set_versioning(True))
    await backend.entered.wait()

    async def child() -> str:
        try:
            await asyncio.wait_for(backend.set_versioning(True), timeout=DEADLINE / 3)
        except TimeoutError:
            return "waits for the parent's set_versioning"
        await backend.save("k", b"a" * 10)
        await backend.save("k", b"b" * 20)
        return str((await backend.get_usage()).used)

    child_sees = forked(in_child(lambda: asyncio.run(child())))
    backend.gate.set()
    await parent
    assert await asyncio.to_thread(child_sees) == "30"
    await backend.aclose()
