"""The S3 fallback spool in a child forked while its parent's event loop runs (a pool of
workers made inside ``asyncio.run``): the child flushes in the background, and writes a
key the parent was saving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import ObjectEvent, S3StorageBackend
from file_storage._spool import Spool
from tests.faults.conftest import MakeBackend, appears
from tests.faults.proxy import FaultProxy
from tests.forks import DEADLINE, forked, in_child

pytestmark = pytest.mark.s3


async def test_a_child_forked_while_its_parent_loop_runs_flushes_in_the_background(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ended: list[asyncio.Event] = []  # set as each flush ends, in the parent
    original = S3StorageBackend.flush_spool

    async def observed(self: S3StorageBackend) -> int:
        try:
            return await original(self)
        finally:
            for event in ended:
                event.set()

    monkeypatch.setattr(S3StorageBackend, "flush_spool", observed)
    backend = make_backend(fallback_path=tmp_path / "spool", flush_interval_seconds=0.05)
    proxy.refuse()
    await backend.save("a.txt", b"later")  # spooled; the flusher starts with the client
    flush_ended = asyncio.Event()
    ended.append(flush_ended)
    await asyncio.wait_for(flush_ended.wait(), timeout=DEADLINE)  # a bound
    ended.clear()
    # the parent's flusher now sleeps, and cannot run again before the child is done:
    # this loop does not run until then, so only the child's flusher can send a.txt
    proxy.restore()

    async def child() -> str:
        flushed = asyncio.Event()

        def on_event(event: ObjectEvent) -> None:
            if event.type == "created" and event.key == "a.txt":
                flushed.set()

        backend.subscribe(on_event)
        await backend.save("b.txt", b"child")  # the child's clients, and its flusher
        try:
            await asyncio.wait_for(flushed.wait(), timeout=DEADLINE / 3)  # a bound
        except TimeoutError:
            return "never flushed"
        return "flushed"

    assert forked(in_child(lambda: asyncio.run(child())))() == "flushed"
    body = raw.get_object(Bucket=s3_bucket, Key="storage/a.txt")["Body"].read()
    assert body == b"later"


async def test_a_child_forked_while_its_parent_saves_a_key_waits_for_it_then_saves_it(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    backend = make_backend(fallback_path=tmp_path / "spool")
    await backend.save("warm.txt", b"w")
    reading, release = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"parent"
        reading.set()  # asked for more: the parent's save holds the key's spool lock
        await release.wait()

    saving = asyncio.ensure_future(backend.save("a.txt", body()))
    await asyncio.wait_for(reading.wait(), timeout=DEADLINE)  # a bound
    waiting = tmp_path / "child-waits"

    async def child() -> str:
        async def seen(self: Spool) -> None:
            waiting.touch()  # the key is held by another process: the parent

        Spool._waiting_for_key = seen  # type: ignore[method-assign]  # the child's copy only
        # the parent's turn on the key, copied into the child, is not the child's to wait
        # for; the parent's hold is, until the parent's save ends
        await asyncio.wait_for(backend.save("a.txt", b"child"), timeout=DEADLINE / 3)
        return (await backend.load("a.txt")).decode()

    result = forked(in_child(lambda: asyncio.run(child())))
    assert await appears(waiting), "the child never found the key held"
    release.set()
    await saving
    assert await asyncio.to_thread(result) == "child"  # it landed after the parent's
    assert await backend.load("a.txt") == b"child"
