"""A conditional write refused because of its own earlier try, which landed.

When the answer to a write is lost (the connection cut after the server stored it),
botocore sends it again, and so does aiohttp, once, on a pooled connection. For a
conditional write the resend is then checked against the object the first try stored:
``If-None-Match: *`` finds the key taken, ``If-Match`` finds a new ETag, and S3 answers
412. The write did land, so that 412 must not reach the caller as a failed condition:
the caller would report a conflict and, retrying under another name, leave the object
behind, counted by its quota and referenced by nothing.

A refusal answered to a write sent once is a refusal: nothing of the write can be
there. The backend's aiohttp session does not resend by itself (``_config``), so
botocore's count of retries (``RetryAttempts``) says whether an earlier try was sent.
A write refused after one was looks at its key (one HEAD) and succeeds when the object
there is its own: the same bytes (the MD5 ETag of a PutObject, the composite ETag of a
multipart upload, or, only where the ETag is no MD5 (SSE-KMS, SSE-C), the CRC32 S3
keeps), the same size, content type, stored headers and metadata, and
stored after the write began by the server's clock. Anything else keeps the refusal.
What is left ambiguous is what nothing on the wire can tell apart: another writer that
stored exactly the same object, within the clock's two seconds of slack, while this
write was being made; the key then holds exactly what the caller asked for, and the
caller is told so. The obstore transport does not resend a conditional write whose
answer was lost: that is an outage there, whose outcome the same look settles; it does
resend one answered 5xx (S3 may answer 500 InternalError to a write it stored), and its
error's text says so ("after 1 retries").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from file_storage._metadata import decode_value
from file_storage.backends.s3._checksums import INLINE_CHECKSUM_BYTES, crc32
from file_storage.backends.s3._errors import NOT_FOUND, condition_error, error_code, is_outage

__all__ = [
    "Fingerprint",
    "etag_is_md5",
    "own_object",
    "past_conflicts",
    "resent",
    "same_bytes",
    "same_headers",
    "worth_a_look",
]

logger = logging.getLogger("file_storage.backends.s3")

# Last-Modified and Date both have a resolution of one second, each truncated
SLACK = timedelta(seconds=2)
#: tries of a conditional write that S3 answers 409 ConditionalRequestConflict
CONFLICT_TRIES = 4

T = TypeVar("T")


async def past_conflicts(send: Callable[[], Awaitable[T]]) -> T:
    """``send()`` a conditional write, again while S3 answers it 409
    ConditionalRequestConflict: another request on the key (a delete that succeeded
    first, a conditional write still in flight) raced it, and nothing of it was stored.
    AWS asks for a retry ("Conditional writes"): told as a failed condition, a
    create-only writer would take the key for taken when it may be free. 0.1, 0.2 and
    0.4 s apart; the last refusal is raised (a failed condition: the key is busy).

    A 409 answered to a resend (botocore's, after an answer was lost) says nothing of the
    try before it, which may have landed, and raced the resend: the error of a later
    send then counts as resent (``resent``), though botocore sent that one once."""
    earlier = False  # a try before a 409 was sent: it may have landed
    for attempt in range(CONFLICT_TRIES - 1):
        try:
            return await send()
        except Exception as exc:
            if error_code(exc) != "ConditionalRequestConflict":
                _after_tries(exc, earlier)
                raise
            earlier = earlier or resent(exc)
            logger.info("a conditional write raced another request on its key: sent again")
        await asyncio.sleep(0.1 * 2**attempt)
    try:
        return await send()
    except Exception as exc:
        _after_tries(exc, earlier)
        raise


# set on the error of a send that came after an earlier try, which may have landed
_RESENT_ATTR = "_file_storage_resent"


def _after_tries(exc: BaseException, earlier: bool) -> None:
    if earlier:
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _RESENT_ATTR, True)


def resent(exc: BaseException) -> bool:
    """Whether the request that failed with ``exc`` was sent more than once: botocore's
    answer says how often it retried; the obstore transport's errors carry no answer, but
    their text does (object_store retries a 5xx answer, and S3 may answer 500 to a write
    it stored)."""
    if getattr(exc, _RESENT_ATTR, False):  # past_conflicts sent it after an earlier try
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        retries = response.get("ResponseMetadata", {}).get("RetryAttempts")
    elif "obstore.exceptions" in sys.modules:
        from file_storage.backends.s3 import _obstore_errors

        retries = _obstore_errors.retries(exc)
    else:
        return False
    return isinstance(retries, int) and retries > 0


def worth_a_look(exc: BaseException, condition: dict[str, str] | None) -> bool:
    """Whether the conditional write that failed with ``exc`` may have stored its own
    object: refused after a resend (because of its first try), or every answer lost
    (its outcome unknown). A plain write, or one refused on its only try, may not."""
    if not condition:
        return False
    refused = condition_error(exc, "IfNoneMatch" in condition) is not None
    return (refused and resent(exc)) or is_outage(exc)


# the headers a write stores with the object (its content type, and those asked for)
STORED_HEADERS = ("ContentType", "CacheControl", "ContentDisposition")


def same_headers(head: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether the object has the content type, headers and metadata the write sent (a
    header it did not send: the object has none). Metadata values are compared decoded:
    S3 decodes the RFC 2047 words of a value when storing it and encodes it again when
    answering, not necessarily in the same words."""
    return bool(
        all(head.get(name) == params.get(name) for name in STORED_HEADERS)
        and _decoded(head.get("Metadata") or {}) == _decoded(params.get("Metadata") or {})
    )


def _decoded(metadata: dict[str, Any]) -> dict[str, str]:
    return {str(name).lower(): decode_value(str(value)) for name, value in metadata.items()}


class Fingerprint:
    """The size, MD5 and CRC32 of a body sent, to tell it from another object's."""

    __slots__ = ("crc32", "md5", "size")

    def __init__(self, data: bytes) -> None:
        self.size = len(data)
        self.md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        self.crc32 = crc32(data)

    @classmethod
    async def of(cls, data: bytes) -> Fingerprint:
        """Hashed in a thread when large: zlib and hashlib release the GIL."""
        if len(data) <= INLINE_CHECKSUM_BYTES:
            return cls(data)
        return await asyncio.to_thread(cls, data)


def same_bytes(head: dict[str, Any], sent: Fingerprint) -> bool:
    """Whether the object holds the bytes ``sent``, as far as its ETag or stored CRC32
    shows. The ETag is the MD5 of the bytes unless the object is encrypted with SSE-KMS
    or SSE-C: only then does the CRC32 the server keeps decide (anyone can make other
    bytes of the same CRC32, never of the same MD5)."""
    if head.get("ContentLength") != sent.size:
        return False
    if str(head.get("ETag", "")).strip('"').lower() == sent.md5:
        return True
    stored = head.get("ChecksumCRC32")
    return not etag_is_md5(head) and isinstance(stored, str) and stored == sent.crc32


def etag_is_md5(head: dict[str, Any]) -> bool:
    """Whether the ETag of the object of ``head`` is made of MD5s of its bytes (AWS,
    "Checking object integrity"): not with SSE-KMS (``aws:kms``, ``aws:kms:dsse``) or
    SSE-C."""
    encryption = str(head.get("ServerSideEncryption") or "")
    return not encryption.startswith("aws:kms") and not head.get("SSECustomerAlgorithm")


async def own_object(
    client: Any,
    bucket: str,
    key: str,
    started: float,
    matches: Callable[[dict[str, Any]], bool],
) -> dict[str, Any] | None:
    """The HEAD of the object at ``key`` when it is the refused write's own (``matches``
    says whether it holds the write's bytes and headers) and was stored after the write
    began (``started``, ``time.monotonic()``); ``None``: it is not, or cannot be known
    (the look-up failed: the refusal stands, as it did before the look-up)."""
    try:
        head: dict[str, Any] = await client.head_object(
            Bucket=bucket, Key=key, ChecksumMode="ENABLED"
        )
    except Exception as exc:
        if error_code(exc) not in NOT_FOUND:
            logger.warning(
                "could not check whether a refused conditional write of %r had landed (%s)",
                key,
                type(exc).__name__,
            )
        return None
    if not matches(head) or not _stored_since(head, started):
        return None
    logger.info("a conditional write of %r was refused by its own earlier try: done", key)
    return head


def _stored_since(head: dict[str, Any], started: float) -> bool:
    """Whether the object's Last-Modified is no earlier than ``started``, in the server's
    time: its ``Date`` now, less the time that has passed here since then."""
    modified = head.get("LastModified")
    date = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if modified is None or not isinstance(date, str):
        return False
    try:
        now = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return False
    if now.tzinfo is None:  # "-0000", asctime: an HTTP date is GMT (RFC 9110, 5.6.7)
        now = now.replace(tzinfo=UTC)
    began = now - timedelta(seconds=time.monotonic() - started) - SLACK
    try:
        return bool(modified >= began)
    except TypeError:  # one of them naive: not comparable
        return False
