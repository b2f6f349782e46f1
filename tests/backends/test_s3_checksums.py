"""What S3 uploads carry for the server to verify: STORAGE_S3_CHECKSUM (auto, crc32, md5, off).

Requests are observed as sent (botocore's before-send event). A server that does not keep
flexible checksums is played by dropping the CRC32 from its answers (after-call), which is
what Ceph RGW 16 does; that servers refuse an altered body is proven in
tests/faults/test_s3_integrity.py.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from file_storage import S3StorageBackend, StorageConfigError
from file_storage.backends.s3._checksums import crc32
from tests.s3util import MakeBackend, s3_backends

pytestmark = pytest.mark.s3

MiB = 1 << 20
SMALL: dict[str, Any] = {"multipart_threshold": 5 * MiB, "multipart_chunk_size": 5 * MiB}
UPLOADS = ("PutObject", "UploadPart", "CreateMultipartUpload")

Sent = list[tuple[str, dict[str, str]]]


@pytest.fixture
async def make_backend(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[MakeBackend]:
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make


async def watch(backend: S3StorageBackend, *, echo: bool = True) -> Sent:
    """Record the checksum headers of every upload request; ``echo=False`` plays a server
    that answers without the CRC32 it was sent."""
    sent: Sent = []
    client = await backend._client()

    def record(request: Any, event_name: str, **_: Any) -> None:
        headers = {
            name.lower(): value.decode() if isinstance(value, bytes) else value
            for name, value in request.headers.items()
            if name.lower() in ("content-md5", "x-amz-checksum-crc32", "x-amz-checksum-algorithm")
        }
        sent.append((event_name.rsplit(".", 1)[-1], headers))

    def drop_echo(parsed: dict[str, Any], **_: Any) -> None:
        parsed.pop("ChecksumCRC32", None)

    for operation in UPLOADS:
        client.meta.events.register(f"before-send.s3.{operation}", record)
        if not echo:
            client.meta.events.register(f"after-call.s3.{operation}", drop_echo)
    return sent


async def stream(data: bytes) -> AsyncIterator[bytes]:
    """A body of unknown length: above the threshold, a multipart upload."""
    for offset in range(0, len(data), MiB):
        yield data[offset : offset + MiB]


def md5_of(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def test_auto_sends_crc32_and_content_md5_until_the_server_answers(
    make_backend: MakeBackend,
) -> None:
    backend = make_backend()
    sent = await watch(backend)
    await backend.save("a.txt", b"hello")
    assert sent == [
        ("PutObject", {"x-amz-checksum-crc32": crc32(b"hello"), "content-md5": md5_of(b"hello")})
    ]


@pytest.mark.s3_needs("stores_checksums")
async def test_auto_keeps_to_crc32_where_the_server_returns_it(make_backend: MakeBackend) -> None:
    backend = make_backend(**SMALL)
    await backend.save("first.txt", b"first")
    sent = await watch(backend)
    await backend.save("a.txt", b"hello")
    await backend.save("big.bin", stream(b"x" * 6 * MiB))
    assert [name for name, _ in sent] == [
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
    ]
    assert all("content-md5" not in headers for _, headers in sent)
    assert all(
        "x-amz-checksum-crc32" in headers
        for name, headers in sent
        if name != "CreateMultipartUpload"
    )


async def test_auto_falls_back_to_content_md5_where_no_crc32_comes_back(
    make_backend: MakeBackend,
) -> None:
    backend = make_backend(**SMALL)
    sent = await watch(backend, echo=False)
    await backend.save("first.txt", b"first")
    await backend.save("a.txt", b"hello")
    data = b"x" * 6 * MiB
    await backend.save("big.bin", stream(data))
    later = sent[1:]
    assert [name for name, _ in later] == [
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
    ]
    assert later[0][1] == {"content-md5": md5_of(b"hello")}
    assert later[1][1] == {}  # the upload is made without a checksum algorithm
    assert {headers["content-md5"] for _, headers in later[2:]} == {
        md5_of(data[: 5 * MiB]),
        md5_of(data[5 * MiB :]),
    }
    assert all(len(headers) == 1 for _, headers in later[2:])
    assert await backend.load("big.bin") == data


@pytest.mark.parametrize(
    ("mode", "put_headers"),
    [
        ("crc32", {"x-amz-checksum-crc32"}),
        ("md5", {"content-md5"}),
        ("off", set()),
    ],
)
async def test_a_fixed_mode_sends_what_it_names_on_every_upload(
    make_backend: MakeBackend, mode: str, put_headers: set[str]
) -> None:
    backend = make_backend(checksum=mode, **SMALL)
    sent = await watch(backend)
    data = b"y" * 6 * MiB
    await backend.save("a.txt", b"hello")
    await backend.save("big.bin", stream(data))
    for name, headers in sent:
        if name != "CreateMultipartUpload":
            assert set(headers) == put_headers, name
    assert await backend.load("big.bin") == data


def test_an_unknown_checksum_mode_is_a_config_error() -> None:
    with pytest.raises(StorageConfigError, match="checksum"):
        S3StorageBackend("bucket", checksum="sha1")  # type: ignore[arg-type]
