"""The S3 backend closed under operations in flight: ``aclose`` never cuts them."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from file_storage import StorageBackend
from tests.backends.conftest import SMALL, MiB, client_of
from tests.s3util import MakeBackend, blocks, stored_keys

pytestmark = pytest.mark.s3

DATA = b"z" * (4 * 2**20)


async def test_aclose_lets_a_download_in_flight_finish(s3_backend: StorageBackend) -> None:
    await s3_backend.save("big.bin", DATA)
    chunks = s3_backend.stream("big.bin", chunk_size=2**16)
    received = [await anext(chunks)]
    await s3_backend.aclose()  # app shutdown while a download is being served
    received += [chunk async for chunk in chunks]
    assert b"".join(received) == DATA


async def test_operations_after_aclose_run_beside_a_download_in_flight(
    s3_backend: StorageBackend,
) -> None:
    await s3_backend.save("big.bin", DATA)
    chunks = s3_backend.stream("big.bin", chunk_size=2**16)
    received = [await anext(chunks)]
    await s3_backend.aclose()
    await s3_backend.save("small.txt", b"after close")  # opens a client of its own
    assert await s3_backend.load("small.txt") == b"after close"
    received += [chunk async for chunk in chunks]
    assert b"".join(received) == DATA


async def test_clients_left_open_for_a_download_close_when_it_ends(
    s3_backend: StorageBackend, recwarn: pytest.WarningsRecorder
) -> None:
    await s3_backend.save("big.bin", DATA)
    for _ in range(3):  # each round leaves a client set to close after its download
        chunks = s3_backend.stream("big.bin", chunk_size=2**16)
        await anext(chunks)
        await s3_backend.aclose()
        async for _chunk in chunks:
            pass
    await s3_backend.aclose()  # waits for the deferred closes
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]


@pytest.mark.parametrize(
    ("operation", "size"), [("PutObject", 100), ("CompleteMultipartUpload", 6 * MiB)]
)
async def test_a_write_cancelled_after_s3_stored_it_is_counted_by_the_quota(
    make_backend: MakeBackend, raw: Any, s3_bucket: str, operation: str, size: int
) -> None:
    backend = make_backend(**SMALL, max_size_bytes=100 * MiB)
    await backend.save("warm.bin", b"w")  # the quota's first scan
    stored, gate = asyncio.Event(), asyncio.Event()

    async def hold(**_: Any) -> None:
        stored.set()  # S3 has stored the object; its answer is still on the way back
        await gate.wait()

    client = await client_of(backend)
    client.meta.events.register(f"after-call.s3.{operation}", hold)
    content = b"x" * size if operation == "PutObject" else blocks(size)  # a stream: parts
    task = asyncio.create_task(backend.save("late.bin", content))
    await stored.wait()
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "storage/late.bin" in stored_keys(raw, s3_bucket)
    # what S3 holds is counted: the quota must not let that much more in
    assert (await backend.get_usage()).used == 1 + size
