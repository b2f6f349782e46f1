"""The S3 backend attacked after issue #12: closing it under operations in flight."""

from __future__ import annotations

import pytest

from file_storage import StorageBackend, StorageUnavailableError

pytestmark = pytest.mark.s3


@pytest.mark.xfail(
    strict=True,
    reason="aclose closes the loop's client under operations in flight: a stream being "
    "read fails with StorageUnavailableError (a request starting then fails as 'S3 "
    "unreachable after 5 attempts') instead of aclose waiting for them, as it waits for "
    "background aborts; needs an in-flight count per loop in s3.py",
)
async def test_aclose_lets_a_download_in_flight_finish(s3_backend: StorageBackend) -> None:
    data = b"z" * (4 * 2**20)
    await s3_backend.save("big.bin", data)
    chunks = s3_backend.stream("big.bin", chunk_size=2**16)
    received = [await anext(chunks)]
    await s3_backend.aclose()  # app shutdown while a download is being served
    received += [chunk async for chunk in chunks]
    assert b"".join(received) == data


async def test_a_download_cut_by_aclose_raises_a_storage_error(
    s3_backend: StorageBackend,
) -> None:
    await s3_backend.save("big.bin", b"z" * (4 * 2**20))
    chunks = s3_backend.stream("big.bin", chunk_size=2**16)
    await anext(chunks)
    await s3_backend.aclose()
    with pytest.raises(StorageUnavailableError) as info:
        async for _ in chunks:
            pass
    assert (info.value.operation, info.value.key) == ("stream", "big.bin")
    assert info.value.__cause__ is not None
