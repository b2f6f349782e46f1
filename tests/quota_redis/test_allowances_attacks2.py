"""Attacks on the allowances (local disk), second round: a process frozen past its
lease, Redis lost, forks, slow saves, mixed processes. Whatever happens, what is stored
never passes a limit and, once every process has sent, usage equals what is stored."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, StorageQuotaExceededError
from tests.quota_redis.drawing import HeldSave, drawing_now, settled
from tests.quota_redis.ledger import local
from tests.quota_redis.server import RedisServer


def freeze_book(backend: LocalStorageBackend) -> asyncio.Event:
    """``backend``'s allowance calls wait until the event returned is set (its process
    frozen, as by ``SIGSTOP``: nothing sent, nothing renewed)."""
    book = backend._quotas._book  # type: ignore[attr-defined]
    thaw = asyncio.Event()
    call = book.call

    async def frozen(**kwargs: object) -> object:
        await thaw.wait()
        return await call(**kwargs)

    book.call = frozen
    return thaw


async def run_out_members(server: RedisServer, namespace: str) -> None:
    """Every member's lease (and every reservation's) runs out now: a frozen process."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(server.url)
    for name in ("leases", "mem"):
        zset = "{" + namespace + "}:" + name
        for member in await client.zrange(zset, 0, -1):
            await client.zadd(zset, {member: 0})
    await client.aclose()


async def test_a_save_drawn_before_its_process_froze_past_its_lease_is_not_past_the_limit(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    limit = 1_000_000
    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": namespace}
    a = HeldSave(tmp_path, max_size_bytes=limit, **options)  # type: ignore[arg-type]
    a.gated = "late"
    b = local(tmp_path, redis_server, namespace, max_size_bytes=limit)
    async with a, b:
        await a.save("warm", b"w")
        await drawing_now(a)
        saving = asyncio.create_task(a.save("late", b"l" * 200_000))  # drawn, held
        await asyncio.wait_for(a.drawn.wait(), 10)
        thaw = freeze_book(a)
        try:
            await run_out_members(redis_server, namespace)  # a froze past its lease
            book = a._quotas._book  # type: ignore[attr-defined]
            book.deadline = 0.0  # (and its clock says so: it draws no more)
            # b fills the quota meanwhile (a's share is free again once its lease ran out)
            for i in range(20):
                try:
                    await b.save(f"b{i}", b"b" * 100_000)
                except StorageQuotaExceededError:
                    break
            assert await b.get_total_size() <= limit
            a.gate.set()  # a thaws: its save lands
            with pytest.raises(StorageQuotaExceededError):
                await asyncio.wait_for(saving, 10)
        finally:
            a.gate.set()
            thaw.set()
        assert await b.get_total_size() <= limit
        assert not await a.exists("late")
        await settled(a, b)
        assert (await b.get_usage()).used == await b.get_total_size()


async def test_a_save_drawn_before_redis_lost_its_data_is_not_past_the_limit(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    limit = 1_000_000
    options = {"quota_redis_url": own_redis.url, "quota_redis_namespace": namespace}
    a = HeldSave(tmp_path, max_size_bytes=limit, **options)  # type: ignore[arg-type]
    a.gated = "late"
    b = local(tmp_path, own_redis, namespace, max_size_bytes=limit)
    async with a, b:
        await a.save("warm", b"w")
        await drawing_now(a)
        saving = asyncio.create_task(a.save("late", b"l" * 200_000))  # drawn, held
        await asyncio.wait_for(a.drawn.wait(), 10)
        own_redis.stop()
        own_redis.start()  # (persistence off: it lost everything, a's share too)
        try:
            # b writes first: it pushes the limit again, lists, and fills the quota
            for i in range(20):
                try:
                    await b.save(f"b{i}", b"b" * 100_000)
                except StorageQuotaExceededError:
                    break
            book = a._quotas._book  # type: ignore[attr-defined]
            await book.call()  # (a hears of it: its member is replaced)
        finally:
            a.gate.set()  # a's save lands
        with pytest.raises(StorageQuotaExceededError):
            await asyncio.wait_for(saving, 10)
        assert await b.get_total_size() <= limit
        await settled(a, b)
        assert (await b.get_usage()).used == await b.get_total_size()


def test_a_forked_child_draws_as_a_member_of_its_own(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    from file_storage._quota.redis.lease import new_id
    from tests.forks import forked, in_child

    a = local(tmp_path, own_redis, namespace, allowances=True, max_size_bytes=10**6)

    async def warm() -> None:
        await a.save("warm", b"w")
        await drawing_now(a)

    asyncio.run(warm())
    book = a._quotas._book  # type: ignore[attr-defined]

    def child() -> tuple[str, str]:
        return book.member, new_id()

    members = forked(in_child(child))()
    # the parent's next ids (its next member, once this one leaves: a loop that ends)
    mine = {book.member, *(new_id() for _ in range(3))}
    assert not set(members) & mine
    asyncio.run(a.aclose())


async def test_a_process_that_joins_while_a_barrier_is_up_does_not_hold_the_listing_back(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    from file_storage._quota.redis import seeding
    from file_storage._quota.redis.wire import Script

    a = local(tmp_path, redis_server, namespace, allowances=True)
    b = local(tmp_path, redis_server, namespace, allowances=True)
    lister = local(tmp_path, redis_server, namespace, allowances=True)
    async with a, b, lister:
        for backend in (a, b, lister):
            backend.set_quota("u", 10**8)
        await b.save("u/warm", b"w")
        await drawing_now(b, "u/")
        thaw = freeze_book(b)  # b is slow to acknowledge: the barrier stays up meanwhile
        barrier = asyncio.Event()
        client = lister._quotas._client  # type: ignore[attr-defined]
        run = client.run

        async def seen(script: Script, args: list[object]) -> object:
            answer = await run(script, args)
            if script is seeding.SEED_BEGIN and answer == "barrier":
                barrier.set()
            return answer

        client.run = seen
        stop = asyncio.Event()

        async def writing() -> None:  # a joins now, and writes on (outside the quota)
            i = 0
            while not stop.is_set():
                await a.save(f"free/{i % 10}", b"a" * 10)
                await asyncio.sleep(0.01)  # (a steady writer, not a synchronisation)
                i += 1

        try:
            refresh = asyncio.create_task(lister.refresh_usage("u"))
            await asyncio.wait_for(barrier.wait(), 10)
            writer = asyncio.create_task(writing())
            book = a._quotas._book  # type: ignore[attr-defined]
            for _ in range(100):  # (until a is a member: its first call answered)
                await asyncio.sleep(0.01)
                if not book.fresh:
                    break
            thaw.set()  # b acknowledges: only a is left, which drew nothing under u/
            await asyncio.wait_for(refresh, 5)  # (a's lease is 10 s, and a renews it)
        finally:
            thaw.set()
            stop.set()
        await writer
        assert (await lister.get_usage("u")).used == await lister.get_total_size("u") == 1


# A process holding a key's disk lock (a save under way) forks a child, then is killed:
# the child must not keep the lock's open file description alive (every save of the key,
# in every process, would then wait for the child to end)
_FORKS_HOLDING = """
import asyncio, os, sys
from file_storage import LocalStorageBackend

class Held(LocalStorageBackend):
    async def _save(self, key, body, content_type, metadata):
        if key == "k":
            pid = os.fork()
            if pid == 0:  # the child: alive until the test ends it, the store untouched
                os.close(1)
                os.read(0, 1)  # (the test's pipe)
                os._exit(0)
            print(pid, flush=True)
            await asyncio.Event().wait()  # (killed here, its disk lock on k held)
        await super()._save(key, body, content_type, metadata)

async def main():
    root, url, ns = sys.argv[1:4]
    async with Held(root, quota_redis_url=url, quota_redis_namespace=ns) as backend:
        backend.set_quota("u", 10**8)
        await backend.save("k", b"k")

asyncio.run(main())
"""


def _forking(root: Path, server: RedisServer, namespace: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _FORKS_HOLDING, str(root), server.url, namespace],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},  # (this tree's)
    )


async def test_a_killed_process_forked_child_does_not_keep_its_disk_locks(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    parent = _forking(tmp_path, redis_server, namespace)
    assert parent.stdout is not None
    assert parent.stdin is not None
    child = 0
    try:
        child = int(await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 20))
        parent.send_signal(signal.SIGKILL)  # killed mid-save, its child alive
        await asyncio.to_thread(parent.wait)
        async with local(tmp_path, redis_server, namespace, allowances=True) as b:
            await asyncio.wait_for(b.save("k", b"kk"), 10)
            assert await b.load("k") == b"kk"
    finally:
        parent.kill()
        await asyncio.to_thread(parent.wait)
        parent.stdin.close()  # (the child ends)
        parent.stdout.close()
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


async def test_a_draw_whose_member_was_replaced_meanwhile_goes_through_redis(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    from file_storage._quota.redis.allowance_lua import ALLOW
    from file_storage._quota.redis.wire import Script

    a = local(tmp_path, redis_server, namespace, allowances=True, max_size_bytes=100_000)
    async with a:
        await a.save("warm", b"w")
        await drawing_now(a)
        book = a._quotas._book  # type: ignore[attr-defined]
        assert book.held.get("", 0) < 50_000  # (a quarter of what is free at most)
        await run_out_members(redis_server, namespace)  # a froze past its lease, unaware
        client = a._quotas._client  # type: ignore[attr-defined]
        run = client.run
        go, asked = asyncio.Event(), asyncio.Event()

        async def held(script: Script, args: list[object]) -> object:
            if script is ALLOW and not go.is_set():
                await go.wait()  # (its sending task's call, in flight)
            return await run(script, args)

        client.run = held
        draw = book.draw

        def drawing(prefixes: list[str], needs: dict[str, int]) -> dict[str, int]:
            short: dict[str, int] = draw(prefixes, needs)
            if short:
                asked.set()  # the save asks Redis next (after the call in flight)
            return short

        book.draw = drawing
        sending = asyncio.create_task(book.call())  # answered: its lease ran out
        saving = asyncio.create_task(a.save("x", b"x" * 50_000))
        await asyncio.wait_for(asked.wait(), 10)
        go.set()
        await sending
        await asyncio.wait_for(saving, 10)  # fits: stored through Redis, not refused
        assert (await a.get_usage()).used == await a.get_total_size() == 50_001


async def test_a_draw_under_a_quota_removed_meanwhile_goes_through_redis(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, allowances=True)
    async with a:
        a.set_quota("u", 100_000)
        await a.save("u/warm", b"w")
        await drawing_now(a, "u/")
        book = a._quotas._book  # type: ignore[attr-defined]
        assert book.held.get("u/", 0) < 50_000  # (a quarter of what is free at most)
        draw = book.draw

        def drawing(prefixes: list[str], needs: dict[str, int]) -> dict[str, int]:
            short: dict[str, int] = draw(prefixes, needs)
            if short:  # the quota is removed just now (another task): pushed with its ask
                a.set_quota("u", None)
            return short

        book.draw = drawing
        await asyncio.wait_for(a.save("u/x", b"x" * 60_000), 10)  # no quota now: stored
        assert await a.load("u/x") == b"x" * 60_000


async def test_redis_restarted_while_a_listing_waits_at_its_barrier(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    from file_storage._quota.redis import seeding
    from file_storage._quota.redis.wire import Script

    a = local(tmp_path, own_redis, namespace, allowances=True, max_size_bytes=100_000)
    b = local(tmp_path, own_redis, namespace, allowances=True, max_size_bytes=100_000)
    async with a, b:
        await a.save("warm", b"w")
        await drawing_now(a)
        await a.save("sent", b"s" * 1000)  # (its size still to send)
        thaw = freeze_book(a)  # a acknowledges late: b's listing waits at its barrier
        barrier = asyncio.Event()
        client = b._quotas._client  # type: ignore[attr-defined]
        run = client.run

        async def seen(script: Script, args: list[object]) -> object:
            answer = await run(script, args)
            if script is seeding.SEED_BEGIN and answer == "barrier":
                barrier.set()
            return answer

        client.run = seen
        refresh = asyncio.create_task(b.refresh_usage())
        try:
            await asyncio.wait_for(barrier.wait(), 10)
            own_redis.stop()
            own_redis.start()  # (persistence off: it lost everything)
        finally:
            thaw.set()
        await asyncio.wait_for(refresh, 20)
        for i in range(5):  # both write on, a's first write learning of the loss
            await a.save(f"a{i}", b"a" * 1000)
            await b.save(f"b{i}", b"b" * 1000)
        refused = False
        for i in range(100):  # the limit holds: a fills it and is refused
            try:
                await a.save(f"z{i}", b"z" * 5000)
            except StorageQuotaExceededError:
                refused = True
                break
        assert refused
        assert await b.get_total_size() <= 100_000
        await settled(a, b)
        assert (await b.get_usage()).used == await b.get_total_size()
