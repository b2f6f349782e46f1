"""stream(): byte ranges like a slice, bounded chunks."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from file_storage import ObjectNotFoundError, PreconditionFailedError, StorageBackend
from file_storage.testing.suite.fixtures import DATA


async def read(backend: StorageBackend, key: str, **kwargs: Any) -> bytes:
    return b"".join([chunk async for chunk in backend.stream(key, **kwargs)])


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, None),
        (0, None),
        (0, 1),
        (0, 10_240),
        (100, 200),
        (10_239, None),
        (10_239, 10_240),
        (10_240, None),
        (10_240, 20_000),
        (5_000, 50_000),
        (50_000, None),
        (None, 300),
        (300, 300),
        (400, 300),
        (-100, None),
        (-100, -50),
        (None, -10),
        (-50_000, 10),
    ],
)
async def test_stream_range_matches_slice(
    stored: StorageBackend, start: int | None, end: int | None
) -> None:
    assert await read(stored, "r/data.bin", start=start, end=end) == DATA[start:end]


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 4096, 1 << 20])
async def test_stream_chunks_never_exceed_chunk_size(
    stored: StorageBackend, chunk_size: int
) -> None:
    chunks = [c async for c in stored.stream("r/data.bin", start=3, chunk_size=chunk_size)]
    assert all(0 < len(c) <= chunk_size for c in chunks)
    assert b"".join(chunks) == DATA[3:]


async def test_stream_missing_raises_object_not_found_on_iteration(
    backend: StorageBackend,
) -> None:
    iterator = backend.stream("nope.bin")
    with pytest.raises(ObjectNotFoundError) as info:
        await read(backend, "nope.bin")
    assert (info.value.operation, info.value.key) == ("stream", "nope.bin")
    with pytest.raises(ObjectNotFoundError):
        await anext(iterator)


async def test_stream_empty_range_of_missing_object_raises(backend: StorageBackend) -> None:
    with pytest.raises(ObjectNotFoundError):
        await read(backend, "nope.bin", start=5, end=5)


@pytest.mark.parametrize("chunk_size", [0, -1])
async def test_stream_bad_chunk_size_raises_value_error_eagerly(
    backend: StorageBackend, chunk_size: int
) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        backend.stream("r/data.bin", chunk_size=chunk_size)


async def test_stream_abandoned_half_way_can_be_closed(stored: StorageBackend) -> None:
    iterator = stored.stream("r/data.bin", chunk_size=100)
    assert len(await anext(iterator)) == 100
    await iterator.aclose()  # type: ignore[attr-defined]
    assert await stored.load("r/data.bin") == DATA


async def _abandon(backend: StorageBackend, how: str) -> None:
    if how == "break":
        async for _chunk in backend.stream("r/data.bin", chunk_size=100):
            break  # never closed by the caller: the loop's finalizer closes it
    elif how == "dropped":
        iterator = backend.stream("r/data.bin", chunk_size=100)
        await anext(iterator)
        del iterator
        gc.collect()
    else:
        first = asyncio.Event()

        async def consume() -> None:
            async for _chunk in backend.stream("r/data.bin", chunk_size=100):
                first.set()
                await asyncio.Event().wait()  # a consumer that never finishes

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_streams_abandoned_again_and_again_leave_no_task_behind(
    stored: StorageBackend,
) -> None:
    await _abandon(stored, "break")  # clients and pools are open
    for _ in range(100):
        await asyncio.sleep(0)
    tasks = len(asyncio.all_tasks())
    for how in ("break", "dropped", "cancelled"):
        for _ in range(50):
            await _abandon(stored, how)
    for _ in range(1000):  # turns of the loop for the finalizers to close them
        if len(asyncio.all_tasks()) <= tasks:
            break
        await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) <= tasks
    # nothing they held (a pooled connection, a descriptor) keeps the next read waiting
    assert await asyncio.wait_for(stored.load("r/data.bin"), 60) == DATA


@pytest.mark.backend_needs("pinned_reads")
async def test_stream_if_match_current_etag_streams_the_object(stored: StorageBackend) -> None:
    etag = (await stored.stat("r/data.bin")).etag
    chunks = [c async for c in stored.stream("r/data.bin", chunk_size=1000, if_match=etag)]
    assert b"".join(chunks) == DATA


@pytest.mark.backend_needs("pinned_reads")
async def test_stream_if_match_stale_etag_raises_precondition_failed_on_iteration(
    stored: StorageBackend,
) -> None:
    etag = (await stored.stat("r/data.bin")).etag
    await stored.save("r/data.bin", b"replaced, and of another size")
    iterator = stored.stream("r/data.bin", if_match=etag)  # nothing is checked yet
    with pytest.raises(PreconditionFailedError) as info:
        await anext(iterator)
    assert (info.value.operation, info.value.key) == ("stream", "r/data.bin")
