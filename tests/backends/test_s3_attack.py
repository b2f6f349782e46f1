"""The S3 backend closed under operations in flight: ``aclose`` never cuts them."""

from __future__ import annotations

import gc

import pytest

from file_storage import StorageBackend

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
