"""The S3 backend's multipart uploads: when they start, parts in parallel, aborted on
failure or cancellation, checksums and SSE on every write. What both transports do runs
on each (``make_on_each_transport``); the rest is aiobotocore's (its event hooks).

The moto server is observed with a plain boto3 client; nothing about the server is mocked.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from file_storage import StorageUnavailableError
from file_storage.backends.s3._checksums import crc32
from tests.backends.conftest import SMALL, MiB, client_of
from tests.s3util import MakeBackend, blocks, open_uploads, s3_backends, stored_keys

pytestmark = pytest.mark.s3


@pytest.fixture(params=["aioboto3", "obstore"])
async def make_on_each_transport(
    request: pytest.FixtureRequest, moto_endpoint: str, s3_bucket: str
) -> AsyncIterator[MakeBackend]:
    """``make_backend`` on each S3 transport: aiobotocore, then obstore (``client=``)."""
    async with s3_backends(moto_endpoint, s3_bucket, client=request.param) as make:
        yield make


# ---------------------------------------------------------------- multipart uploads


async def test_stream_above_threshold_is_a_multipart_upload(
    make_on_each_transport: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_on_each_transport(**SMALL)
    # blocks that are not parts: the transport cuts them into parts of 5, 5 and 2 MiB
    await backend.save(
        "big.bin",
        blocks(3 * MiB, 4 * MiB, 5 * MiB),
        content_type="video/webm",
        metadata={"Who": "me"},
    )
    head = raw.head_object(Bucket=s3_bucket, Key="storage/big.bin", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"')
    assert head["ContentLength"] == 12 * MiB
    assert head["ContentType"] == "video/webm"
    assert head["Metadata"] == {"who": "me"}
    assert await backend.get_size("big.bin") == 12 * MiB
    assert (
        await backend.load("big.bin")
        == bytes([0]) * 3 * MiB + bytes([1]) * 4 * MiB + bytes([2]) * 5 * MiB
    )


@pytest.mark.s3_needs("stores_checksums")
async def test_multipart_upload_keeps_a_crc32(
    make_backend: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL)
    await backend.save("big.bin", blocks(6 * MiB, 6 * MiB))
    head = raw.head_object(Bucket=s3_bucket, Key="storage/big.bin", ChecksumMode="ENABLED")
    assert "ChecksumCRC32" in head


async def test_stream_below_threshold_is_one_put(
    make_backend: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL)
    await backend.save("small.bin", blocks(MiB, 3 * MiB))
    head = raw.head_object(Bucket=s3_bucket, Key="storage/small.bin")
    assert "-" not in head["ETag"]
    assert await backend.load("small.bin") == bytes([0]) * MiB + bytes([1]) * 3 * MiB


@pytest.mark.s3_needs("stores_checksums")
async def test_one_put_keeps_our_crc32(make_backend: MakeBackend, raw: Any, s3_bucket: str) -> None:
    backend = make_backend(**SMALL)
    await backend.save("small.bin", blocks(MiB, 3 * MiB))
    head = raw.head_object(Bucket=s3_bucket, Key="storage/small.bin", ChecksumMode="ENABLED")
    data = bytes([0]) * MiB + bytes([1]) * 3 * MiB
    assert head["ChecksumCRC32"] == crc32(data)  # the server got and kept our checksum


async def test_upload_file_above_threshold_sends_parts(
    make_backend: MakeBackend, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    backend = make_backend(**SMALL)
    data = os.urandom(12 * MiB)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    seen: list[tuple[int, int | None]] = []
    await backend.upload_file(
        path, "big.bin", metadata={"k": "v"}, progress=lambda d, t: seen.append((d, t))
    )
    head = raw.head_object(Bucket=s3_bucket, Key="storage/big.bin")
    assert head["ETag"].endswith('-3"')
    assert head["Metadata"] == {"k": "v"}
    assert seen[-1] == (12 * MiB, 12 * MiB)
    assert await backend.load("big.bin") == data


async def test_upload_file_of_a_file_replaced_midway_sends_one_version(
    make_on_each_transport: MakeBackend, tmp_path: Path
) -> None:
    # a tool writes a new version of the file and renames it over the old one while its
    # parts go up: every part comes from the file as opened, never some from each
    backend = make_on_each_transport(**SMALL, max_concurrency=1)
    old, new = os.urandom(11 * MiB), os.urandom(11 * MiB)
    path = tmp_path / "big.bin"
    path.write_bytes(old)

    def replace(done: int, total: int | None) -> None:
        if not (tmp_path / "new.bin").exists():
            (tmp_path / "new.bin").write_bytes(new)
            os.replace(tmp_path / "new.bin", path)

    await backend.upload_file(path, "big.bin", progress=replace)
    assert await backend.load("big.bin") == old


async def test_upload_file_of_a_file_rewritten_in_place_midway_fails_and_stores_nothing(
    make_on_each_transport: MakeBackend, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    # rewritten in place (same size): the parts sent hold two versions, so nothing is stored
    backend = make_on_each_transport(**SMALL, max_concurrency=1)
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(11 * MiB))
    rewritten: list[int] = []

    def rewrite(done: int, total: int | None) -> None:
        if not rewritten:
            rewritten.append(done)
            with path.open("r+b") as out:
                out.write(os.urandom(11 * MiB))

    with pytest.raises(StorageUnavailableError, match="local file changed while reading"):
        await backend.upload_file(path, "big.bin", progress=rewrite)
    assert stored_keys(raw, s3_bucket) == []
    assert open_uploads(raw, s3_bucket) == []


async def test_upload_file_below_threshold_is_one_put(
    make_backend: MakeBackend, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    backend = make_backend(**SMALL)
    path = tmp_path / "small.bin"
    path.write_bytes(b"y" * MiB)
    await backend.upload_file(path, "small.bin")
    assert "-" not in raw.head_object(Bucket=s3_bucket, Key="storage/small.bin")["ETag"]


async def test_parts_upload_in_parallel_up_to_max_concurrency(make_backend: MakeBackend) -> None:
    backend = make_backend(**SMALL, max_concurrency=2)
    client = await client_of(backend)
    in_flight = peak = 0
    pair = asyncio.Event()

    async def before(**_: Any) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            pair.set()
        # the first part waits for a second one: proof that two run at once
        await asyncio.wait_for(pair.wait(), timeout=10)

    def after(**_: Any) -> None:
        nonlocal in_flight
        in_flight -= 1

    client.meta.events.register("before-call.s3.UploadPart", before)
    client.meta.events.register("after-call.s3.UploadPart", after)
    await backend.save("p.bin", blocks(*[5 * MiB] * 6))
    assert peak == 2


async def test_stream_failing_after_some_parts_aborts_the_upload(
    make_on_each_transport: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_on_each_transport(**SMALL)

    async def dies() -> AsyncIterator[bytes]:
        async for block in blocks(6 * MiB, 5 * MiB, 5 * MiB):
            yield block
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await backend.save("broken.bin", dies())
    assert stored_keys(raw, s3_bucket) == []
    assert open_uploads(raw, s3_bucket) == []


async def test_cancelled_upload_aborts_the_multipart_upload(
    make_on_each_transport: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_on_each_transport(**SMALL)
    stalled = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"x" * 6 * MiB  # over the threshold: the multipart upload starts
        yield b"y" * 6 * MiB  # (obstore's writer takes a part only once the next comes)
        stalled.set()
        await asyncio.Event().wait()  # the client stalls until cancelled
        yield b""

    task = asyncio.create_task(backend.save("cancelled.bin", stalls()))
    await stalled.wait()  # the writer took both chunks: the upload exists, a part is sent
    assert len(open_uploads(raw, s3_bucket)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert open_uploads(raw, s3_bucket) == []
    assert stored_keys(raw, s3_bucket) == []


async def test_upload_cancelled_by_a_scope_is_aborted_before_the_caller_hears(
    make_on_each_transport: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    # an anyio cancel scope (FastAPI, Starlette) cancels every await inside it, the
    # abort's too: the parts in flight and the abort are waited for all the same
    backend = make_on_each_transport(**SMALL)
    with anyio.CancelScope() as scope:

        async def client_goes_away() -> AsyncIterator[bytes]:
            for block in (b"x", b"y", b"z"):
                yield block * 6 * MiB  # over the threshold: parts are in flight
            scope.cancel()
            await asyncio.Event().wait()
            yield b""

        await backend.save("cancelled.bin", client_goes_away())
    assert scope.cancelled_caught
    assert open_uploads(raw, s3_bucket) == []
    assert stored_keys(raw, s3_bucket) == []


async def test_cancel_while_the_upload_is_created_still_aborts_it(
    make_backend: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL)
    created, gate = asyncio.Event(), asyncio.Event()

    async def hold(**_: Any) -> None:
        created.set()  # S3 has made the upload; its id is still on the way back
        await gate.wait()

    client = await client_of(backend)
    client.meta.events.register("after-call.s3.CreateMultipartUpload", hold)
    task = asyncio.create_task(backend.save("late.bin", blocks(6 * MiB)))
    await created.wait()
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert open_uploads(raw, s3_bucket) == []
    assert stored_keys(raw, s3_bucket) == []


@pytest.mark.s3_needs("sse_over_http")
async def test_sse_is_sent_on_every_write(
    make_backend: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL, sse="AES256")
    await backend.save("one.bin", b"x")
    await backend.save("parts.bin", blocks(6 * MiB))
    await backend.copy("one.bin", "copy.bin")
    for name in ("one.bin", "parts.bin", "copy.bin"):
        head = raw.head_object(Bucket=s3_bucket, Key=f"storage/{name}")
        assert head["ServerSideEncryption"] == "AES256", name
