"""purge_expired on the Redis ledger while another process writes the key it purges."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from file_storage import ObjectEvent, ObjectInfo
from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer


@pytest.mark.parametrize("how", ["save", "copy", "delete"])
@pytest.mark.parametrize("when", ["after_the_listing", "between_check_and_unlink"])
async def test_usage_after_a_purge_raced_by_another_process_is_what_is_stored(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
    when: str,
) -> None:
    root = tmp_path / "storage"
    a = local(root, redis_server, namespace, max_size_bytes=1000)

    async def write() -> None:  # another process: a backend of its own, its own loop
        async with local(root, redis_server, namespace, max_size_bytes=1000) as b:
            if how == "save":
                await b.save("temp/a.txt", b"n" * 77)
            elif how == "copy":
                await b.copy("keep/src.txt", "temp/a.txt")
            else:
                await b.delete("temp/a.txt")

    async with a:
        await a.save("keep/src.txt", b"s" * 40)
        await a.save("temp/a.txt", b"o" * 10)
        await a.save("temp/b.txt", b"p" * 20)
        await a.set_expiration("temp", 1)
        seen: list[ObjectEvent] = []
        a.subscribe(seen.append)
        writers: list[threading.Thread] = []
        if when == "after_the_listing":
            listing = a._iter_files

            async def then_written(prefix: str) -> AsyncIterator[ObjectInfo]:
                async for info in listing(prefix):
                    yield info
                await write()

            monkeypatch.setattr(a, "_iter_files", then_written)
        else:
            etag_of, listing, landed = a._etag, a._iter_files, threading.Event()
            listed = False

            async def seen_all(prefix: str) -> AsyncIterator[ObjectInfo]:
                nonlocal listed
                async for info in listing(prefix):
                    yield info
                listed = True

            def checked_then_written(st: os.stat_result) -> str:
                etag = etag_of(st)
                # the purge's first comparison (temp/a.txt), under the key's lock
                if listed and not writers:
                    writers.append(
                        threading.Thread(target=lambda: (asyncio.run(write()), landed.set()))
                    )
                    writers[0].start()
                    landed.wait(timeout=0.5)  # a bound: it lands now, unless a lock holds it
                return etag

            monkeypatch.setattr(a, "_iter_files", seen_all)
            monkeypatch.setattr(a, "_etag", checked_then_written)
        purged = await a.purge_expired(now=datetime.now(UTC) + timedelta(days=3))
        for writer in writers:
            await asyncio.to_thread(writer.join)
        monkeypatch.undo()
        assert when == "after_the_listing" or writers, "the purge never compared temp/a.txt"
        stored = 0
        for key in await a.list_files():
            stored += (await a.stat(key)).size
        assert (await a.get_usage()).used == stored
        await a.refresh_usage()
        assert (await a.get_usage()).used == stored
        # an event for each object the purge deleted, and only for those
        assert sorted(e.key for e in seen if e.type == "deleted") == sorted(
            ["temp/b.txt"] + (["temp/a.txt"] if purged == 2 else [])
        )
        assert [e for e in seen if e.type != "deleted"] == []
        if how != "delete":
            assert "temp/a.txt" in await a.list_files()


async def test_two_processes_purging_at_once_delete_and_count_each_object_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # every object expired is listed by both: each is deleted by one of them, announced
    # and forgotten by the ledger once, and neither purge fails on what the other took
    root = tmp_path / "storage"
    async with local(root, redis_server, namespace, max_size_bytes=10_000) as setup:
        await setup.set_expiration("temp", 1)
        for i in range(60):
            await setup.save(f"temp/d{i % 4}/f{i}", b"x" * (i + 1))
        await setup.save("keep/k", b"k" * 5)
    results: list[tuple[int, list[str]]] = []
    failures: list[BaseException] = []

    def purge() -> None:
        async def run() -> None:
            async with local(root, redis_server, namespace, max_size_bytes=10_000) as b:
                seen: list[str] = []
                b.subscribe(lambda event: seen.append(event.key))
                results.append(
                    (await b.purge_expired(now=datetime.now(UTC) + timedelta(days=3)), seen)
                )

        try:
            asyncio.run(run())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=purge) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    assert failures == []
    assert sum(count for count, _ in results) == 60
    events = [key for _, seen in results for key in seen]
    assert sorted(events) == sorted(f"temp/d{i % 4}/f{i}" for i in range(60))
    async with local(root, redis_server, namespace, max_size_bytes=10_000) as after:
        assert await after.list_files() == ["keep/k"]
        assert (await after.get_usage()).used == 5
