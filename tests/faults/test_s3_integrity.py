"""A body altered on its way to the server is refused, and nothing is stored.

The fault proxy flips one byte of an upload's body in flight. Where the server checks what
the library sends for its backend's checksum mode, the upload fails with a typed error and
the bucket holds neither the object nor an open multipart upload. ``auto`` is proven both
on the first upload (before the server's first answer, when it sends CRC32 and Content-MD5)
and once settled (Ceph RGW 16: Content-MD5 only). moto checks neither checksum, so these
tests run on servers that do (``make test-ceph``).
"""

from __future__ import annotations

from typing import Any

import pytest

from file_storage import StorageError
from tests.faults.conftest import SMALL, MakeBackend, chunks
from tests.faults.proxy import FaultProxy
from tests.s3util import open_uploads, stored_keys

pytestmark = pytest.mark.s3

MiB = 1 << 20
# an unloaded local server answers a 5 MiB part in well under a second; CI is shared
SLOW_OK: dict[str, Any] = {"connect_timeout": 30, "read_timeout": 30}

MODES = [
    pytest.param("auto", False, marks=pytest.mark.s3_needs("checks_content_md5"), id="auto-first"),
    pytest.param("auto", True, marks=pytest.mark.s3_needs("checks_content_md5"), id="auto-settled"),
    pytest.param("md5", False, marks=pytest.mark.s3_needs("checks_content_md5"), id="md5"),
    pytest.param("crc32", False, marks=pytest.mark.s3_needs("checks_crc32"), id="crc32"),
]


@pytest.mark.parametrize(("mode", "settled"), MODES)
async def test_a_put_altered_in_flight_is_refused_and_nothing_is_stored(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    mode: str,
    settled: bool,
) -> None:
    backend = make_backend(checksum=mode, **SLOW_OK)
    if settled:  # the first answer has told auto what the server checks
        await backend.save("first.txt", b"first")
        await backend.delete("first.txt")
    proxy.corrupt_next(3, at=1000, match=f"PUT /{s3_bucket}/")
    with pytest.raises(StorageError) as info:
        await backend.save("doc.bin", bytes(range(256)) * 64)
    assert (info.value.operation, info.value.key) == ("save", "doc.bin")
    proxy.clear()
    assert stored_keys(raw, s3_bucket) == []


@pytest.mark.parametrize(("mode", "settled"), MODES)
async def test_a_part_altered_in_flight_fails_the_upload_and_nothing_is_stored(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    mode: str,
    settled: bool,
) -> None:
    backend = make_backend(checksum=mode, **SMALL, **SLOW_OK)
    if settled:
        await backend.save("first.txt", b"first")
        await backend.delete("first.txt")
    proxy.corrupt_next(3, at=MiB, match="&partNumber=2")
    data = bytes(range(256)) * (12 * MiB // 256)
    with pytest.raises(StorageError) as info:
        await backend.save("big.bin", chunks(data))
    assert (info.value.operation, info.value.key) == ("save", "big.bin")
    proxy.clear()
    assert stored_keys(raw, s3_bucket) == []
    assert open_uploads(raw, s3_bucket) == []


@pytest.mark.s3_needs("checks_content_md5")
async def test_an_unaltered_upload_after_a_refused_one_is_stored_intact(
    make_backend: MakeBackend, proxy: FaultProxy, s3_bucket: str
) -> None:
    backend = make_backend(**SLOW_OK)
    proxy.corrupt_next(3, at=10, match=f"PUT /{s3_bucket}/")
    with pytest.raises(StorageError):
        await backend.save("doc.txt", b"x" * 100)
    proxy.clear()
    await backend.save("doc.txt", b"y" * 100)
    assert await backend.load("doc.txt") == b"y" * 100
