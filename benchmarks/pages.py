"""``list_page`` deep into a big folder: a page at depth N costs about the first page.

One flat folder of N objects; ``list_page(limit=100)`` from the start, and from a cursor
half-way (``start_after`` = the key at depth N/2), best of several runs each. The
local backend lists and bisects the folder once either way (no linear scan up to the
cursor); S3 (moto) starts at ``StartAfter``. Objects are created directly (plain files;
boto3 on S3), not timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks._common import KEY_ID, REGION, SECRET, MotoServer, Row, Scale, log

SECTION = "listing pages (list_page of 100)"
FIRST = "first page"
DEEP = "page at depth N/2"
LIMIT = 100
REPS = 5


def _counts(scale: Scale) -> tuple[int, int]:
    """(local objects, S3 objects): 100,000 and 10,000; quick: 10,000 and 1,000."""
    return (100_000, 10_000) if scale.name == "full" else (10_000, 1_000)


def _key(i: int) -> str:
    return f"{i:07d}.bin"


async def _time(page: Callable[[str | None], Awaitable[object]], cursor: str | None) -> float:
    await page(cursor)  # warm: the first call opens clients and caches
    best = float("inf")
    for _ in range(REPS):
        started = time.perf_counter()
        await page(cursor)
        best = min(best, time.perf_counter() - started)
    return best


async def _measure(label: str, backend: object, count: int) -> list[Row]:
    from file_storage import StorageBackend

    assert isinstance(backend, StorageBackend)

    async def page(cursor: str | None) -> object:
        result = await backend.list_page("flat", limit=LIMIT, start_after=cursor)
        assert len(result.files) == LIMIT
        return result

    depth = count // 2
    first = await _time(page, None)
    deep = await _time(page, f"flat/{_key(depth - 1)}")
    workload = f"{label}, {count:,} objects, depth {depth:,}"
    log(f"  {workload}: first {first * 1e3:.1f} ms, deep {deep * 1e3:.1f} ms")
    return [
        Row(SECTION, workload, FIRST, ops=1, seconds=first),
        Row(SECTION, workload, DEEP, ops=1, seconds=deep),
    ]


async def run_pages(server: MotoServer, scale: Scale, workdir: Path) -> list[Row]:
    from file_storage import LocalStorageBackend, S3StorageBackend

    local_count, s3_count = _counts(scale)
    rows: list[Row] = []
    root = workdir / "pages"
    folder = root / "flat"
    folder.mkdir(parents=True)
    for i in range(local_count):
        with open(folder / _key(i), "wb") as out:
            out.write(b"x")
    local = LocalStorageBackend(root)
    try:
        rows += await _measure("local", local, local_count)
    finally:
        await local.aclose()

    bucket = server.bucket("pages")
    client = server.sync_client()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: client.put_object(Bucket=bucket, Key=f"p/flat/{_key(i)}", Body=b"x"),
                range(s3_count),
            )
        )
    client.close()
    s3 = S3StorageBackend(
        bucket,
        prefix="p",
        endpoint_url=server.endpoint,
        region=REGION,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        addressing_style="path",
    )
    try:
        rows += await _measure("S3 (moto)", s3, s3_count)
    finally:
        await s3.aclose()
        await asyncio.to_thread(server.drop, bucket)
    return rows
