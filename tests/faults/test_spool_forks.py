"""The S3 fallback spool in a child forked while its parent's event loop runs (a pool of
workers made inside ``asyncio.run``): the child flushes in the background too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from file_storage import ObjectEvent, S3StorageBackend
from tests.faults.conftest import MakeBackend
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
