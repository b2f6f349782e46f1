"""S3 only: conditional and header-carrying writes through multipart uploads, and what a
refused one leaves (nothing: no object, no open upload)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import PreconditionFailedError, S3StorageBackend
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.s3util import open_uploads

pytestmark = pytest.mark.s3

MiB = 1 << 20


@pytest.fixture
async def small_parts(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[S3StorageBackend]:
    """A backend whose writes above 5 MiB are multipart uploads (S3's smallest parts)."""
    backend = S3StorageBackend(
        s3_bucket,
        endpoint_url=moto_endpoint,
        access_key_id=FAKE_KEY_ID,
        secret_access_key=FAKE_SECRET,
        addressing_style="path",
        multipart_threshold=5 * MiB,
        multipart_chunk_size=5 * MiB,
    )
    yield backend
    await backend.aclose()


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
