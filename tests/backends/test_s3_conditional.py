"""S3 only: conditional and header-carrying writes through multipart uploads, and what a
refused one leaves (nothing: no object, no open upload), on both transports.

Servers that do not check conditions on CompleteMultipartUpload (Ceph RGW 16) refuse such
writes up front with StorageConfigError; the probe that tells is compared with what
tests/s3util.py declares about the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    PreconditionFailedError,
    S3StorageBackend,
    StorageConfigError,
    StorageError,
)
from file_storage.backends.s3._conditions import Support
from tests.s3util import SERVER, open_uploads, s3_backends, stored_keys

pytestmark = pytest.mark.s3

MiB = 1 << 20


@pytest.fixture(params=["aioboto3", "obstore"])
async def small_parts(
    request: pytest.FixtureRequest, moto_endpoint: str, s3_bucket: str
) -> AsyncIterator[S3StorageBackend]:
    """A backend whose writes above 5 MiB are multipart uploads (S3's smallest parts),
    on each transport."""
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make(multipart_threshold=5 * MiB, multipart_chunk_size=5 * MiB, client=request.param)


async def blocks(count: int, fill: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield bytes([fill]) * MiB


@pytest.mark.s3_needs("conditional_completion")
async def test_create_only_multipart_stream_is_refused_at_completion_and_aborted(
    small_parts: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    await small_parts.save("big.bin", b"first")
    with pytest.raises(PreconditionFailedError):
        await small_parts.save("big.bin", blocks(12, 1), overwrite=False)
    assert open_uploads(raw, s3_bucket) == []
    assert await small_parts.load("big.bin") == b"first"


@pytest.mark.s3_needs("conditional_completion")
async def test_create_only_multipart_file_lands_once(
    small_parts: S3StorageBackend, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"\x02" * 11 * MiB)
    await small_parts.upload_file(source, "big.bin", overwrite=False, cache_control="no-store")
    head = raw.head_object(Bucket=s3_bucket, Key="storage/big.bin")
    assert head["ETag"].endswith('-3"')  # really a multipart upload
    assert head["CacheControl"] == "no-store"
    with pytest.raises(PreconditionFailedError):
        await small_parts.upload_file(source, "big.bin", overwrite=False)
    assert open_uploads(raw, s3_bucket) == []


async def test_multipart_copy_keeps_headers(
    small_parts: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    small_parts._copy_threshold = 5 * MiB  # UploadPartCopy from 5 MiB on
    await small_parts.save(
        "a.bin", blocks(6, 3), cache_control="max-age=60", content_disposition="inline"
    )
    await small_parts.copy("a.bin", "b.bin", cache_control="no-cache")
    info = await small_parts.stat("b.bin")
    assert (info.cache_control, info.content_disposition) == ("no-cache", "inline")


# -------------------------------------------------- servers that check less (Ceph RGW 16)

#: what the server checks, as tests/s3util.py declares it
DECLARED = Support(
    if_match="quoted" if "if_match_on_put" in SERVER.features else "bare",
    completion=frozenset(
        name
        for name, feature in (
            ("IfNoneMatch", "conditional_completion"),
            ("IfMatch", "if_match_completion"),
        )
        if feature in SERVER.features
    ),
)
REFUSALS = (PreconditionFailedError, StorageConfigError)


def only_this(raw: Any, bucket: str, keys: list[str]) -> None:
    """The bucket holds exactly ``keys`` (under the prefix) and no open upload."""
    assert open_uploads(raw, bucket) == []
    assert stored_keys(raw, bucket) == [f"storage/{key}" for key in keys]


async def test_probe_learns_what_the_server_checks_and_leaves_nothing(
    small_parts: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    await small_parts.save("a.txt", b"first")
    etag = (await small_parts.stat("a.txt")).etag
    await small_parts.save("a.txt", b"second", if_match=etag)  # the first if_match probes
    assert small_parts._conditions.support == DECLARED
    assert await small_parts.load("a.txt") == b"second"
    only_this(raw, s3_bucket, ["a.txt"])


async def test_create_only_multipart_stream_never_replaces_an_existing_object(
    small_parts: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    await small_parts.save("big.bin", b"first")
    with pytest.raises(REFUSALS) as caught:
        await small_parts.save("big.bin", blocks(12, 1), overwrite=False)
    assert (caught.value.operation, caught.value.key) == ("save", "big.bin")
    checked = "IfNoneMatch" in DECLARED.completion
    expected = PreconditionFailedError if checked else StorageConfigError
    assert type(caught.value) is expected
    assert await small_parts.load("big.bin") == b"first"
    only_this(raw, s3_bucket, ["big.bin"])


async def test_create_only_multipart_file_never_replaces_an_existing_object(
    small_parts: S3StorageBackend, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"\x02" * 11 * MiB)
    await small_parts.save("big.bin", b"first")
    with pytest.raises(REFUSALS) as caught:
        await small_parts.upload_file(source, "big.bin", overwrite=False)
    assert (caught.value.operation, caught.value.key) == ("upload_file", "big.bin")
    assert await small_parts.load("big.bin") == b"first"
    only_this(raw, s3_bucket, ["big.bin"])


async def test_if_match_multipart_never_replaces_another_version(
    small_parts: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    await small_parts.save("big.bin", b"first")
    stale = (await small_parts.stat("big.bin")).etag
    assert stale is not None
    await small_parts.save("big.bin", b"second")
    with pytest.raises(REFUSALS):
        await small_parts.save("big.bin", blocks(6, 1), if_match=stale)
    assert await small_parts.load("big.bin") == b"second"
    only_this(raw, s3_bucket, ["big.bin"])


async def test_create_only_single_put_needs_no_probe(small_parts: S3StorageBackend) -> None:
    await small_parts.save("a.txt", b"first", overwrite=False)
    with pytest.raises(PreconditionFailedError):
        await small_parts.save("a.txt", blocks(1, 1), overwrite=False)  # below the threshold
    assert small_parts._conditions.support is None


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
async def test_without_checked_completion_a_conditional_multipart_is_refused_before_sending(
    small_parts: S3StorageBackend, raw: Any, s3_bucket: str, existing: bool
) -> None:
    small_parts._conditions.support = Support(if_match="quoted", completion=frozenset())
    if existing:
        await small_parts.save("big.bin", b"first")
    sent = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal sent
        async for block in blocks(12, 1):
            sent += len(block)
            yield block

    with pytest.raises(StorageConfigError, match="STORAGE_S3_MULTIPART_THRESHOLD_MB") as caught:
        await small_parts.save("big.bin", counted(), overwrite=False)
    assert (caught.value.operation, caught.value.key) == ("save", "big.bin")
    assert sent <= 6 * MiB  # read up to the threshold to know it is large, no further
    only_this(raw, s3_bucket, ["big.bin"] if existing else [])
    small = await small_parts.save("small.bin", b"fits one PutObject", overwrite=False)
    assert small == "small.bin"  # a single PutObject stays create-only and allowed


async def test_without_if_match_on_put_an_if_match_write_is_refused(
    small_parts: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    small_parts._conditions.support = Support(
        if_match=None, completion=frozenset({"IfNoneMatch", "IfMatch"})
    )
    await small_parts.save("a.txt", b"first")
    etag = (await small_parts.stat("a.txt")).etag
    with pytest.raises(StorageConfigError, match="If-Match") as caught:
        await small_parts.save("a.txt", b"second", if_match=etag)
    assert isinstance(caught.value, StorageError)
    assert await small_parts.load("a.txt") == b"first"
    only_this(raw, s3_bucket, ["a.txt"])
