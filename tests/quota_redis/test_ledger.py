"""The Redis ledger in one process: two backend instances stand for two processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    StorageQuotaExceededError,
    StorageUnavailableError,
)
from file_storage._quota.redis.wire import RedisTimeout
from file_storage.testing.suite.quota import paused_save
from tests.quota_redis.ledger import (
    gated_pair,
    local,
    lose_first_answer,
    run_out_leases,
    steps_through_run,
)
from tests.quota_redis.server import RedisServer


async def test_a_limit_set_in_one_process_caps_the_others(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace)
    b = local(tmp_path, redis_server, namespace)
    async with a, b:
        a.set_quota("users/u1", 100)
        await a.save("users/u1/a", b"x" * 60)
        with pytest.raises(StorageQuotaExceededError) as info:
            await b.save("users/u1/b", b"x" * 41)
        assert (info.value.used, info.value.limit, info.value.prefix) == (60, 100, "users/u1/")
        await b.save("users/u1/b", b"x" * 40)
        assert (await b.get_usage("users/u1")).used == 100
        assert await a.list_files("users/u1") == ["users/u1/a", "users/u1/b"]


async def test_a_form_upload_signed_after_another_process_removed_the_quota_is_uncapped_by_it(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    signed = {"base_url": "http://testserver/files", "signing_key": "k" * 32}
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000, **signed)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000, **signed)
    async with a, b:
        a.set_quota("u", 100)
        assert (await a.get_usage("u")).limit == 100
        b.set_quota("u", None)
        assert (await b.get_usage("u")).limit is None
        post = await a.get_presigned_post("u/x", max_bytes=500)  # was a bare LookupError
        assert post.url.startswith("http://testserver/files")
        await b.save("other", b"x" * 1000)
        with pytest.raises(StorageQuotaExceededError) as info:  # the quota left still caps
            await a.get_presigned_post("u/x", max_bytes=500)
        assert (info.value.prefix, info.value.limit) == ("", 1000)


async def test_concurrent_writers_of_two_instances_never_overshoot(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        results = await asyncio.gather(
            *((a if i % 2 else b).save(f"k{i % 7}/{i}", b"x" * (30 + i)) for i in range(60)),
            return_exceptions=True,
        )
        assert all(r is None or isinstance(r, str | StorageQuotaExceededError) for r in results)
        stored = await a.get_total_size()
        assert stored <= 1000
        assert (await a.get_usage()).used == stored
        assert (await b.get_usage()).used == stored


async def test_overwrites_deletes_copies_and_moves_keep_usage_exact(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=10_000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=10_000)
    async with a, b:
        await a.save("k", b"x" * 50)
        ops = []
        for i in range(10):
            one, two = (a, b) if i % 2 else (b, a)
            ops += [
                one.save("k", b"y" * (10 * i + 5)),
                two.copy("k", f"c{i % 3}"),
                one.move(f"c{(i + 1) % 3}", f"m{i % 2}"),
                two.delete(f"m{(i + 1) % 2}"),
                one.save(f"s{i % 4}", b"z" * i),
                two.delete_many([f"s{(i + 2) % 4}", "nothing"]),
            ]
        await asyncio.gather(*ops, return_exceptions=True)
        await b.delete_prefix("nope")
        stored = await a.get_total_size()
        assert (await a.get_usage()).used == stored
        assert (await b.get_usage()).used == stored


async def test_a_stream_is_refused_when_it_crosses_the_shared_limit(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 300

    async with a, b:
        await a.save("keep", b"x" * 100)
        with pytest.raises(StorageQuotaExceededError) as info:
            await b.save("big", chunks())
        assert (info.value.used, info.value.limit, info.value.requested) == (100, 1000, 1200)
        assert await a.list_files() == ["keep"]
        assert (await a.get_usage()).used == 100


async def test_redis_unreachable_fails_writes_closed_naming_redis(
    tmp_path: Path, namespace: str
) -> None:
    from tests.quota_redis.server import free_port

    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    async with LocalStorageBackend(
        tmp_path, quota_redis_url=url, quota_redis_namespace=namespace, max_size_bytes=100
    ) as a:
        with pytest.raises(StorageUnavailableError) as info:
            await a.save("k", b"x")
        assert "Redis" in str(info.value)
        assert (info.value.operation, info.value.key) == ("save", "k")
        assert "hunter2" not in repr(info.value) + str(info.value) + repr(a._quotas)
        assert await a.list_files() == []


async def test_redis_unreachable_never_blocks_reads_listings_and_deletes(
    tmp_path: Path, namespace: str
) -> None:
    from tests.quota_redis.server import free_port

    (tmp_path / "k").write_bytes(b"abc")
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with LocalStorageBackend(
        tmp_path, quota_redis_url=url, quota_redis_namespace=namespace, max_size_bytes=100
    ) as a:
        assert await a.load("k") == b"abc"
        assert await a.list_files() == ["k"]
        await a.delete("k")
        assert await a.list_files() == []


async def test_fail_open_lets_writes_through_with_one_warning_per_outage(
    tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.quota_redis.server import free_port

    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    caplog.set_level(logging.WARNING, "file_storage")
    async with LocalStorageBackend(
        tmp_path,
        quota_redis_url=url,
        quota_redis_namespace=namespace,
        max_size_bytes=100,
        quota_fail_open=True,
    ) as a:
        for i in range(3):
            await a.save(f"k{i}", b"x" * 10)
        assert await a.list_files() == ["k0", "k1", "k2"]
    outage = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(outage) == 1
    assert "hunter2" not in caplog.text


async def test_redis_stopped_fails_closed_and_restarted_resumes_exactly(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    root = tmp_path / "storage"
    async with local(root, own_redis, namespace, max_size_bytes=1000) as a:
        a.set_quota("users/u1", 300)
        await a.save("users/u1/a", b"x" * 100)
        await a.save("b", b"x" * 200)
        own_redis.stop()
        with pytest.raises(StorageUnavailableError, match="Redis") as info:
            await a.save("users/u1/c", b"x" * 10)
        assert (info.value.operation, info.value.key) == ("save", "users/u1/c")
        await a.delete("b")  # deletes never wait for Redis
        assert await a.load("users/u1/a") == b"x" * 100
        own_redis.start()  # the same port, and no data: persistence is off
        # limits come back from the process that set them, usage from one listing
        with pytest.raises(StorageQuotaExceededError):
            await a.save("users/u1/c", b"x" * 201)
        await a.save("users/u1/c", b"x" * 200)
        assert (await a.get_usage("users/u1")).used == 300
        assert (await a.get_usage()).used == await a.get_total_size() == 300


async def test_a_delete_missed_while_redis_was_away_is_listed_again_once_back(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    from pydantic import SecretStr

    from tests.quota_redis.server import free_port

    async with local(tmp_path / "s", own_redis, namespace, max_size_bytes=1000) as a:
        await a.save("a", b"x" * 100)
        await a.save("b", b"x" * 200)
        # Redis out of reach of this process only, its data kept (a network split)
        ledger = a._quotas._client  # type: ignore[attr-defined]
        url = ledger._url
        await a.aclose()
        ledger._url = SecretStr(f"redis://127.0.0.1:{free_port()}/0")
        await a.delete("b")
        await a.aclose()
        ledger._url = url
        assert await a.list_files() == ["a"]
        assert (await a.get_usage()).used == await a.get_total_size() == 100


async def test_two_processes_writing_one_key_take_turns_so_usage_stays_exact(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a, b = gated_pair(tmp_path, redis_server, namespace, "k")
    async with a, b:
        first = asyncio.create_task(a.save("k", b"x" * 50))
        await a.landed.wait()
        second = asyncio.create_task(b.save("k", b"y" * 10))
        # b's write waits for a's key lock in Redis (without it, it lands now and
        # commits first, and a's late commit leaves the ledger at 50 for 10 stored)
        await asyncio.wait({second}, timeout=1.0)
        a.gate.set()
        await asyncio.gather(first, second)
        assert await a.load("k") == b"y" * 10
        assert (await b.get_usage()).used == await b.get_total_size() == 10


async def test_a_commit_after_its_lease_ran_out_checks_the_quota_again(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a, b = gated_pair(tmp_path, redis_server, namespace, "n", before=True)
    async with a, b:
        first = asyncio.create_task(a.save("n", b"x" * 600))
        await a.landed.wait()
        await run_out_leases(redis_server, namespace)  # Redis frees its bytes
        await b.save("other", b"y" * 500)  # fits now, and takes the space
        a.gate.set()
        with pytest.raises(StorageQuotaExceededError) as info:
            await first
        assert (info.value.used, info.value.limit, info.value.key) == (500, 1000, "n")
        assert await b.list_files() == ["other"]
        assert (await b.get_usage()).used == await b.get_total_size() == 500


async def test_a_write_that_landed_before_its_lease_ran_out_is_counted_by_the_others(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # the writer stalled past its lease after its object landed: whether it landed is not
    # known to Redis, so its quota is listed again, and the others see the bytes stored
    a, b = gated_pair(tmp_path, redis_server, namespace, "n")
    async with a, b:
        first = asyncio.create_task(a.save("n", b"x" * 600))
        await a.landed.wait()
        await run_out_leases(redis_server, namespace)
        with pytest.raises(StorageQuotaExceededError) as info:
            await b.save("other", b"y" * 500)  # the 600 bytes of n are stored
        assert (info.value.used, info.value.limit) == (600, 1000)
        a.gate.set()
        await first  # its late commit finds n counted already: it fits
        assert await b.list_files() == ["n"]
        assert (await b.get_usage()).used == await b.get_total_size() == 600


async def test_no_credential_of_the_redis_url_shows_in_logs_reprs_or_errors(
    tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    from file_storage import StorageSettings, create_storage_backend

    secret = "s3cr3t-redis-password"
    server = RedisServer(tmp_path / "redis-auth", password=secret)
    server.workdir.mkdir()
    server.start()
    caplog.set_level(logging.DEBUG)
    try:
        settings = StorageSettings(
            local={"path": str(tmp_path / "s"), "max_size_gb": 0.000001},
            quota={"redis_url": server.url, "redis_namespace": namespace},
        )
        storage = create_storage_backend(settings)
        async with storage:
            await storage.save("a", b"x" * 600)  # authenticated: the ledger works
            with pytest.raises(StorageQuotaExceededError) as refused:
                await storage.save("b", b"x" * 600)
            shown = [repr(settings), repr(storage), repr(storage._quotas), str(refused.value)]
        wrong = server.url.replace(secret, "not-the-password-" + secret[::-1])
        async with LocalStorageBackend(
            tmp_path / "s", quota_redis_url=wrong, quota_redis_namespace=namespace
        ) as other:
            with pytest.raises(StorageUnavailableError) as denied:
                await other.save("c", b"x")
            shown += [str(denied.value), repr(denied.value)]
    finally:
        server.stop()
    for text in [*shown, caplog.text]:
        assert secret not in text
        assert secret[::-1] not in text


async def test_a_write_that_outlives_its_lease_keeps_it_renewed(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_server.url)
    leases = "{" + namespace + "}:leases"
    lock = "{" + namespace + "}:lk:big"

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 100
        # hold the write open until the renewal timer (a third of the 1 s lease, the
        # shortest allowed) has pushed the reservation's expiry on: bounded, each wait
        # one timer tick
        (_, first), *_ = await client.zrange(leases, 0, 0, withscores=True)
        later = first
        for _ in range(200):
            await asyncio.sleep(0.01)
            scores = await client.zrange(leases, 0, 0, withscores=True)
            if scores and scores[0][1] > first + 150:
                later = scores[0][1]
                break
        assert later > first + 150, "the lease was not renewed"
        assert await client.exists(lock)  # the key's lock is renewed with it
        yield b"x" * 100

    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000, quota_lease_seconds=1)
    async with a:
        await a.save("big", body())
        assert (await a.get_usage()).used == await a.get_total_size() == 200
        assert not await client.exists(lock)
        assert await client.zcard(leases) == 0
    await client.aclose()


async def test_a_reserve_whose_answer_is_lost_leaves_no_bytes_or_lock_behind(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis runs the reserve step but its answer never arrives (a timeout under load):
    # the write fails closed, and neither its bytes nor the key's lock stay held
    from file_storage._quota.redis import scripts as lua

    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    async with a, b:
        await a.save("seed", b"x" * 10)  # seeded before the fault
        lost = lose_first_answer(monkeypatch, lua.RESERVE, RedisTimeout("TimeoutError"))
        with pytest.raises(StorageUnavailableError):
            await a.save("k", b"x" * 90)
        assert lost == [1]
        assert (await b.get_usage()).used == 10  # nothing of the lost step is held
        await asyncio.wait_for(b.save("k", b"x" * 90), 10)  # the key is not locked
        assert (await b.get_usage()).used == 100


async def test_a_key_lock_whose_answer_is_lost_leaves_the_key_free(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis takes a delete's key lock but the connection drops before its answer (a
    # proxy or failover cutting it): the delete goes on without Redis, and the lock it
    # may hold there is given back, not left to block every writer of the key for a lease
    from file_storage._quota.redis import scripts as lua
    from file_storage._quota.redis.wire import RedisUnavailable

    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    async with a, b:
        await a.save("k", b"x" * 10)
        lost = lose_first_answer(monkeypatch, lua.LOCK, RedisUnavailable("ConnectionResetError"))
        await a.delete("k")
        assert lost == [1]
        await asyncio.wait_for(b.save("k", b"y" * 20), 10)  # the key is not locked
        assert (await b.get_usage()).used == await b.get_total_size() == 20


async def test_a_key_lock_whose_call_timed_out_is_given_back_once_redis_answers(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis takes a delete's key lock, then stalls past the timeout before answering: it is
    # not asked again while silent, and the lock goes with the process's next step
    from file_storage._quota.redis import scripts as lua

    a = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=100)
    async with a, b:
        await a.save("k", b"x" * 10)
        error = RedisTimeout("TimeoutError")
        lost = lose_first_answer(monkeypatch, lua.LOCK, error, timed_out=True)
        await a.delete("k")
        assert lost == [1]
        a._quotas._client._quiet_until = 0.0  # type: ignore[attr-defined]  # (time passed)
        await a.get_usage()  # a's next step, answered
        await asyncio.wait_for(b.save("k", b"y" * 20), 10)  # the key is not locked
        assert (await b.get_usage()).used == await b.get_total_size() == 20


async def test_a_commit_whose_answer_is_lost_is_listed_again_after_the_process_ends(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the write landed but its commit never reached Redis (a timeout): the process that
    # saw it tells Redis when it closes, so the next one lists the quota instead of
    # trusting a figure that misses the object
    from file_storage._quota.redis import scripts as lua
    from file_storage._quota.redis.wire import Client

    run = Client.run
    dropped: list[int] = []

    async def drop_commit(self: Client, script: object, args: list[object]) -> object:
        if script is lua.COMMIT and not dropped:
            dropped.append(1)
            raise RedisTimeout("TimeoutError")
        return await run(self, script, args)  # type: ignore[arg-type]

    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000, quota_lease_seconds=1)
    async with a:
        await a.save("seed", b"x" * 10)
        monkeypatch.setattr(Client, "run", drop_commit)
        steps_through_run(monkeypatch)
        await a.save("k", b"x" * 90)  # landed: the ledger only missed it
        assert dropped == [1]
    monkeypatch.setattr(Client, "run", run)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000, quota_lease_seconds=1)
    async with b:
        # the lost commit's reservation runs out with its lease (Redis's clock; each usage
        # call frees what ran out): bounded poll until nothing is reserved
        import redis

        client = redis.Redis.from_url(redis_server.url)
        try:
            for _ in range(200):
                used = (await b.get_usage()).used
                if client.zcard("{" + namespace + "}:leases") == 0:
                    break
                await asyncio.sleep(0.05)  # paces the poll of Redis's state
            assert client.zcard("{" + namespace + "}:leases") == 0
        finally:
            client.close()
        assert await b.get_total_size() == 100
        assert used == 100  # listed again, not 10 (the figure that missed the commit)


@pytest.mark.parametrize("ran", [False, True], ids=["never-ran", "answer-lost"])
async def test_a_lost_commit_counts_its_object_once_from_the_next_step(
    tmp_path: Path,
    redis_server: RedisServer,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    ran: bool,
) -> None:
    # the commit never reached Redis, or ran and its answer was lost (a timeout, a cut
    # connection; Redis answers again at once): the object stays stored, and every
    # process sees it counted once from this process's next ledger step, not twice (the
    # listing, and its reservation) until the lease runs out a minute later
    from file_storage._quota.redis import scripts as lua

    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        await a.save("seed", b"x" * 10)
        lost = lose_first_answer(monkeypatch, lua.COMMIT, RedisTimeout("TimeoutError"), ran=ran)
        steps_through_run(monkeypatch)
        await a.save("k", b"x" * 90)  # landed: the ledger only missed its commit
        assert lost == [1]
        await a.save("other", b"z" * 5)  # the next step
        assert (await b.get_usage()).used == await b.get_total_size() == 105
        await asyncio.wait_for(b.save("k", b"w" * 20), 10)  # the key is not locked
        assert (await b.get_usage()).used == await b.get_total_size() == 35


@pytest.mark.parametrize("who", ["same", "other"])
async def test_redis_restarted_without_its_data_during_a_write_resumes_exactly(
    tmp_path: Path, own_redis: RedisServer, namespace: str, who: str
) -> None:
    root = tmp_path / "storage"
    a = local(root, own_redis, namespace, max_size_bytes=1000)
    b = local(root, own_redis, namespace)
    async with a, b:
        a.set_quota("users/u1/", 300)
        await a.save("users/u1/a", b"x" * 100)
        write, gate = await paused_save(a, "users/u1/k", b"k" * 50, b"k" * 50)
        own_redis.stop()
        own_redis.start()  # the same port, and no data: persistence is off
        for _ in range(100):  # the loop reads the old connection's end, as a live app does
            await asyncio.sleep(0)
        writer = a if who == "same" else b
        await writer.save("users/u1/b", b"y" * 20)  # limits pushed again, usage listed
        gate.set()
        await write
        for backend in (a, b):
            assert (await backend.get_usage("users/u1/")).used == 220
            assert (await backend.get_usage()).used == await backend.get_total_size() == 220
        with pytest.raises(StorageQuotaExceededError):
            await b.save("users/u1/c", b"z" * 81)
