"""The Redis ledger used from one event loop after another, and from two at once.

Scripts call ``asyncio.run`` once per job on one store, sync workers run each job in a
new loop of a thread: each loop gets a connection of its own, which must end with its
loop (else every job leaves a connection open in Redis and a socket in the process).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer

JOBS = 5


def test_a_job_per_asyncio_run_leaves_no_connection_open_nor_its_loop_alive(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    backend = local(tmp_path, own_redis, namespace, max_size_bytes=10_000)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def job(i: int) -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await backend.save(f"job-{i}", b"x" * 10)

    for i in range(JOBS):
        asyncio.run(job(i))
    gc.collect()
    assert own_redis.connected(1) == 1  # the one asking: each job's connection ended with it
    assert [ref for ref in loops if ref() is not None] == []

    async def last() -> int:
        used = (await backend.get_usage()).used
        await backend.aclose()
        return used

    assert asyncio.run(last()) == JOBS * 10
