"""The S3 fallback spool's key lock is waited for a bounded time: a worker that hangs
while it holds a key (alive, so the kernel never drops its lock) fails the other writes
of that key with a typed error, rather than blocking them for ever, and loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from file_storage import StorageUnavailableError
from file_storage._spool import Spool
from tests.faults.conftest import MakeBackend, appears, hold_in_child
from tests.faults.test_spool import spool_files
from tests.forks import DEADLINE
from tests.s3util import stored_keys

# one attempt of 0.25 + 0.25 s: the spool's key wait is 0.5 s (a real bound, never reached
# by the holder, which holds the key until the test says go)
BOUNDED: dict[str, Any] = {"max_attempts": 1, "connect_timeout": 0.25, "read_timeout": 0.25}


@pytest.mark.s3
async def test_a_save_waiting_for_a_key_a_hung_worker_holds_fails_after_the_bound(
    make_backend: MakeBackend, spool_path: Path, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    backend = make_backend(fallback_path=spool_path, **BOUNDED)
    assert backend._fallback.spool is not None
    store = backend._fallback.spool.store
    holding, go = tmp_path / "holding", tmp_path / "go"
    result = hold_in_child(spool_path, "a.txt", holding, go, store)
    waits = 0

    async def seen(self: Spool) -> None:
        nonlocal waits
        waits += 1

    original = Spool._waiting_for_key
    Spool._waiting_for_key = seen  # type: ignore[method-assign]
    try:
        assert await appears(holding), "the child never took the key"
        with pytest.raises(StorageUnavailableError) as caught:
            await asyncio.wait_for(backend.save("a.txt", b"x"), timeout=DEADLINE)
    finally:
        Spool._waiting_for_key = original  # type: ignore[method-assign]
        go.touch()
    assert await asyncio.to_thread(result) == "done"
    assert waits > 0  # it waited for the child's key before it gave up
    assert (caught.value.operation, caught.value.key) == ("save", "a.txt")
    assert "held it for over 0.5 s" in str(caught.value)
    assert stored_keys(raw, s3_bucket) == []  # nothing sent, nothing spooled
    assert spool_files(spool_path) == []
    await backend.save("a.txt", b"y")  # the key is free once the worker lets it go
    assert await backend.load("a.txt") == b"y"


async def test_a_wait_for_a_key_held_in_this_process_ends_at_the_bound(tmp_path: Path) -> None:
    # a request of this worker stalled holding the key (a client that stopped sending
    # its body): the next write of the key in the process gives up after the bound too
    spool = Spool(tmp_path / "spool", wait=0.2)
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with spool.locked("k"):
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), timeout=DEADLINE)  # a bound
    try:
        with pytest.raises(StorageUnavailableError):
            async with spool.locked("j", "k"):  # "j" taken, "k" awaited
                raise AssertionError("taken while another holder has it")
        async with asyncio.timeout(DEADLINE):  # "j", taken before, was given back
            async with spool.locked("j"):
                pass
    finally:
        release.set()
        await asyncio.wait_for(holder, timeout=DEADLINE)
    async with asyncio.timeout(DEADLINE), spool.locked("k"):  # free once its holder ends
        pass
