"""The Redis ledger while ``set_versioning`` runs in another process: listings' probes,
recounts and a switch that fails, each with a hook widening its window."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, StorageUnavailableError
from file_storage._quota.redis import scripts as lua
from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer


class Landing(LocalStorageBackend):
    """Holds its write of ``gated`` that comes after ``skip`` others once it has landed
    (asking Redis at every write: a switch's listing would wait for a draw to end)."""

    _draws_allowances = False

    gated = ""
    skip = 0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.landed = asyncio.Event()
        self.gate = asyncio.Event()

    async def _save(self, key: str, body: object, content_type: str, metadata: object) -> None:
        await super()._save(key, body, content_type, metadata)  # type: ignore[arg-type]
        if key == self.gated:
            if self.skip:
                self.skip -= 1
                return
            self.landed.set()
            await self.gate.wait()


def landing(root: Path, server: RedisServer, namespace: str) -> Landing:
    return Landing(
        root, max_size_bytes=1000, quota_redis_url=server.url, quota_redis_namespace=namespace
    )


def told_locked(backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once a write of ``backend`` is told its key is held by another process."""
    locked = asyncio.Event()
    client = backend._quotas._client  # type: ignore[attr-defined]
    real = client.run

    async def run(script: object, args: list[object]) -> object:
        result = await real(script, args)
        if script is lua.RESERVE and result[0] == "locked":
            locked.set()
        return result

    monkeypatch.setattr(client, "run", run)
    return locked


async def first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(event.wait()) for event in events]
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


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


async def test_a_recounted_write_holds_its_key_until_the_recount_is_done(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = landing(tmp_path, redis_server, namespace)
    b = landing(tmp_path, redis_server, namespace)
    c = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b, c:
        await c.set_versioning(True)
        await c.save("k", b"v" * 100)
        await b.get_usage()
        a.gated = "k"
        first = asyncio.create_task(a.save("k", b"a" * 60))
        await a.landed.wait()
        await c.set_versioning(True)  # a switch while a's write was in flight: a recounts k
        b.gated = "k"
        locked = told_locked(b, monkeypatch)
        second: list[asyncio.Task[str]] = []
        real = a._list_versions

        async def recount(key: str) -> list[object]:
            if not second:  # b writes the key now: it must wait for a's recount
                second.append(asyncio.create_task(b.save("k", b"b" * 40)))
                await first_of(b.landed, locked)
            return await real(key)  # type: ignore[return-value]

        monkeypatch.setattr(a, "_list_versions", recount)
        a.gate.set()
        await first
        b.gate.set()
        await second[0]
        assert await stored(c, "k") == 200
        assert (await c.get_usage()).used == 200


async def test_a_recounted_delete_holds_its_key_again_for_the_recount(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = landing(tmp_path, redis_server, namespace)
    c = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b, c:
        await c.set_versioning(True)
        await c.save("k", b"v" * 100)
        await b.get_usage()
        deleted, go = asyncio.Event(), asyncio.Event()
        real_delete = a._delete

        async def held_delete(key: str) -> None:
            await real_delete(key)
            deleted.set()
            await go.wait()

        monkeypatch.setattr(a, "_delete", held_delete)
        first = asyncio.create_task(a.delete("k"))
        await deleted.wait()
        await c.set_versioning(True)  # a switch while a's delete was in flight: a recounts k
        b.gated, b.skip = "k", 1  # b's second write of k lands, then waits
        locked = told_locked(b, monkeypatch)
        writes: list[asyncio.Task[None]] = []
        real = a._list_versions

        async def two_writes() -> None:
            await b.save("k", b"b" * 40)
            await b.save("k", b"c" * 30)  # keeps the 40 bytes as a prior version

        async def recount(key: str) -> list[object]:
            if not writes:  # b writes the key twice now: it must wait for a's recount
                writes.append(asyncio.create_task(two_writes()))
                await first_of(b.landed, locked)
            return await real(key)  # type: ignore[return-value]

        monkeypatch.setattr(a, "_list_versions", recount)
        go.set()
        await first
        b.gate.set()
        await writes[0]
        assert await stored(c, "k") == 170
        assert (await c.get_usage()).used == 170


async def run_out_switches(server: RedisServer, namespace: str) -> None:
    """Every versioning switch marked under way runs out of its lease now."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(server.url)
    marks = "{" + namespace + "}:vsw"
    for member in await client.zrange(marks, 0, -1):
        await client.zadd(marks, {member: 0})
    await client.aclose()


@pytest.mark.parametrize("store_answers", [True, False], ids=["store-answers", "store-silent"])
async def test_a_switch_that_failed_after_the_store_switched_leaves_the_ledger_right(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    store_answers: bool,
) -> None:
    # the store silent too: the state is unknown, and usage is listed again
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await a.save("k", b"x" * 100)
        await b.get_usage()
        real = a._set_versioning

        async def applied_then_timed_out(enabled: bool) -> None:
            await real(enabled)
            raise StorageUnavailableError("timed out")

        async def silent() -> str:
            raise StorageUnavailableError("timed out")

        monkeypatch.setattr(a, "_set_versioning", applied_then_timed_out)
        if not store_answers:
            monkeypatch.setattr(a, "_versioning", silent)
        with pytest.raises(StorageUnavailableError):
            await a.set_versioning(True)
        # a switch left under way would only be seen until its lease runs out
        await run_out_switches(redis_server, namespace)
        await b.save("k", b"y" * 50)  # the store keeps the 100 bytes as a prior version
        assert await stored(a, "k") == 150
        assert (await b.get_usage()).used == (await a.get_usage()).used == 150
