"""The Redis ledger while ``set_versioning`` runs in another process: listings' probes,
recounts and a switch that fails, each with a hook widening its window."""

from __future__ import annotations

import asyncio
from pathlib import Path

from file_storage import LocalStorageBackend
from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer


async def stored(backend: LocalStorageBackend, *keys: str) -> int:
    total = 0
    for key in keys:
        total += sum(v.size for v in await backend.list_versions(key))
    return total


async def test_a_probe_begun_before_another_process_switched_versioning_is_ignored(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await a.save("k", b"x" * 100)
        probed, go = asyncio.Event(), asyncio.Event()
        real = b._quotas._probe
        assert real is not None

        async def late() -> str:  # read before the switch, reported after it
            state = await real()
            probed.set()
            await go.wait()
            return state

        b._quotas._probe = late
        refresh = asyncio.create_task(b.refresh_usage())
        await probed.wait()
        await a.set_versioning(True)
        go.set()
        await refresh
        await b.save("k", b"y" * 50)  # the store keeps the 100 bytes as a prior version
        assert await stored(a, "k") == 150
        assert (await b.get_usage()).used == (await a.get_usage()).used == 150
