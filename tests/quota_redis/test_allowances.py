"""Allowances: on local disk each process draws its saves from a share of the quota it
holds in Redis and sends what it spent in batches (see file_storage._quota.redis.allowance).

What a user sees must not change: no overshoot, exact usage once each process has sent
what it spent (its own ``get_usage`` sends first), a listing that counts every write once
however it interleaves with the draws, and a process that dies holding an allowance
neither loses bytes for good nor leaves its unsent writes uncounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, StorageQuotaExceededError, StorageUnavailableError
from file_storage._quota.redis import allowance
from file_storage._quota.redis.allowance_lua import ALLOW
from file_storage._quota.redis.wire import Client, Script
from tests.quota_redis.drawing import drawing, settled
from tests.quota_redis.ledger import (
    kill_book,
    pause_listing,
    run_out_leases,
    steps_through_run,
)
from tests.quota_redis.server import RedisServer


def count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many ledger steps reach Redis: ALLOW calls and the others."""
    counts = {"allow": 0, "other": 0}
    run = Client.run

    async def counted(self: Client, script: Script, args: list[object]) -> object:
        counts["allow" if script is ALLOW else "other"] += 1
        return await run(self, script, args)

    monkeypatch.setattr(Client, "run", counted)
    return counts


async def test_saves_draw_on_the_allowance_without_asking_redis_each_time(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with drawing(tmp_path, redis_server, namespace, max_size_bytes=10**9) as a:
        counts = count_calls(monkeypatch)
        await a.save("warm", b"w")  # (registers, learns the quota: listed once)
        for i in range(2000):
            await a.save(f"k{i}", b"x" * 4096)
        # the first saves go through Redis while the quota is listed and the process
        # learns it is (two calls each); then a call every few tens of milliseconds
        assert counts["other"] + counts["allow"] < 400  # not two per save (4,000)
        assert (await a.get_usage()).used == await a.get_total_size() == 1 + 2000 * 4096


async def test_overwrites_deletes_copies_and_moves_of_two_processes_stay_exact(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**6)
    b = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**6)
    async with a, b:
        await a.save("k", b"x" * 50)
        for round_ in range(3):
            ops = []
            for i in range(12):
                one, two = (a, b) if i % 2 else (b, a)
                ops += [
                    one.save("k", b"y" * (10 * i + 5 + round_)),
                    two.copy("k", f"c{i % 3}"),
                    one.move(f"c{(i + 1) % 3}", f"m{i % 2}"),
                    two.delete(f"m{(i + 1) % 2}"),
                    one.save(f"s{i % 4}", b"z" * i),
                    two.delete_many([f"s{(i + 2) % 4}", "nothing"]),
                ]
            await asyncio.gather(*ops, return_exceptions=True)
            await settled(a, b)
            stored = await a.get_total_size()
            assert (await a.get_usage()).used == stored
            assert (await b.get_usage()).used == stored


async def test_two_processes_never_overshoot_and_fill_the_quota(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    limit = 2 * 1024 * 1024  # allowances are handed out here (a quarter of what is free)
    a = drawing(tmp_path, redis_server, namespace)
    b = drawing(tmp_path, redis_server, namespace)
    async with a, b:
        a.set_quota("u", limit)
        b.set_quota("u", limit)
        refused = 0

        async def writer(backend: LocalStorageBackend, name: str) -> None:
            nonlocal refused
            for i in range(300):
                try:
                    await backend.save(f"u/{name}{i}", b"x" * 10_000)
                except StorageQuotaExceededError:
                    refused += 1

        await asyncio.gather(*(writer(a if w % 2 else b, f"w{w}-") for w in range(8)))
        await settled(a, b)
        stored = await a.get_total_size("u")
        assert refused > 0
        assert stored <= limit
        # what one process held ahead was recalled for the other's writes: the quota is
        # filled, not left with room another process's allowance keeps
        assert stored > limit - 10_000
        assert (await b.get_usage("u")).used == stored


async def test_a_listing_waits_for_what_the_others_spent_and_counts_every_write_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**8)
    b = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**8)
    async with a, b:
        await a.save("first", b"f")
        await b.save("first", b"ff")
        listed, go = pause_listing(a)
        stop = asyncio.Event()

        async def keep_writing() -> None:
            i = 0
            while not stop.is_set() and i < 2000:
                await b.save(f"w/{i % 50}", b"y" * (i % 97))
                if i % 7 == 0:
                    await b.delete(f"w/{(i * 3) % 50}")
                i += 1

        writes = asyncio.create_task(keep_writing())
        refresh = asyncio.create_task(a.refresh_usage())
        await asyncio.wait_for(listed.wait(), 10)
        await asyncio.sleep(0)  # (b writes on while the listing is held: through Redis)
        go.set()
        await refresh
        stop.set()
        await writes
        await settled(a, b)
        assert (await a.get_usage()).used == await a.get_total_size()


async def test_a_process_that_stops_calling_loses_its_allowance_and_its_writes_are_listed(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**6)
    b = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**6)
    async with b:
        await a.save("warm", b"w" * 10)
        # a's book sends nothing more (a process killed: its task never runs again)
        kill_book(a)
        for i in range(5):
            await a.save(f"dead/{i}", b"d" * 1000)  # drawn, never sent
        await run_out_leases(redis_server, namespace)  # its lease ran out
        # the allowance it held is free again, and its quotas are listed again: its
        # writes are counted
        await b.save("other", b"o" * 100)
        assert (await b.get_usage()).used == await b.get_total_size() == 10 + 5000 + 100


async def test_a_write_past_the_largest_draw_reserves_in_redis(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 3 * allowance.LARGEST
    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=limit)
    b = drawing(tmp_path, redis_server, namespace, max_size_bytes=limit)
    async with a, b:
        await a.save("small", b"s")
        steps_through_run(monkeypatch)
        counts = count_calls(monkeypatch)
        await a.save("big", b"b" * (allowance.LARGEST + 1))
        assert counts["other"] >= 2  # its reserve and its commit
        with pytest.raises(StorageQuotaExceededError):
            await b.save("big2", b"b" * (2 * allowance.LARGEST))
        await settled(a, b)
        assert (await b.get_usage()).used == await b.get_total_size() == allowance.LARGEST + 2


async def test_redis_restarted_without_its_data_resumes_exactly(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    a = drawing(tmp_path, own_redis, namespace, max_size_bytes=10**6)
    async with a:
        for i in range(10):
            await a.save(f"k{i}", b"x" * 100)
        own_redis.stop()
        own_redis.start()  # (persistence off: it lost everything)
        for i in range(10, 20):
            try:
                await a.save(f"k{i}", b"x" * 100)
            except StorageUnavailableError:  # a write may fail while it reconnects
                await a.delete(f"k{i}")
        await settled(a)
        assert (await a.get_usage()).used == await a.get_total_size()


async def test_event_loops_of_several_threads_draw_on_one_book_and_stay_exact(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # one backend shared by threads each running a loop of their own (a threaded worker):
    # the process's allowances and its sending task serve them all
    import threading

    storage = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**7)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        async def writes() -> None:
            for i in range(60):
                await storage.save(f"t{n}/k{i % 20}", b"x" * (n * 7 + i))
                if i % 9 == 0:
                    await storage.delete(f"t{n}/k{(i * 3) % 20}")

        try:
            asyncio.run(writes())
        except BaseException as exc:
            errors.append(exc)

    async with storage:
        await storage.save("first", b"f")
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [thread.join() for thread in threads])
        assert errors == []
        assert (await storage.get_usage()).used == await storage.get_total_size()


async def test_a_process_gives_back_the_shares_of_quotas_it_no_longer_writes_under(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a service with a quota per user: each call asks only for the users written lately
    async with (
        drawing(tmp_path, redis_server, namespace) as a,
        drawing(tmp_path, redis_server, namespace) as b,
    ):
        for i in range(20):
            a.set_quota(f"u{i}", 2**20)
        book = a._quotas._book  # type: ignore[attr-defined]
        for i in range(20):
            await a.save(f"u{i}/w", b"w" * 5)  # (its first use lists it)
        for _ in range(50):
            await book.call(describe=[f"u{i}/" for i in range(20)])
            if book.acked == book.agen and len(book.ready) >= 20:
                break
        for i in range(20):
            await a.save(f"u{i}/x", b"x" * 5)
        assert sum(p.startswith("u") for p in book.held) == 20
        # nothing drawn there for IDLE seconds (time itself not waited for)
        monkeypatch.setattr(allowance, "IDLE", -1.0)
        await book.call()
        await book.call()
        assert not any(p.startswith("u") for p in book.held)
        # b is not kept from any of them by what a held, and the counts are exact
        for i in range(20):
            assert (await b.get_usage(f"u{i}")).used == 10
            await b.save(f"u{i}/y", b"y" * (2**20 - 10 - (i == 3)))
        monkeypatch.setattr(allowance, "IDLE", 2.0)
        await a.save("u3/z", b"z")  # (drawn again: u3 is asked for anew)
        with pytest.raises(StorageQuotaExceededError):
            await a.save("u4/z", b"z")
        await settled(a, b)
        assert (await a.get_usage("u3")).used == 2**20


async def test_a_folder_refusing_byte_range_locks_keeps_the_quota_exact_through_redis(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import errno

    from file_storage.backends.local import _quota_locks

    def refused(fd: int, kind: int, slot: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")  # (as some network file systems)

    monkeypatch.setattr(_quota_locks, "_setlk", refused)
    async with drawing(tmp_path, redis_server, namespace, max_size_bytes=100) as a:
        for i in range(5):
            await a.save(f"k{i}", b"x" * 10)
        await a.copy("k0", "c")
        await a.delete("k1")
        with pytest.raises(StorageQuotaExceededError):
            await a.save("big", b"y" * 51)
        assert (await a.get_usage()).used == await a.get_total_size() == 50
    warnings = [r for r in caplog.records if "refuses byte-range locks" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
async def test_a_closed_backend_keeps_none_of_its_lock_files_open(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    def lock_files() -> int:  # (this root's: other tests' backends may hold theirs)
        found = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                found += os.readlink(f"/proc/self/fd/{fd}").startswith(f"{root}/.file_storage")
        return found

    root = tmp_path.resolve()

    a = drawing(tmp_path, redis_server, namespace, max_size_bytes=10**8)
    async with a:
        for i in range(50):
            await a.save(f"k{i}", b"x")
            await a.copy(f"k{i}", f"c{i}")  # (its keys locked on disk)
        assert lock_files() > 1
    assert lock_files() == 0
    async with a:  # used again: they are opened again
        for i in range(50):
            await a.delete(f"c{i}")
        assert (await a.get_usage()).used == await a.get_total_size() == 50
    assert lock_files() == 0
