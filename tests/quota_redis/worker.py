"""One writer process of the multi-process quota tests: ``python -m tests.quota_redis.worker
'<json>'``. Prints one JSON line of what it did; ``hang`` mode prints ``streaming`` once its
write is under way, ``lost-commit`` prints ``landed`` once a save stored whose commit Redis
never got, and then both wait to be killed."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import AsyncIterator
from typing import Any

from file_storage import (
    LocalStorageBackend,
    ObjectNotFoundError,
    S3StorageBackend,
    StorageBackend,
    StorageQuotaExceededError,
    StorageUnavailableError,
)


def build(spec: dict[str, Any]) -> StorageBackend:
    shared = {
        "quota_redis_url": spec["redis"],
        "quota_redis_namespace": spec["namespace"],
        "quota_lease_seconds": spec.get("lease", 60.0),
    }
    backend = spec["backend"]
    if backend["type"] == "local":
        return LocalStorageBackend(backend["root"], **shared)
    return S3StorageBackend(
        backend["bucket"],
        prefix="storage",
        endpoint_url=backend["endpoint"],
        region="us-east-1",
        access_key_id=backend["key_id"],
        secret_access_key=backend["secret"],
        addressing_style="path",
        **shared,
    )


async def drip(content: bytes, rng: random.Random) -> AsyncIterator[bytes]:
    """``content`` in chunks of 1 to 40 bytes: a client sending a few bytes per packet."""
    sent = 0
    while sent < len(content):
        step = rng.randint(1, 40)
        yield content[sent : sent + step]
        sent += step


async def fill(storage: StorageBackend, spec: dict[str, Any], rng: random.Random) -> dict[str, int]:
    counts = {"stored": 0, "refused": 0, "unavailable": 0}
    prefixes: list[str] = spec["prefixes"]

    async def writer(w: int) -> None:
        for i in range(spec["writes"]):
            key = f"{rng.choice(prefixes)}p{spec['id']}-w{w}-{i}"
            content = b"x" * rng.randint(100, 2000)
            try:
                await storage.save(key, drip(content, rng) if spec.get("drip") else content)
                counts["stored"] += 1
            except StorageQuotaExceededError:
                counts["refused"] += 1
            except StorageUnavailableError:  # the test server gave up under the load
                counts["unavailable"] += 1

    await asyncio.gather(*(writer(w) for w in range(spec["writers"])))
    return counts


async def mixed(
    storage: StorageBackend, spec: dict[str, Any], rng: random.Random
) -> dict[str, int]:
    counts = {"done": 0, "refused": 0, "missing": 0, "unavailable": 0}
    keys = [f"m/k{i}" for i in range(3)]

    async def writer() -> None:
        for _ in range(spec["writes"]):
            op = rng.choice(["save", "save", "copy", "move", "delete", "delete_many"])
            a, b = rng.sample(keys, 2)
            try:
                if op == "save":
                    await storage.save(a, b"y" * rng.randint(0, 3000))
                elif op == "copy":
                    await storage.copy(a, b)
                elif op == "move":
                    await storage.move(a, b)
                elif op == "delete":
                    await storage.delete(a)
                else:
                    await storage.delete_many([a, b])
                counts["done"] += 1
            except StorageQuotaExceededError:
                counts["refused"] += 1
            except ObjectNotFoundError:
                counts["missing"] += 1
            except StorageUnavailableError:  # the test server gave up under the load
                counts["unavailable"] += 1

    await asyncio.gather(*(writer() for _ in range(spec["writers"])))
    return counts


async def hang(storage: StorageBackend) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"h" * 1000
        print("streaming", flush=True)
        await asyncio.Event().wait()  # until SIGKILL
        yield b""

    await storage.save("hang/k", body())


async def lost_commit(storage: StorageBackend) -> None:
    # the save lands but its commit never reaches Redis (the connection dropped it): the
    # process is killed before it could tell Redis, so nothing of it is left in memory
    from file_storage._quota.redis import scripts as lua
    from file_storage._quota.redis.wire import Client, RedisUnavailable
    from tests.quota_redis.ledger import steps_through_run

    run = Client.run

    async def drop_commit(self: Client, script: object, args: list[object]) -> object:
        if script is lua.COMMIT:
            raise RedisUnavailable("ConnectionResetError")
        return await run(self, script, args)  # type: ignore[arg-type]

    Client.run = drop_commit  # type: ignore[method-assign]
    steps_through_run()
    await storage.save("lost/k", b"l" * 900)
    print("landed", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


async def main(spec: dict[str, Any]) -> None:
    rng = random.Random(spec.get("id", 0))
    async with build(spec) as storage:
        for prefix, limit in spec.get("quotas", {}).items():
            storage.set_quota(prefix, limit)
        match spec["mode"]:
            case "fill":
                result = await fill(storage, spec, rng)
            case "mixed":
                result = await mixed(storage, spec, rng)
            case "lost-commit":
                await lost_commit(storage)
                return
            case _:
                await hang(storage)
                return
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
