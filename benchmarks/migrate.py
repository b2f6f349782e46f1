"""``migrate`` LOCAL -> S3 (moto): time, CPU and peak RSS, each run in a fresh interpreter.

Two workloads: many small objects (10,000 of 4 KiB; 1,000 quick) and one large object
(2 GiB; 128 MiB quick). Peak RSS above the baseline after imports must not grow with
either: ``migrate`` streams every object and keeps ``concurrency`` of them in flight.
The child is ``python -m benchmarks.migrate '<json spec>'``; it prints one JSON object.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks._common import (
    KEY_ID,
    MIB,
    REGION,
    SECRET,
    MotoServer,
    Row,
    RssSampler,
    Scale,
    log,
    proc_cpu,
)
from benchmarks.s3_large import make_file

SECTION = "migrate LOCAL -> S3 (moto server)"
SIZES = {  # scale name -> (small objects, bytes each, the large object's bytes)
    "full": (10_000, 4096, 2048 * MIB),
    "quick": (1_000, 4096, 128 * MIB),
}


def run_migrate(server: MotoServer, scale: Scale, workdir: Path) -> list[Row]:
    count, each, large = SIZES[scale.name]
    small_root = workdir / "migrate-small"
    block = os.urandom(each)
    for i in range(count):
        path = small_root / f"u{i % 100:02}" / f"{i:05}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(block[: each - (i % 7)] + i.to_bytes(4, "big"))
    large_root = workdir / "migrate-large"
    large_root.mkdir(exist_ok=True)
    make_file(large_root / "big.bin", large)
    label = f"{large // MIB} MiB" if large < 1024 * MIB else f"{large // (1024 * MIB)} GiB"
    rows = []
    for workload, root in (
        (f"{count:,} objects of {each // 1024} KiB", small_root),
        (
            f"one object of {label}",
            large_root,
        ),
    ):
        log(f"  migrate {workload}")
        bucket = server.bucket("migrate")
        row = Row(SECTION, workload, "file_storage migrate")
        try:
            result = _child(
                {
                    "root": str(root),
                    "endpoint": server.endpoint,
                    "bucket": bucket,
                    "server_pid": server.proc.pid if server.proc else None,
                }
            )
        finally:
            server.drop(bucket)
        if "error" in result:
            row.error = f"n/a ({result['error']})"
        else:
            row.ops = result["copied"]
            row.nbytes = result["bytes"]
            row.seconds = result["seconds"]
            row.cpu_seconds = result["cpu_seconds"]
            row.server_cpu_seconds = result["server_cpu_seconds"]
            row.peak_rss = result["peak_rss"]
            row.extra["baseline_rss_mib"] = result["baseline_rss"] / MIB
        rows.append(row)
    shutil.rmtree(small_root, ignore_errors=True)
    shutil.rmtree(large_root, ignore_errors=True)
    return rows


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.migrate", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"child exited {proc.returncode}: {tail}"[:200]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def _work(spec: dict[str, Any], sampler: RssSampler, baseline: int) -> dict[str, Any]:
    from file_storage import LocalStorageBackend, S3StorageBackend, migrate

    source = LocalStorageBackend(spec["root"])
    dest = S3StorageBackend(
        spec["bucket"],
        endpoint_url=spec["endpoint"],
        region=REGION,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        addressing_style="path",
    )
    server = psutil.Process(spec["server_pid"]) if spec.get("server_pid") else None
    async with dest:
        gc.collect()
        sampler.reset()
        server0 = proc_cpu(server)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        report = await migrate(source, dest)
        seconds = time.perf_counter() - t0
    if report.failed:
        raise RuntimeError(
            f"{len(report.failed)} objects failed: {next(iter(report.failed.values()))}"
        )
    return {
        "copied": report.copied,
        "bytes": report.bytes,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu0,
        "server_cpu_seconds": proc_cpu(server) - server0 if server else None,
        "peak_rss": sampler.peak - baseline,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    import aiobotocore.session  # noqa: F401  (the baseline includes the SDK)

    import file_storage  # noqa: F401

    gc.collect()
    sampler = RssSampler()
    baseline = sampler.rss()
    result: dict[str, Any] = {"baseline_rss": baseline}
    try:
        with sampler:
            result.update(asyncio.run(_work(spec, sampler, baseline)))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:200]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
