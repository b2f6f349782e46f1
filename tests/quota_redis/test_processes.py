"""Quotas held by Redis across real processes: 4 processes x 25 concurrent writers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend, S3StorageBackend, StorageBackend
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.quota_redis.server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
WRITERS = 25
DEADLINE = 120.0  # seconds for a worker: far above what it needs, a hang fails the test


def spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "AWS_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.quota_redis.worker", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def running(spec: dict[str, Any], ready: str) -> Iterator[subprocess.Popen[str]]:
    """A worker that printed ``ready``; killed and reaped on the way out whatever happens."""
    proc = spawn(spec)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == ready
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def run_all(specs: list[dict[str, Any]]) -> list[dict[str, int]]:
    procs = [spawn(spec) for spec in specs]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if request.param == "local":
        yield {"type": "local", "root": str(tmp_path / "storage")}
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        bucket = request.getfixturevalue("s3_bucket")
        yield {
            "type": "s3",
            "endpoint": endpoint,
            "bucket": bucket,
            "key_id": FAKE_KEY_ID,
            "secret": FAKE_SECRET,
        }


def observer(store: dict[str, Any], server: RedisServer, namespace: str) -> StorageBackend:
    """A backend of the test process on the same store and ledger."""
    shared = {"quota_redis_url": server.url, "quota_redis_namespace": namespace}
    if store["type"] == "local":
        return LocalStorageBackend(store["root"], **shared)  # type: ignore[arg-type]
    return S3StorageBackend(
        store["bucket"],
        prefix="storage",
        endpoint_url=store["endpoint"],
        region="us-east-1",
        access_key_id=FAKE_KEY_ID,
        secret_access_key=FAKE_SECRET,
        addressing_style="path",
        **shared,  # type: ignore[arg-type]
    )


def specs(
    store: dict[str, Any], server: RedisServer, namespace: str, **extra: Any
) -> list[dict[str, Any]]:
    base = {"backend": store, "redis": server.url, "namespace": namespace, "writers": WRITERS}
    return [{**base, **extra, "id": i} for i in range(PROCESSES)]


async def test_writers_of_four_processes_never_overshoot_one_prefix(
    store: dict[str, Any], redis_server: RedisServer, namespace: str
) -> None:
    limit = 60_000  # about 60 of the 400 writes of ~1 kB fit
    results = run_all(
        specs(
            store,
            redis_server,
            namespace,
            mode="fill",
            writes=4,
            prefixes=["shared/"],
            quotas={"shared": limit},
        )
    )
    assert sum(r["refused"] for r in results) > 0
    async with observer(store, redis_server, namespace) as storage:
        stored = await storage.get_total_size("shared")
        assert 0 < stored <= limit
        assert (await storage.get_usage("shared")).used == stored
        assert sum(r["stored"] for r in results) == len(await storage.list_files("shared"))


async def test_writers_of_four_processes_never_overshoot_per_user_prefixes(
    store: dict[str, Any], redis_server: RedisServer, namespace: str
) -> None:
    users = [f"users/u{i}" for i in range(4)]
    quotas = {user: 15_000 for user in users}
    results = run_all(
        specs(
            store,
            redis_server,
            namespace,
            mode="fill",
            writes=4,
            prefixes=[user + "/" for user in users],
            quotas=quotas,
        )
    )
    assert sum(r["refused"] for r in results) > 0
    async with observer(store, redis_server, namespace) as storage:
        for user in users:
            stored = await storage.get_total_size(user)
            assert stored <= 15_000
            assert (await storage.get_usage(user)).used == stored


async def test_dripping_writers_of_four_processes_never_overshoot_nested_quotas(
    store: dict[str, Any], redis_server: RedisServer, namespace: str
) -> None:
    # streams of a few bytes per chunk hold ahead of what they sent: never past a quota
    quotas = {"": 40_000, "users/a": 15_000}
    results = run_all(
        specs(
            store,
            redis_server,
            namespace,
            mode="fill",
            drip=True,
            writes=4,
            prefixes=["users/a/", "users/b/", ""],
            quotas=quotas,
        )
    )
    assert sum(r["refused"] for r in results) > 0
    async with observer(store, redis_server, namespace) as storage:
        for prefix, limit in quotas.items():
            stored = await storage.get_total_size(prefix)
            assert 0 < stored <= limit
            assert (await storage.get_usage(prefix)).used == stored
        assert sum(r["stored"] for r in results) == len(await storage.list_files())


async def test_overwrites_deletes_copies_and_moves_from_four_processes_stay_exact(
    store: dict[str, Any], redis_server: RedisServer, namespace: str
) -> None:
    results = run_all(
        specs(store, redis_server, namespace, mode="mixed", writes=12, quotas={"": 7_000})
    )
    assert sum(r["done"] for r in results) > 0
    async with observer(store, redis_server, namespace) as storage:
        stored = await storage.get_total_size()
        assert stored <= 7_000
        assert (await storage.get_usage()).used == stored


async def test_writers_of_two_processes_leave_no_error_in_a_fresh_redis_stats(
    tmp_path: Path, own_redis: RedisServer, namespace: str
) -> None:
    # operators alert on Redis's error stats: two processes starting on a Redis without
    # the ledger's scripts, many writes of each in flight at once, answer none with one
    store = {"type": "local", "root": str(tmp_path / "storage")}
    results = run_all(
        specs(
            store,
            own_redis,
            namespace,
            mode="fill",
            writes=3,
            prefixes=["a/", "b/"],
            quotas={"a": 20_000},
        )[:2]
    )
    assert sum(r["stored"] for r in results) > 0
    stats = own_redis.info("errorstats")
    assert "errorstat_" not in stats, stats


async def test_a_writer_killed_mid_stream_frees_its_reservation_within_the_lease(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    import redis

    store = {"type": "local", "root": str(tmp_path / "storage")}
    lease = 1.0
    spec = specs(store, redis_server, namespace, mode="hang", quotas={"": 10_000}, lease=lease)[0]
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with running(spec, "streaming") as proc, contextlib.closing(client):
        quota = "{" + namespace + "}:q:"
        assert client.hget(quota, "reserved") == "1000"  # held by the writer
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait(timeout=10)
        killed_at = time.monotonic()
        async with observer(store, redis_server, namespace) as storage:
            storage.set_quota("", 10_000)
            # the lease runs out on Redis's clock: poll the server's state, bounded
            for _ in range(int((lease + 5) / 0.05)):
                if (used := (await storage.get_usage()).used) == 0:
                    break
                await asyncio.sleep(0.05)  # paces the poll of Redis's state
            assert used == 0
            assert time.monotonic() - killed_at < lease + 5
            # the dead writer's key lock ran out too: the key can be written again
            await storage.save("hang/k", b"z" * 10)
            assert (await storage.get_usage()).used == 10


async def test_a_writer_killed_after_its_commit_was_lost_is_listed_again_within_the_lease(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # the object is stored but Redis never got its commit, and the process that knew is
    # SIGKILLed: its reservation runs out with the lease, and the quota is listed again
    # instead of trusting a figure that misses the object
    import redis

    store = {"type": "local", "root": str(tmp_path / "storage")}
    lease = 1.0
    quotas = {"": 10_000}
    spec = specs(store, redis_server, namespace, mode="lost-commit", quotas=quotas, lease=lease)
    client = redis.Redis.from_url(redis_server.url)
    with running(spec[0], "landed") as proc, contextlib.closing(client):
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait(timeout=10)
        async with observer(store, redis_server, namespace) as storage:
            storage.set_quota("", 10_000)
            assert await storage.get_total_size() == 900
            # the lease runs out on Redis's clock (each usage call frees what ran out):
            # poll the server's state, bounded, until nothing is reserved any more
            for _ in range(int((lease + 5) / 0.05)):
                used = (await storage.get_usage()).used
                if client.zcard("{" + namespace + "}:leases") == 0:
                    break
                await asyncio.sleep(0.05)  # paces the poll of Redis's state
            assert client.zcard("{" + namespace + "}:leases") == 0
            assert used == 900  # listed again, not 0 (the figure that missed the commit)
            # and writes go on being counted from there
            await storage.save("lost/other", b"o" * 100)
            assert (await storage.get_usage()).used == 1000
