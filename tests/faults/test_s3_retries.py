"""S3 under faults: throttling, 5xx, dropped connections, stalls, a server that is down.

Every request goes through the fault proxy; the proxy's request log is the attempt count.
Backends make 3 attempts with 1 s timeouts (tests/faults/conftest.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)
from tests.faults.conftest import (
    ATTEMPTS,
    SMALL,
    TIMEOUT,
    MakeBackend,
    MiB,
    chunks,
)
from tests.faults.proxy import FaultProxy
from tests.s3util import open_uploads, stored_keys

pytestmark = pytest.mark.s3

PUT_A = "PUT /{bucket}/storage/a.txt"
# a request's slack on top of its timeouts: loopback round trips and Python
SLACK = 1.5


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- throttling and 5xx


async def test_throttling_for_fewer_than_max_attempts_succeeds(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend()
    proxy.fail_next(ATTEMPTS - 1, status=503, code="SlowDown")
    await backend.save("a.txt", b"hello")
    assert proxy.count(PUT_A.format(bucket=s3_bucket)) == ATTEMPTS
    assert raw.get_object(Bucket=s3_bucket, Key="storage/a.txt")["Body"].read() == b"hello"


async def test_throttling_on_every_attempt_raises_unavailable_naming_the_attempts(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend()
    proxy.fail_next(ATTEMPTS, status=503, code="SlowDown")
    with pytest.raises(StorageUnavailableError) as info:
        await backend.save("a.txt", b"hello")
    assert str(info.value) == "save 'a.txt': S3 unavailable after 3 attempts (503 SlowDown)"
    assert proxy.count() == ATTEMPTS
    assert stored_keys(raw, s3_bucket) == []


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "ServiceUnavailable")])
async def test_server_errors_on_reads_are_retried(
    make_backend: MakeBackend, proxy: FaultProxy, status: int, code: str
) -> None:
    backend = make_backend()
    await backend.save("a.txt", b"hello")
    proxy.fail_next(ATTEMPTS - 1, status=status, code=code, match="GET")
    assert await backend.load("a.txt") == b"hello"
    proxy.fail_next(ATTEMPTS - 1, status=status, code=code, match="HEAD")
    assert (await backend.stat("a.txt")).size == 5
    proxy.fail_next(ATTEMPTS - 1, status=status, code=code, match="GET")
    assert await backend.list_files() == ["a.txt"]


async def test_adaptive_retry_mode_retries_throttling(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    backend = make_backend(retry_mode="adaptive")
    proxy.fail_next(1, status=503, code="SlowDown")  # it also slows the client down
    await backend.save("a.txt", b"hello")
    assert proxy.count("PUT") == 2


async def test_wrong_credentials_fail_fast_without_retries(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    backend = make_backend()
    proxy.fail_next(1, status=403, code="InvalidAccessKeyId")
    with pytest.raises(StoragePermissionError) as info:
        await backend.save("a.txt", b"x")
    assert (info.value.operation, info.value.key) == ("save", "a.txt")
    assert proxy.count() == 1


# ---------------------------------------------------------------- dropped connections


async def test_reset_in_a_part_retries_that_part_alone_and_the_object_is_whole(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL)
    data = os.urandom(12 * MiB)
    proxy.reset_after(MiB, match="partNumber=2")  # 1 MiB into part 2, once
    await backend.save("big.bin", chunks(data))  # a stream: readable only once
    # aiohttp may re-send a request on a dropped connection itself, before botocore does
    assert [proxy.count(f"partNumber={n}") > 1 for n in (1, 2, 3)] == [False, True, False]
    assert proxy.count("?uploads") == 1
    body = raw.get_object(Bucket=s3_bucket, Key="storage/big.bin")["Body"].read()
    assert sha(body) == sha(data)
    assert open_uploads(raw, s3_bucket) == []


async def test_reset_in_a_part_of_upload_file_retries_that_part(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    backend = make_backend(**SMALL)
    data = os.urandom(11 * MiB)
    source = tmp_path / "video.webm"
    source.write_bytes(data)
    proxy.reset_after(3 * MiB, match="partNumber=3")
    await backend.upload_file(source, "video.webm")
    assert [proxy.count(f"partNumber={n}") > 1 for n in (1, 2, 3)] == [False, False, True]
    body = raw.get_object(Bucket=s3_bucket, Key="storage/video.webm")["Body"].read()
    assert sha(body) == sha(data)


async def test_reset_on_every_attempt_of_a_part_aborts_the_upload_leaving_nothing(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL)
    proxy.reset_after(MiB, times=ATTEMPTS, match="partNumber=2")
    with pytest.raises(StorageUnavailableError, match="after 3 attempts") as info:
        await backend.save("big.bin", chunks(os.urandom(12 * MiB)))
    assert (info.value.operation, info.value.key) == ("save", "big.bin")
    # botocore's attempts are the requests on the wire: aiohttp does not resend by itself
    assert proxy.count("partNumber=2") == ATTEMPTS
    assert stored_keys(raw, s3_bucket) == []
    assert open_uploads(raw, s3_bucket) == []


async def test_reset_in_a_short_stream_replays_the_buffered_body(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL)
    data = os.urandom(3 * MiB)  # below the threshold: buffered, sent as one PUT
    proxy.reset_after(MiB, match="PUT")
    await backend.save("short.bin", chunks(data))
    assert proxy.count("PUT") >= 2
    body = raw.get_object(Bucket=s3_bucket, Key="storage/short.bin")["Body"].read()
    assert sha(body) == sha(data)


async def test_lost_answer_to_the_completion_is_retried_and_the_object_is_whole(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL)
    data = os.urandom(11 * MiB)
    completion = f"POST /{s3_bucket}/storage/big.bin?uploadId="
    proxy.cut_response_after(0, match=completion)
    await backend.save("big.bin", chunks(data))
    assert proxy.count(completion) == 2  # moto answers the repeated completion again
    body = raw.get_object(Bucket=s3_bucket, Key="storage/big.bin")["Body"].read()
    assert sha(body) == sha(data)


async def test_retried_completion_answered_no_such_upload_checks_the_object(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(**SMALL)
    data = os.urandom(11 * MiB)
    completion = f"POST /{s3_bucket}/storage/big.bin?uploadId="
    proxy.cut_response_after(0, match=completion)  # S3 completed it; the answer is lost
    proxy.fail_next(1, status=404, code="NoSuchUpload", match=completion)  # as AWS says then
    await backend.save("big.bin", chunks(data))
    body = raw.get_object(Bucket=s3_bucket, Key="storage/big.bin")["Body"].read()
    assert sha(body) == sha(data)
    assert open_uploads(raw, s3_bucket) == []


async def test_completion_of_an_upload_aborted_meanwhile_fails_as_that_not_a_404(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    # the upload was aborted under the writer (a lifecycle rule, another process): S3
    # answers NoSuchUpload and no object is there; the save must say the write failed,
    # not that "the object" is missing (the HEAD's 404 is the check's, not the save's)
    backend = make_backend(**SMALL)
    completion = f"POST /{s3_bucket}/storage/big.bin?uploadId="
    proxy.fail_next(1, status=404, code="NoSuchUpload", match=completion)
    with pytest.raises(StorageError) as info:
        await backend.save("big.bin", chunks(os.urandom(11 * MiB)))
    assert not isinstance(info.value, ObjectNotFoundError)
    assert "NoSuchUpload" in str(info.value)
    assert stored_keys(raw, s3_bucket) == []
    assert open_uploads(raw, s3_bucket) == []


async def test_lost_answer_to_create_multipart_upload_leaves_one_empty_upload(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    # CreateMultipartUpload is the one request that is not idempotent: its retry makes a
    # second upload. The first has no parts (it stores nothing); a lifecycle rule
    # (AbortIncompleteMultipartUpload) removes it. Documented in docs/reliability.md.
    backend = make_backend(**SMALL)
    data = os.urandom(11 * MiB)
    proxy.cut_response_after(0, match="?uploads")
    await backend.save("big.bin", chunks(data))
    body = raw.get_object(Bucket=s3_bucket, Key="storage/big.bin")["Body"].read()
    assert sha(body) == sha(data)
    [orphan] = open_uploads(raw, s3_bucket)
    parts = raw.list_parts(Bucket=s3_bucket, Key="storage/big.bin", UploadId=orphan["UploadId"])
    assert parts.get("Parts", []) == []


async def test_connection_cut_while_reading_a_body_raises_unavailable(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    backend = make_backend()
    await backend.save("a.bin", os.urandom(MiB))
    proxy.cut_response_after(64 * 1024, match="GET")  # headers arrived, the body breaks
    with pytest.raises(StorageUnavailableError) as info:
        await backend.load("a.bin")
    assert (info.value.operation, info.value.key) == ("load", "a.bin")


async def test_download_cut_midway_leaves_nothing_at_the_target(
    make_backend: MakeBackend, proxy: FaultProxy, tmp_path: Path
) -> None:
    backend = make_backend()
    await backend.save("a.bin", os.urandom(MiB))
    proxy.cut_response_after(64 * 1024, match="GET")
    with pytest.raises(StorageUnavailableError):
        await backend.download_file("a.bin", tmp_path / "out" / "a.bin")
    assert list((tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------- stalls and a server down


async def test_stall_on_one_attempt_is_retried_after_the_read_timeout(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    backend = make_backend()
    proxy.stall_next(1, match="PUT")
    started = time.perf_counter()
    await backend.save("a.txt", b"hello")
    elapsed = time.perf_counter() - started
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK
    assert proxy.count("PUT") == 2


async def test_stall_on_every_attempt_times_out_within_the_configured_bound(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    backend = make_backend()
    proxy.stall_next(ATTEMPTS)
    started = time.perf_counter()
    with pytest.raises(StorageUnavailableError) as info:
        await backend.save("a.txt", b"hello")
    elapsed = time.perf_counter() - started
    # bound: attempts x read timeout (+ botocore's backoff, zero here)
    assert ATTEMPTS * TIMEOUT <= elapsed < ATTEMPTS * TIMEOUT + SLACK
    assert "S3 timed out after 3 attempts (ReadTimeoutError)" in str(info.value)


async def test_server_down_raises_unavailable_quickly(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    backend = make_backend()
    proxy.refuse()
    started = time.perf_counter()
    with pytest.raises(StorageUnavailableError) as info:
        await backend.exists("a.txt")
    assert time.perf_counter() - started < 1
    assert "S3 unreachable after 3 attempts (EndpointConnectionError)" in str(info.value)


async def test_server_back_after_being_down_serves_again(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    backend = make_backend()
    await backend.save("a.txt", b"before")  # a pooled keep-alive connection exists now
    proxy.refuse()  # which is reset, and new ones are refused
    with pytest.raises(StorageUnavailableError):
        await backend.load("a.txt")
    proxy.restore()
    assert await backend.load("a.txt") == b"before"


# ---------------------------------------------------------------- logs


async def test_debug_log_has_operation_key_size_duration_and_attempts(
    make_backend: MakeBackend, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="file_storage")
    backend = make_backend()
    proxy.fail_next(2)
    await backend.save("a.txt", b"hello")
    [done] = [r for r in caplog.records if r.getMessage().startswith("save 'a.txt' done")]
    assert done.levelno == logging.DEBUG
    fields = {name: getattr(done, name) for name in ("operation", "key", "size", "attempts")}
    assert fields == {"operation": "save", "key": "a.txt", "size": 5, "attempts": 3}
    assert done.duration > 0  # type: ignore[attr-defined]
    assert "5 bytes" in done.getMessage()
    assert "3 requests" in done.getMessage()


async def test_failure_is_logged_at_warning_with_the_attempts(
    make_backend: MakeBackend, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="file_storage")
    backend = make_backend()
    proxy.fail_next(ATTEMPTS)
    with pytest.raises(StorageUnavailableError):
        await backend.save("a.txt", b"x")
    [failure] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert failure.getMessage() == (
        "save failed: save 'a.txt': S3 unavailable after 3 attempts (503 SlowDown)"
    )


async def test_no_log_line_per_chunk_or_part(
    make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend = make_backend(**SMALL)
    await backend.save("warm.txt", b"x")  # the client is open: its debug line is out
    caplog.set_level(logging.DEBUG, logger="file_storage")
    await backend.save("big.bin", chunks(os.urandom(16 * MiB), size=64 * 1024))  # 256 chunks
    async for _ in backend.stream("big.bin", chunk_size=64 * 1024):
        pass
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("file_storage")]
    assert len(lines) == 2
    assert lines[0].startswith("save 'big.bin' done")
    assert "16777216 bytes" in lines[0]
    assert "6 requests" in lines[0]  # create, 4 parts of 5 MiB at most, complete
    assert lines[1].startswith("stream 'big.bin' done")
