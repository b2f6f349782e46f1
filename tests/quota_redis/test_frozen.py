"""A process frozen past its lease (a long GC pause, a stopped VM): its key locks ran out
too, and another process wrote or deleted its keys before it came back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from file_storage import LocalStorageBackend
from tests.quota_redis.ledger import DeleteGated, gated_pair, local, run_out_locks
from tests.quota_redis.server import RedisServer


async def test_a_late_commit_after_another_process_overwrote_the_key_counts_what_is_stored(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a, b = gated_pair(tmp_path, redis_server, namespace, "k")
    async with a, b:
        first = asyncio.create_task(a.save("k", b"x" * 600))
        await a.landed.wait()
        await run_out_locks(redis_server, namespace)
        await b.save("k", b"y" * 10)  # lands after a's object: the one stored
        a.gate.set()
        await first
        assert await b.load("k") == b"y" * 10
        assert (await b.get_usage()).used == await b.get_total_size() == 10


async def test_a_late_commit_that_no_longer_fits_never_deletes_another_process_object(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a, b = gated_pair(tmp_path, redis_server, namespace, "k")
    async with a, b:
        first = asyncio.create_task(a.save("k", b"x" * 600))
        await a.landed.wait()
        await run_out_locks(redis_server, namespace)
        await b.save("k", b"")  # lands after a's object, and b is told it is stored
        await b.save("other", b"z" * 500)
        a.gate.set()
        await asyncio.gather(first, return_exceptions=True)
        assert await b.list_files() == ["k", "other"]
        assert await b.load("k") == b""
        assert (await b.get_usage()).used == await b.get_total_size() == 500


async def test_a_late_delete_after_another_process_wrote_the_key_counts_what_is_stored(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": namespace}
    a = DeleteGated(tmp_path, max_size_bytes=1000, **options)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await b.save("k", b"x" * 600)
        first = asyncio.create_task(a.delete("k"))
        await a.deleted.wait()  # gone from the store, not yet from the ledger
        await run_out_locks(redis_server, namespace)
        await b.save("k", b"y" * 10)  # lands after a's delete: stored
        a.gate.set()
        await first
        assert await b.load("k") == b"y" * 10
        assert (await b.get_usage()).used == await b.get_total_size() == 10


class CopyGated(LocalStorageBackend):
    """Holds its next copy once its bytes are reserved, before it reads the source."""

    _draws_allowances = False  # (the steps of a frozen process in Redis, as on S3)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reserved = asyncio.Event()
        self.gate = asyncio.Event()

    async def _copy(self, src: str, dst: str, *args: object) -> str:
        self.reserved.set()
        await self.gate.wait()
        return await super()._copy(src, dst, *args)  # type: ignore[arg-type]


async def test_a_late_copy_of_a_source_another_process_overwrote_counts_what_is_stored(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": namespace}
    a = CopyGated(tmp_path, max_size_bytes=1000, **options)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await b.save("src", b"x" * 100)
        first = asyncio.create_task(a.copy("src", "dst"))
        await a.reserved.wait()  # 100 bytes held for dst
        await run_out_locks(redis_server, namespace)
        await b.save("src", b"y" * 10)  # the copy reads this one
        a.gate.set()
        await first
        assert await b.load("dst") == b"y" * 10
        assert (await b.get_usage()).used == await b.get_total_size() == 20
