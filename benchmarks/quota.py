"""The cost of a quota, and of ``import file_storage``.

Quota: a 4 KiB ``save`` with ``max_size_bytes`` set (usage already learned) on a
backend holding N objects, against the same save with no quota, in the same run.
The memory backend shows whether the cost stays flat up to 100,000 objects (it has
no I/O to hide behind); the local backend shows it where real writes happen. The
first save after the backend starts pays one listing to learn the usage; that
one-time scan is reported separately.

Import: ``python -c "import file_storage"`` in a fresh interpreter, best of N, with
the bare interpreter's start-up subtracted; it must not load aioboto3 or botocore.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks._common import SMALL, Meter, Row, Scale, drive, log, rotations, split

SECTION = "quota cost (4 KiB save)"
IMPORT_SECTION = "import time"
QUOTA_LIMIT = 10**15  # never reached: we measure the bookkeeping, not a refusal


async def _populate(backend: object, count: int, data: bytes) -> None:
    from file_storage import StorageBackend

    assert isinstance(backend, StorageBackend)

    async def put(i: int) -> object:
        return await backend.save(f"data/{i // 1000:04d}/{i:07d}.bin", data)

    await drive(put, 0, count, 16)


async def _measure(kind: str, count: int, scale: Scale, root: Path | None) -> list[Row]:
    from file_storage import LocalStorageBackend, MemoryStorageBackend, StorageBackend

    data = os.urandom(SMALL)
    label = f"{kind}, {count:,} objects"
    plain: StorageBackend
    quota: StorageBackend
    if kind == "memory":
        plain = MemoryStorageBackend()
        quota = MemoryStorageBackend(max_size_bytes=QUOTA_LIMIT)
        await _populate(plain, count, data)
        await _populate(quota, count, data)  # usage learned on its first save
    else:
        assert root is not None
        plain = LocalStorageBackend(root)
        await _populate(plain, count, data)
        quota = LocalStorageBackend(root, max_size_bytes=QUOTA_LIMIT)
    rows = {
        "no quota": Row(SECTION, label, "no quota"),
        "quota": Row(SECTION, label, "max_size_bytes set"),
    }
    # the first quota'd save lists the backend once to learn its usage
    started = time.perf_counter()
    await quota.save("new/first.bin", data)
    rows["quota"].extra["first_save_scan_s"] = time.perf_counter() - started
    backends = {"no quota": plain, "quota": quota}

    def saver(backend: StorageBackend, folder: str) -> Callable[[int], Awaitable[str]]:
        return lambda i: backend.save(f"{folder}/{i:07d}.bin", data)

    for backend in backends.values():  # warm-up, not counted
        await drive(saver(backend, "warm"), 0, scale.warmup, 1)
    shares = split(scale.quota_ops, scale.rounds * 2)
    done = dict.fromkeys(backends, 0)
    for r, order in enumerate(rotations(list(backends), scale.rounds * 2)):
        for name in order:
            backend = backends[name]
            # a save costs ~15 µs on memory: a full GC pass (100,000 live objects) landing
            # in one side's span would swamp it, so collect between spans, not inside them
            gc.collect()
            gc.disable()
            try:
                with Meter(rows[name], None):
                    await drive(saver(backend, f"new/{name[0]}"), done[name], shares[r], 1)
            finally:
                gc.enable()
            rows[name].ops += shares[r]
            done[name] += shares[r]
    return list(rows.values())


async def run_quota(scale: Scale, workdir: Path) -> list[Row]:
    os.sync()  # earlier sections' dirty pages must not be written back during ours
    rows: list[Row] = []
    for count in scale.quota_counts:
        log(f"  quota: memory, {count:,} objects")
        rows.extend(await _measure("memory", count, scale, None))
    for count in scale.quota_local_counts:
        log(f"  quota: local, {count:,} objects")
        root = workdir / f"quota-{count}"
        try:
            rows.extend(await _measure("local", count, scale, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def _best(code: str, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - started)
    return best


def run_import(scale: Scale) -> list[Row]:
    log("  import time")
    bare = _best("pass", scale.import_runs)
    full = _best("import file_storage", scale.import_runs)
    loaded = subprocess.run(
        [sys.executable, "-c", "import file_storage, sys; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = sorted({"aioboto3", "aiobotocore", "botocore", "fastapi"} & set(loaded))
    row = Row(IMPORT_SECTION, f"import file_storage (best of {scale.import_runs})", "fresh process")
    row.ops = 1
    row.seconds = full - bare
    row.extra = {"interpreter_s": bare, "total_s": full, "heavy_modules": float(len(heavy))}
    row.note = f"loads {', '.join(heavy)}" if heavy else "no aioboto3/botocore/fastapi loaded"
    return [row]
