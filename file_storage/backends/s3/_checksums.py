"""The checksums S3 uploads carry, so that the server refuses a body altered in flight."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import zlib
from typing import Any

logger = logging.getLogger("file_storage.backends.s3")

INLINE_CHECKSUM_BYTES = 256 * 2**10  # hash bigger buffers in a thread, off the event loop


def crc32(data: bytes | bytearray | memoryview) -> str:
    """The base64 big-endian CRC32 S3 expects in ``x-amz-checksum-crc32``."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


def md5(data: bytes | bytearray | memoryview) -> str:
    """The base64 MD5 digest of ``Content-MD5`` (RFC 1864)."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def _digests(data: bytes, with_crc32: bool, with_md5: bool) -> dict[str, str]:
    params: dict[str, str] = {}
    if with_crc32:
        params["ChecksumAlgorithm"] = "CRC32"
        params["ChecksumCRC32"] = crc32(data)
    if with_md5:
        params["ContentMD5"] = md5(data)
    return params


CHECKSUM_MODES = ("auto", "crc32", "md5", "off")


class Checksums:
    """Which checksum uploads carry, so that the server refuses a body altered in flight.

    ``crc32``: a flexible checksum (``x-amz-checksum-crc32``), which S3 verifies, stores and
    returns; ``md5``: ``Content-MD5``, which every S3 server verifies (AWS, "PutObject");
    ``off``: neither. ``auto`` sends both until a PutObject or UploadPart answer shows
    whether the server keeps the CRC32 (it echoes it back, as AWS S3 does), then only
    CRC32 where it does and only Content-MD5 where it does not (Ceph RGW 16 accepts a CRC32
    but neither checks nor stores it). One per backend: the first answer decides for all.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode

    @property
    def crc32(self) -> bool:
        return self.mode in ("auto", "crc32")

    @property
    def md5(self) -> bool:
        return self.mode in ("auto", "md5")

    async def params(self, data: bytes, *, with_crc32: bool | None = None) -> dict[str, str]:
        """Request parameters carrying the checksums of ``data`` (hashed in a thread when
        large: zlib and hashlib release the GIL)."""
        use_crc32 = self.crc32 if with_crc32 is None else with_crc32
        use_md5 = self.md5
        if len(data) <= INLINE_CHECKSUM_BYTES:
            return _digests(data, use_crc32, use_md5)
        return await asyncio.to_thread(_digests, data, use_crc32, use_md5)

    def observe(self, sent: dict[str, str], response: dict[str, Any]) -> None:
        """In ``auto``, settle on CRC32 or Content-MD5 by whether the CRC32 came back."""
        if self.mode != "auto" or "ChecksumCRC32" not in sent:
            return
        if response.get("ChecksumCRC32"):
            self.mode = "crc32"
        else:
            self.mode = "md5"
            logger.info(
                "the S3 server does not return the CRC32 it was sent (no flexible checksums): "
                "uploads carry Content-MD5 instead"
            )
