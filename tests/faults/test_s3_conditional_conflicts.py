"""S3 answers a conditional write 409 ConditionalRequestConflict when another request on
its key raced it (a delete that succeeded first, a conditional write in flight): nothing
of the write was stored, and AWS asks for a retry. The write is sent again; a key left
free is created, never told taken."""

from __future__ import annotations

import pytest

from file_storage import PreconditionFailedError
from tests.faults.conftest import SMALL, MakeBackend, chunks
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.s3

MiB = 1 << 20
CONFLICT = {"status": 409, "code": "ConditionalRequestConflict"}


async def test_a_create_that_raced_a_delete_is_sent_again_and_done(
    make_backend: MakeBackend, proxy: FaultProxy, s3_bucket: str
) -> None:
    backend = make_backend(max_size_bytes=10_000)
    put = f"PUT /{s3_bucket}/storage/k.bin"
    proxy.fail_next(2, match=put, **CONFLICT)
    assert await backend.save("k.bin", b"k" * 600, overwrite=False) == "k.bin"
    assert proxy.count(put) == 3
    assert await backend.load("k.bin") == b"k" * 600
    assert (await backend.get_usage("")).used == 600


async def test_a_replace_that_raced_another_request_is_sent_again_and_done(
    make_backend: MakeBackend, proxy: FaultProxy, s3_bucket: str
) -> None:
    backend = make_backend()
    await backend.save("k.bin", b"a" * 10)
    etag = (await backend.stat("k.bin")).etag
    put = f"PUT /{s3_bucket}/storage/k.bin"
    proxy.fail_next(1, match=put, **CONFLICT)
    await backend.save("k.bin", b"b" * 20, if_match=etag)
    assert await backend.load("k.bin") == b"b" * 20


async def test_a_long_create_whose_completion_raced_is_completed_again(
    make_backend: MakeBackend, proxy: FaultProxy, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL)
    data = bytes(range(256)) * (12 * MiB // 256)
    completion = f"POST /{s3_bucket}/storage/long.bin?uploadId="
    proxy.fail_next(1, match=completion, **CONFLICT)
    await backend.save("long.bin", chunks(data), overwrite=False)
    assert proxy.count(completion) == 2
    assert await backend.load("long.bin") == data


async def test_a_key_that_stays_busy_is_a_failed_condition(
    make_backend: MakeBackend, proxy: FaultProxy, s3_bucket: str
) -> None:
    backend = make_backend(max_size_bytes=10_000)
    put = f"PUT /{s3_bucket}/storage/k.bin"
    proxy.fail_next(10, match=put, **CONFLICT)
    with pytest.raises(PreconditionFailedError, match="409"):
        await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert proxy.count(put) == 4  # a bounded number of tries
    proxy.clear()
    assert not await backend.exists("k.bin")
    assert (await backend.get_usage("")).used == 0
