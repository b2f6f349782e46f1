"""One multipart upload: create it, run its part jobs at most ``concurrency`` at a time,
complete it; abort it on any failure.

Parts run as tasks and the next job is pulled only when a slot frees, so memory stays at
about ``concurrency`` parts whatever the size. A multipart upload that fails or is
cancelled is aborted (shielded from a second cancellation), so no orphan upload keeps
costing storage and no partial object appears. A completion whose answer was lost is
retried by botocore; S3 may then say NoSuchUpload, or refuse a conditional completion
because of the object its own first try made: the object is checked instead.
What the parts carry (bytes read from a stream or a file, ranges copied server-side) is
``_multipart``'s: this module only runs them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from file_storage.backends._support import run_whole
from file_storage.backends.s3._checksums import Checksums, crc32
from file_storage.backends.s3._errors import NOT_FOUND, error_code
from file_storage.backends.s3._landed import (
    etag_is_md5,
    own_object,
    past_conflicts,
    same_headers,
    worth_a_look,
)

logger = logging.getLogger("file_storage.backends.s3")

T = TypeVar("T")
Part = dict[str, Any]

# AWS, "Amazon S3 multipart upload limits":
MAX_PARTS = 10_000  # parts per upload
MIN_PART_SIZE = 5 * 2**20  # every part but the last
MAX_PART_SIZE = 5 * 2**30


def part_size_for(size: int, preferred: int) -> int:
    """The part size to send ``size`` bytes in at most 10,000 parts."""
    return max(preferred, -(-size // MAX_PARTS))


async def run_bounded(jobs: AsyncGenerator[Awaitable[T], None], limit: int) -> list[T]:
    """Run what ``jobs`` yields, ``limit`` at a time; on an error cancel the rest, re-raise it."""
    results: list[T] = []
    pending: set[asyncio.Future[T]] = set()
    try:
        while True:
            while len(pending) >= limit:
                pending = await _reap(pending, results)
            try:
                job = await anext(jobs)
            except StopAsyncIteration:
                break
            pending.add(asyncio.ensure_future(job))
        while pending:
            pending = await _reap(pending, results)
    except BaseException as exc:
        for task in pending:
            task.cancel()
        late = None
        if pending:
            # to their end, however often the caller is cancelled meanwhile (an anyio
            # cancel scope): a part still in flight could land after the abort
            _, late = await run_whole(asyncio.wait(pending))
            for task in pending:  # a part that failed on its own: its error is not news
                if not task.cancelled():
                    task.exception()
        if late is not None:
            raise late from exc
        raise
    finally:
        await jobs.aclose()
    return results


async def _reap(pending: set[asyncio.Future[T]], results: list[T]) -> set[asyncio.Future[T]]:
    """Wait for one job to end; collect its result or raise its error."""
    done, rest = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    # read every exception so none is reported as "never retrieved"
    failures = [exc for task in done if (exc := task.exception()) is not None]
    if failures:
        raise failures[0]
    results.extend(task.result() for task in done)
    return rest


@dataclass
class Multipart:
    """One multipart upload to ``key``; ``params`` go to CreateMultipartUpload."""

    client: Any
    bucket: str
    key: str
    params: dict[str, Any]
    concurrency: int
    background: set[asyncio.Task[None]]
    integrity: Checksums
    checksums: bool = True  # False: the parts carry no data of ours (copies)
    condition: dict[str, str] = field(default_factory=dict)  # IfNoneMatch/IfMatch: completion
    upload_id: str = field(default="", init=False)

    def __post_init__(self) -> None:
        # the algorithm is fixed at creation: every part then carries a CRC32
        self.checksums = self.checksums and self.integrity.crc32

    async def run(
        self, jobs: Callable[[Multipart], AsyncGenerator[Awaitable[Part], None]]
    ) -> str | None:
        """Create the upload, run the part jobs, complete it; abort on any failure. Return
        the object's ETag (``None``: a retried completion, S3 had done it)."""
        extra = {"ChecksumAlgorithm": "CRC32"} if self.checksums else {}
        started = time.monotonic()
        create: asyncio.Future[dict[str, Any]] = asyncio.ensure_future(
            self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, **extra, **self.params
            )
        )
        try:
            # shielded: a cancel must not lose the id of an upload S3 may have created
            self.upload_id = (await asyncio.shield(create))["UploadId"]
        except asyncio.CancelledError:
            await self._cleanup(create)
            raise
        try:
            parts = await run_bounded(jobs(self), self.concurrency)
            parts.sort(key=lambda part: int(part["PartNumber"]))
            try:
                done = await past_conflicts(
                    lambda: self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=self.key,
                        UploadId=self.upload_id,
                        MultipartUpload={"Parts": parts},
                        **self.condition,  # checked when the object would appear: at completion
                    )
                )
            except Exception as exc:
                if worth_a_look(exc, self.condition):
                    # refused by another writer's object, or by this completion's own
                    # earlier try, which landed (its answer lost); or every answer lost:
                    # the caller could not try again, its own object would refuse it
                    head = await own_object(
                        self.client,
                        self.bucket,
                        self.key,
                        started,
                        lambda head: same_headers(head, self.params) and self._holds(head, parts),
                    )
                    if head is None:
                        raise
                    return answered_etag(head) or composite_etag(parts)
                if error_code(exc) != "NoSuchUpload" or not await self._completed(parts):
                    raise
                logger.debug("completion of %r was retried after S3 had done it", self.key)
                return None
        except BaseException:
            await self._cleanup(create)
            raise
        # Ceph RGW answers a completion with an empty ETag: the object's is known all the
        # same, from its parts (a HEAD now could see a later writer's object)
        return answered_etag(done) or composite_etag(parts)

    async def _completed(self, parts: list[Part]) -> bool:
        """True when the object holds exactly these parts: a retried completion that S3
        had already done answers NoSuchUpload (AWS, "CompleteMultipartUpload")."""
        try:
            head = await self.client.head_object(
                Bucket=self.bucket, Key=self.key, ChecksumMode="ENABLED"
            )
        except Exception as exc:
            if error_code(exc) in NOT_FOUND:
                return False  # aborted meanwhile (a lifecycle rule, another process)
            raise
        return self._holds(head, parts)

    def _holds(self, head: dict[str, Any], parts: list[Part]) -> bool:
        """Whether the object of ``head`` was completed from ``parts``: its ETag, or the
        composite CRC32 of theirs. The ETag compared quoted: Ceph RGW spells it bare."""
        etag = composite_etag(parts)
        if etag is not None and answered_etag(head) == etag:
            return True
        if not self.checksums or etag_is_md5(head):
            # an ETag of MD5s that is another says other bytes; only an SSE-KMS or SSE-C
            # ETag is no MD5, and then the CRC32s decide (a CRC32 anyone can match)
            return False
        crcs = b"".join(base64.b64decode(str(part["ChecksumCRC32"])) for part in parts)
        stored = str(head.get("ChecksumCRC32", "")).split("-", 1)[0]
        return stored == crc32(crcs)

    async def _cleanup(self, create: asyncio.Future[dict[str, Any]]) -> None:
        """Abort in a task of its own, kept referenced, so a second cancel cannot skip it."""
        task = asyncio.ensure_future(self._abort(create))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        # waited for to its end (an anyio cancel scope cancels every await): the caller
        # hears of the failure once nothing of the upload is left
        _, late = await run_whole(task)
        if late is not None:
            raise late

    async def _abort(self, create: asyncio.Future[dict[str, Any]]) -> None:
        """Abort the upload once it exists; S3 drops its parts. Log, never raise."""
        try:
            upload_id = (await create)["UploadId"]
        except Exception:
            return  # never created: nothing to abort
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=upload_id
            )
        except Exception as exc:
            if error_code(exc) == "NoSuchUpload":  # a retried abort, or already completed
                return
            logger.warning(
                "could not abort multipart upload of %r (%s); a bucket lifecycle rule "
                "(AbortIncompleteMultipartUpload) will remove it",
                self.key,
                type(exc).__name__,
            )

    async def put_part(self, number: int, data: bytes) -> Part:
        """Upload one part with its checksums, which S3 verifies (the completion repeats
        a CRC32)."""
        sums = await self.integrity.params(data, with_crc32=self.checksums)
        response = await self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
            **sums,
        )
        self.integrity.observe(sums, response)
        part: Part = {"PartNumber": number, "ETag": response["ETag"]}
        if self.checksums:
            part["ChecksumCRC32"] = sums["ChecksumCRC32"]
        return part


def answered_etag(response: dict[str, Any]) -> str | None:
    """The ETag S3 answered to a write (``None``: none in the answer), quoted as in the
    ``ETag`` header: Ceph RGW answers a copy's ``CopyObjectResult`` ETag bare."""
    etag = response.get("ETag")
    if not isinstance(etag, str) or not etag:
        return None
    return etag if etag.startswith(('"', 'W/"')) else f'"{etag}"'


def composite_etag(parts: list[Part]) -> str | None:
    """The ETag S3 gives an object completed from ``parts``: the MD5 of their MD5s and
    their count (``None``: a part's ETag is no MD5, as under SSE-KMS)."""
    try:
        digests = [bytes.fromhex(str(part["ETag"]).strip('"')) for part in parts]
    except ValueError:
        return None
    if any(len(digest) != 16 for digest in digests):
        return None
    joined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return f'"{joined}-{len(parts)}"'
