"""The S3 connection pool held by streams nobody finishes: a request waiting for a free
connection gives up with a typed error instead of hanging, and a stream abandoned
(closed, broken out of, or dropped and collected) gives its connection back."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator

import pytest

from file_storage import S3StorageBackend, StorageBackend, StorageUnavailableError
from tests.s3util import SERVER, MakeBackend, s3_backends

pytestmark = pytest.mark.s3

POOL = 2
DATA = os.urandom(4 * 2**20)  # more than the socket buffers: a stream holds its connection
BOUND = 60  # seconds: far above the bounded wait, far below "forever"


@pytest.fixture
async def make(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[MakeBackend]:
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make


@pytest.fixture
async def pooled(make: MakeBackend) -> StorageBackend:
    backend: StorageBackend = make(
        prefix="pool", max_pool_connections=POOL, connect_timeout=0.5, max_attempts=2
    )
    await backend.save("big.bin", DATA)
    return backend


async def started(backend: StorageBackend) -> AsyncIterator[bytes]:
    """A stream of DATA whose first chunk was read: its connection is taken."""
    chunks = backend.stream("big.bin", chunk_size=2**16)
    first = await anext(chunks)  # as much as had come, up to the chunk size
    assert first
    assert DATA.startswith(first)
    return chunks


async def test_a_request_waiting_on_a_full_pool_raises_unavailable(
    pooled: StorageBackend,
) -> None:
    held = [pooled.stream("big.bin", chunk_size=2**16) for _ in range(POOL)]
    firsts = [await anext(chunks) for chunks in held]  # each holds its connection now
    with pytest.raises(StorageUnavailableError) as info:
        await asyncio.wait_for(pooled.exists("big.bin"), BOUND)
    assert (info.value.operation, info.value.key) == ("exists", "big.bin")
    with pytest.raises(StorageUnavailableError) as info:
        await asyncio.wait_for(started(pooled), BOUND)
    assert (info.value.operation, info.value.key) == ("stream", "big.bin")
    # the streams holding the pool are untouched and read to the end
    for first, chunks in zip(firsts, held, strict=True):
        assert first + b"".join([c async for c in chunks]) == DATA


async def test_the_next_request_completes_once_a_holding_stream_is_closed(
    pooled: StorageBackend,
) -> None:
    held = [await started(pooled) for _ in range(POOL)]
    await held.pop().aclose()  # type: ignore[attr-defined]
    assert await asyncio.wait_for(pooled.exists("big.bin"), BOUND)
    for chunks in held:
        await chunks.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
@pytest.mark.parametrize("how", ["dropped", "break", "cancelled"])
async def test_abandoned_streams_give_their_connections_back(
    make: MakeBackend, client: str, how: str
) -> None:
    backend = make(prefix="pool", max_pool_connections=POOL, connect_timeout=0.5, client=client)
    await backend.save("big.bin", DATA)
    for _ in range(10 * POOL):  # many more than the pool holds
        if how == "dropped":
            chunks = await started(backend)
            del chunks  # never closed: the loop's finalizer closes it once collected
            gc.collect()
        elif how == "break":
            async for _chunk in backend.stream("big.bin", chunk_size=2**16):
                break
        else:
            first = asyncio.Event()

            async def read(first: asyncio.Event = first) -> None:
                async for _chunk in backend.stream("big.bin", chunk_size=2**16):
                    first.set()
                    await asyncio.Event().wait()  # a consumer that never finishes

            task = asyncio.create_task(read())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0)  # the finalizer's aclose runs as a task of the loop
    assert await asyncio.wait_for(backend.load("big.bin"), BOUND) == DATA


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
@pytest.mark.parametrize("closed", [True, False], ids=["closed", "left-open"])
def test_a_loop_ending_with_streams_half_read_logs_no_error(
    moto_endpoint: str, s3_bucket: str, caplog: pytest.LogCaptureFixture, client: str, closed: bool
) -> None:
    # an app shutting down while downloads are being served: asyncio.run finalizes the
    # streams, their inner generators and the clients' shutdown hook all at once
    held: list[AsyncIterator[bytes]] = []

    async def serve() -> None:
        backend = S3StorageBackend(
            s3_bucket,
            prefix="pool",
            endpoint_url=moto_endpoint,
            access_key_id=SERVER.access_key_id,
            secret_access_key=SERVER.secret_access_key,
            client=client,
        )
        await backend.save("big.bin", DATA)
        held.extend([await started(backend) for _ in range(POOL)])
        if closed:
            await backend.aclose()  # the app's shutdown, downloads still in flight

    for _ in range(3):
        asyncio.run(serve())
        held.clear()
        gc.collect()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
