"""Quotas after an event loop closed with a write of it still in flight (a sync worker
closing its loop after its job, a task of that job left running): the write never runs
again, so what it held must not be held for good.

The in-process ledger gives its key lock and reserved bytes back once its loop is closed;
the Redis ledger's locks and reservations in Redis run out with their lease.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend
from tests.test_quota_forks import GatedLocal

DEADLINE = 30.0  # seconds: far above what a write needs, a hang fails the test


@pytest.fixture(params=["in-process", "redis"])
def options(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "in-process":
        return {}
    server = request.getfixturevalue("redis_server")
    # the shortest lease: the dead write's lock and bytes in Redis run out soon
    return {
        "quota_redis_url": server.url,
        "quota_redis_namespace": uuid.uuid4().hex,
        "quota_lease_seconds": 1,
    }


async def leave_a_write(backend: GatedLocal) -> None:
    """Start a write of 600 bytes and leave it running (held once landed)."""
    asyncio.get_running_loop().create_task(backend.save("k", b"a" * 600))
    await backend.landed.wait()


async def next_job(backend: LocalStorageBackend) -> int:
    await asyncio.wait_for(backend.save("k", b"b" * 10), DEADLINE)
    await backend.save("other", b"c" * 900)  # fits: the dead write's 600 are free
    return (await backend.get_usage()).used


def test_a_write_left_in_flight_by_a_closed_loop_holds_its_key_and_bytes_no_more(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    backend = GatedLocal(tmp_path, max_size_bytes=1000, **options)
    backend.gated = "k"
    loop = asyncio.new_event_loop()
    loop.run_until_complete(leave_a_write(backend))
    loop.run_until_complete(loop.shutdown_asyncgens())  # (closes its Redis connection)
    loop.close()  # the write never runs again
    backend.gated = ""
    assert asyncio.run(next_job(backend)) == 910
    del backend
    gc.collect()  # the dead write's coroutine is closed now: quietly (warnings are errors)


def test_a_writer_waiting_for_a_key_gets_it_once_its_holders_loop_is_closed(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    backend = GatedLocal(tmp_path, max_size_bytes=1000, **options)
    backend.gated = "k"
    loop = asyncio.new_event_loop()
    loop.run_until_complete(leave_a_write(backend))
    backend.gated = ""
    # another thread's loop waits for k, held by the write left in flight
    result: list[int] = []
    waiting = threading.Thread(
        target=lambda b: result.append(asyncio.run(next_job(b))), args=[backend]
    )
    waiting.start()
    lock = backend._quotas._locks["k"].lock
    deadline = time.monotonic() + DEADLINE
    while not lock._waiters and time.monotonic() < deadline:  # bounded: until it queues
        time.sleep(0.001)
    assert lock._waiters
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()  # the write never runs again
    waiting.join(DEADLINE)
    assert not waiting.is_alive(), "the waiting writer hangs"
    assert result == [910]
    del backend
    gc.collect()
