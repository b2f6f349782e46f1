"""The cost of the shared quota ledger: a 4 KiB ``save`` with the Redis ledger, against the
in-process ledger and against no quota, on local disk and on S3 (moto), from 1 and from 4
processes writing at once (each with 8 saves in flight).

Every process is a fresh child (``python -m benchmarks.quota_redis '<json>'``) that
builds its backend, learns the usage (not counted), warms up, says it is ready and waits
for the word to go: the processes of a turn time their saves together (without the
barrier, a process that started first would write alone for a while). A turn's span is
the longest of its processes' timed spans and lasts a second or two (``TURN_SAVES``), and
the contenders of a workload take turns in a rotating order (``Scale.rounds``); a row's
rate is its saves over its turns' spans. The flatness rows time one process on the memory
backend with the quota set over 0 and over N stored objects. The Redis server is
Debian's ``redis-server``, started here on a free loopback port with persistence off;
without it the Redis rows read n/a. Redis shares the machine's cores
with the writers, except in the workload "Redis on a core of its own" (on a machine of
two cores or more): Redis pinned to one core, the writers of every contender to the
others, as where Redis runs on a machine or cores of its own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._common import (
    KEY_ID,
    REGION,
    SECRET,
    SMALL,
    MotoServer,
    Row,
    Scale,
    drive,
    log,
    rotations,
)

SECTION = "shared quota ledger (4 KiB save)"
BASE = "in-process ledger"
CONTENDERS = ("no quota", BASE, "Redis ledger")
LIMIT = 10**15  # never reached: we measure the bookkeeping, not a refusal
IN_FLIGHT = 8
# the saves of one turn, all processes together, as a share of ``Scale.quota_ops``: about
# a second or two of saves on each store, long enough that a turn is not timing the
# processes' start (a local save is ~5 x an S3 save on moto, a memory save ~2 x local)
TURN_SAVES = {"memory": 1.0, "local": 0.6, "s3": 0.2}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def _build(spec: dict[str, Any]) -> Any:
    from file_storage import LocalStorageBackend, MemoryStorageBackend, S3StorageBackend

    options: dict[str, Any] = {}
    if spec["ledger"] != "no quota" and not spec.get("objects"):
        options["max_size_bytes"] = LIMIT  # (with objects: set once they are stored)
    if spec["ledger"] == "Redis ledger":
        options |= {"quota_redis_url": spec["redis"], "quota_redis_namespace": spec["ns"]}
    if spec["store"] == "memory":
        return MemoryStorageBackend(**options)
    if spec["store"] == "local":
        return LocalStorageBackend(spec["root"], **options)
    return S3StorageBackend(
        spec["bucket"],
        prefix="bench",
        endpoint_url=spec["endpoint"],
        region=REGION,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        addressing_style="path",
        **options,
    )


async def _child(spec: dict[str, Any]) -> dict[str, float]:
    data = os.urandom(SMALL)
    async with _build(spec) as storage:
        me = spec["id"]
        if spec.get("objects"):  # flatness: the quota is set over this many objects
            await drive(lambda i: storage.save(f"data/{i // 1000:04d}/{i:07d}.bin", data), 0,
                        spec["objects"], 16)  # fmt: skip
            storage.set_quota("", LIMIT)
        # the objects a memory backend holds would be walked by every full GC pass: out of
        # the collector's sight, so the span times the ledger, not the backend's heap
        gc.collect()
        gc.freeze()
        await storage.save(f"p{me}/first.bin", data)  # learns usage: not counted
        await drive(lambda i: storage.save(f"p{me}/w{i}.bin", data), 0, spec["warmup"], IN_FLIGHT)
        print("ready", flush=True)  # then wait for the other processes of the turn
        sys.stdin.readline()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await drive(lambda i: storage.save(f"p{me}/{i}.bin", data), 0, spec["ops"], IN_FLIGHT)
        return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - cpu0}


def _cores() -> tuple[set[int], set[int]] | None:
    """Redis's core and the others, for the workload where Redis has a core of its own
    (as where it runs on a machine or cores of its own); ``None`` with fewer than 2."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    return {cores[-1]}, set(cores[:-1])


def _run(specs: list[dict[str, Any]], cores: set[int] | None = None) -> list[dict[str, float]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.quota_redis", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for spec in specs
    ]
    if cores is not None:
        for proc in procs:  # (before they build their backends: nothing timed yet)
            os.sched_setaffinity(proc.pid, cores)
    for proc in procs:  # every process warmed up: all start timing at once
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"benchmark child exited with {proc.wait()}")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    out = []
    for proc in procs:
        text, _ = proc.communicate(timeout=600)
        if proc.returncode:
            raise RuntimeError(f"benchmark child exited with {proc.returncode}")
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


def run_shared_quota(moto: MotoServer, scale: Scale, workdir: Path) -> list[Row]:
    redis: _Redis | None
    try:
        redis = _Redis(workdir)
    except RuntimeError as exc:
        log(f"  shared quota: {exc}")
        redis = None
    rows: list[Row] = []
    runs: list[tuple[str, int, bool]] = [
        (store, processes, False) for store in ("local", "s3") for processes in (1, 4)
    ]
    cores = _cores()
    if cores is not None:
        runs.insert(2, ("local", 4, True))
    try:
        for store, processes, pinned in runs:
            workload = f"{store}, {processes} process{'es' if processes > 1 else ''}"
            if pinned:
                workload += ", Redis on a core of its own"
            mine = {ledger: Row(SECTION, workload, ledger) for ledger in CONTENDERS}
            rows.extend(mine.values())
            if redis is None:
                mine["Redis ledger"].error = "n/a (redis-server is not installed)"
            ops = max(50, int(scale.quota_ops * TURN_SAVES[store]) // processes)
            # the contenders take turns, in a rotating order: a drift of a shared
            # machine falls on all of them alike
            for order in rotations([c for c in CONTENDERS if not mine[c].error], scale.rounds):
                for ledger in order:
                    log(f"  shared quota: {workload}, {ledger}")
                    _measure(
                        mine[ledger], redis, moto, workdir, store, processes, ops, scale,
                        cores=cores if pinned else None,
                    )  # fmt: skip
        # flatness: the same save over 0 and N stored objects, on the memory backend (no
        # I/O to hide behind), one process
        for objects in (0, scale.quota_counts[-1]):
            workload = f"memory, 1 process, {objects:,} objects"
            mine = {ledger: Row(SECTION, workload, ledger) for ledger in (BASE, "Redis ledger")}
            rows.extend(mine.values())
            if redis is None:
                mine["Redis ledger"].error = "n/a (redis-server is not installed)"
            ops = max(50, int(scale.quota_ops * TURN_SAVES["memory"]))
            for order in rotations([c for c in mine if not mine[c].error], scale.rounds):
                for ledger in order:
                    log(f"  shared quota: {workload}, {ledger}")
                    _measure(mine[ledger], redis, moto, workdir, "memory", 1, ops, scale, objects)
    finally:
        if redis is not None:
            redis.stop()
    return rows


def _measure(
    row: Row,
    redis: _Redis | None,
    moto: MotoServer,
    workdir: Path,
    store: str,
    processes: int,
    ops: int,
    scale: Scale,
    objects: int = 0,
    cores: tuple[set[int], set[int]] | None = None,
) -> None:
    """One turn of a contender: ``processes`` fresh children of ``ops`` saves each
    (``cores``: Redis on the first set, the children on the second, whatever the
    contender, so that all have the same cores)."""
    base: dict[str, Any] = {
        "store": store,
        "ledger": row.contender,
        "redis": redis.url if redis else "",
        "ns": f"bench:{uuid.uuid4().hex[:8]}",
        "root": str(workdir / f"shared-{uuid.uuid4().hex[:8]}"),
        "endpoint": moto.endpoint,
        "bucket": _bucket(moto) if store == "s3" else "",
        "ops": ops,
        "warmup": scale.warmup,
        "objects": objects,
    }
    redis0 = _cpu(redis)
    if redis is not None:
        os.sched_setaffinity(redis.process.pid, cores[0] if cores else os.sched_getaffinity(0))
    results = _run([{**base, "id": i} for i in range(processes)], cores[1] if cores else None)
    if row.contender == "Redis ledger" and not objects:
        # Redis's own CPU per save, warm-up included (in the results JSON)
        saves = processes * (ops + scale.warmup + 1)
        spent = (_cpu(redis) - redis0) / saves * 1e6
        turns = row.extra.get("turns", 0.0)
        mean = row.extra.get("redis_cpu_us_per_save", 0.0)
        row.extra["redis_cpu_us_per_save"] = (mean * turns + spent) / (turns + 1)
        row.extra["turns"] = turns + 1
    row.ops += ops * processes
    row.seconds += max(r["seconds"] for r in results)
    row.cpu_seconds += sum(r["cpu"] for r in results)


def _cpu(redis: _Redis | None) -> float:
    """The CPU seconds the Redis server has used so far (0 without one)."""
    if redis is None:
        return 0.0
    import psutil

    times = psutil.Process(redis.process.pid).cpu_times()
    return float(times.user + times.system)


def _bucket(moto: MotoServer) -> str:
    import boto3

    name = f"bench-shared-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=moto.endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    client.create_bucket(Bucket=name)
    client.close()
    return name


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_child(json.loads(sys.argv[1])))), flush=True)
