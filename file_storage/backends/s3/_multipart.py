"""Moving bytes to and from S3: one request when small, parallel parts when large.

Above the threshold, uploads are multipart uploads (run by ``_parts``) and downloads
parallel ranged GETs; copies above CopyObject's limit use UploadPartCopy. The next part is
read only when a slot frees, so memory stays at about ``concurrency`` parts whatever the
size.

Every request body is bytes, so botocore can replay any request it retries: a part that
fails is retried on its own, never the whole upload.

Every PutObject and UploadPart carries a checksum of its body that the server verifies
before storing anything (:class:`Checksums`): CRC32 where the server keeps flexible
checksums, Content-MD5 where it ignores them (Ceph RGW 16 accepts a CRC32 without checking
it), both until the first answer tells which.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiofiles.threadpool.binary import AsyncBufferedIOBase

from file_storage._streams import CHUNK_SIZE, Progress, prepend, rechunk
from file_storage.backends._core import DELETE_BATCH
from file_storage.backends._support import check_unchanged, file_version, opened
from file_storage.backends.s3._checksums import Checksums
from file_storage.backends.s3._conditions import Conditions
from file_storage.backends.s3._errors import batch_delete_error
from file_storage.backends.s3._landed import (
    Fingerprint,
    own_object,
    past_conflicts,
    same_bytes,
    same_headers,
    worth_a_look,
)
from file_storage.backends.s3._parts import (
    MAX_PARTS,
    Multipart,
    Part,
    answered_etag,
    part_size_for,
    run_bounded,
)
from file_storage.errors import StorageError, StorageUnavailableError

# Upload bytes buffered in flight, whatever max_concurrency says: each part is held about
# three times on its way out (our buffer, aiohttp's payload, the socket's unsent buffer).
# Measured (docs/benchmarks.md), 256 MiB upload with 8 MiB parts: 8 in flight peaked at
# ~200 MiB RSS, 4 at ~130, 2 at ~85 MiB with throughput 0.97 of raw aioboto3. Smaller
# parts go more at a time (5 MiB parts: 3), up to max_concurrency.
MAX_UPLOAD_BUFFER = 16 * 2**20
MAX_PUT_SIZE = 5 * 2**30  # one PutObject or CopyObject ("Uploading objects", "Copying objects")


async def _slices(data: bytes, size: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for offset in range(0, len(view), size):
        yield bytes(view[offset : offset + size])


def _read_at(fd: int, offset: int, length: int, version: tuple[int, int, int]) -> bytes:
    """Read a part into one new bytes object (short at end of file), from the file as it
    was when the upload began."""
    # bytes, not a reused bytearray: botocore hands bytes to aiohttp without a copy,
    # while a large bytearray body is refused by aiohttp (it would block the loop)
    data = os.pread(fd, length, offset)
    check_unchanged(fd, version)
    return data


@dataclass
class Transfer:
    """A backend's client and sizes; keys here are full S3 keys (prefix included)."""

    client: Any
    bucket: str
    threshold: int
    part_size: int
    concurrency: int
    background: set[asyncio.Task[None]]
    integrity: Checksums  # the backend's: what one answer learns, every upload uses
    conditions: Conditions | None = None  # the backend's: what its server checks

    async def checked(
        self, condition: dict[str, str] | None, *, multipart: bool
    ) -> dict[str, str] | None:
        """``condition`` as the server checks it; a condition it would not check on this
        request raises :class:`StorageConfigError` before anything is sent."""
        if not condition or self.conditions is None:
            return condition
        if multipart:
            await self.conditions.for_completion(
                self.client, self.bucket, condition, self.threshold
            )
            return condition
        return await self.conditions.for_put(self.client, self.bucket, condition)

    def multipart(
        self,
        key: str,
        params: dict[str, Any],
        *,
        checksums: bool = True,
        part_size: int | None = None,
        condition: dict[str, str] | None = None,
    ) -> Multipart:
        in_flight = self.concurrency
        if part_size is not None:  # parts that carry bytes from here: bound the buffers
            in_flight = max(1, min(in_flight, MAX_UPLOAD_BUFFER // part_size))
        return Multipart(
            self.client,
            self.bucket,
            key,
            params,
            in_flight,
            self.background,
            self.integrity,
            checksums,
            condition or {},
        )

    async def put(
        self,
        key: str,
        data: bytes,
        params: dict[str, Any],
        condition: dict[str, str] | None = None,
    ) -> str | None:
        """One PutObject, with checksums that S3 checks before storing anything; return
        the stored object's ETag."""
        condition = await self.checked(condition, multipart=False)
        sums = await self.integrity.params(data)
        started = time.monotonic()
        try:
            response = await past_conflicts(
                lambda: self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, **sums, **params, **(condition or {})
                )
            )
        except Exception as exc:
            return await self.landed(exc, key, data, params, condition, started)
        self.integrity.observe(sums, response)
        return answered_etag(response)

    async def landed(
        self,
        exc: Exception,
        key: str,
        data: bytes,
        params: dict[str, Any],
        condition: dict[str, str] | None,
        started: float,
    ) -> str | None:
        """After a conditional PutObject of ``data`` failed with ``exc``: the ETag of the
        object there when it is this write's own, which landed although its answer was
        lost; else ``exc`` is raised. Only a refusal of a resent write (refused because
        of its first try) or an outage (every answer lost: the outcome is unknown) is
        looked into."""
        if not worth_a_look(exc, condition):
            raise exc
        sent = await Fingerprint.of(data)
        head = await own_object(
            self.client,
            self.bucket,
            key,
            started,
            lambda head: same_bytes(head, sent) and same_headers(head, params),
        )
        if head is None:
            raise exc
        return answered_etag(head)

    async def save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        params: dict[str, Any],
        condition: dict[str, str] | None = None,
    ) -> str | None:
        """Buffer up to the threshold: a stream that ends there is one PutObject, else
        parts. Return the stored object's ETag when S3 said it."""
        if isinstance(body, bytes):
            if len(body) <= MAX_PUT_SIZE:
                return await self.put(key, body, params, condition)
            body = _slices(body, self.part_size)
        try:
            head = bytearray()
            async for chunk in body:
                head += chunk
                if len(head) > self.threshold:
                    break
            if len(head) <= self.threshold:
                return await self.put(key, bytes(head), params, condition)
            return await self._save_parts(key, bytes(head), body, params, condition)
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _save_parts(
        self,
        key: str,
        head: bytes,
        rest: AsyncIterator[bytes],
        params: dict[str, Any],
        condition: dict[str, str] | None,
    ) -> str | None:
        """Send ``head`` then ``rest`` (length unknown) as parts of ``part_size`` bytes."""
        size = self.part_size

        async def jobs(upload: Multipart) -> AsyncGenerator[Awaitable[Part], None]:
            number = 0
            async for data in rechunk(prepend((head,), rest), size):
                number += 1
                if number > MAX_PARTS:
                    raise StorageError(
                        f"stream longer than {MAX_PARTS} parts of {size} bytes "
                        "(S3's part limit): raise multipart_chunk_size"
                    )
                yield upload.put_part(number, data)

        condition = await self.checked(condition, multipart=True)
        return await self.multipart(key, params, part_size=size, condition=condition).run(jobs)

    async def upload_file(
        self,
        key: str,
        path: Path,
        size: int,
        params: dict[str, Any],
        progress: Progress | None,
        condition: dict[str, str] | None = None,
    ) -> str | None:
        """Send a local file; above the threshold as parts, each read once its slot is free.
        Return the stored object's ETag when S3 said it."""
        if size <= self.threshold:
            async with opened(path, "rb") as src:
                data = await src.read(size + 1)
            if len(data) != size:
                raise StorageUnavailableError(
                    f"local file changed size while reading: {len(data)} of {size}"
                )
            etag = await self.put(key, data, params, condition)
            if progress is not None:
                progress(size, size)
            return etag
        part_size = part_size_for(size, self.part_size)
        done = 0
        condition = await self.checked(condition, multipart=True)
        # one descriptor for every part: a file renamed over ``path`` meanwhile (a tool
        # writing a new version) is not read from; one written in place fails the upload
        async with opened(path, "rb") as src:
            fd = src.fileno()
            version = await asyncio.to_thread(file_version, fd)
            if version[1] != size:
                raise StorageUnavailableError(
                    f"local file changed size while reading: {version[1]} of {size}"
                )

            async def put(upload: Multipart, number: int, offset: int, length: int) -> Part:
                nonlocal done
                data = await asyncio.to_thread(_read_at, fd, offset, length, version)
                if len(data) != length:
                    raise StorageUnavailableError(
                        f"local file changed size while reading: part {number} is short"
                    )
                part = await upload.put_part(number, data)
                done += length
                if progress is not None:
                    progress(done, size)
                return part

            async def jobs(upload: Multipart) -> AsyncGenerator[Awaitable[Part], None]:
                for number, offset in enumerate(range(0, size, part_size), start=1):
                    yield put(upload, number, offset, min(part_size, size - offset))

            upload = self.multipart(key, params, part_size=part_size, condition=condition)
            return await upload.run(jobs)

    async def delete_many(self, keys: list[str], user_key: Callable[[str], str | None]) -> None:
        """DeleteObjects in batches of 1000 (its limit); a refusal raises a typed error."""
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            response = await self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            if errors := response.get("Errors") or []:
                exc, named = batch_delete_error(errors, len(batch))
                exc.key = user_key(named)
                raise exc

    async def copy(
        self,
        src: str,
        dst: str,
        sse: dict[str, str],
        threshold: int,
        part_size: int,
        version_id: str | None = None,
        headers: dict[str, str] | None = None,
        source_etag: str | None = None,
    ) -> str | None:
        """Copy server-side, keeping content type, metadata and headers (``headers``, e.g.
        ``{"CacheControl": ...}``, replace the source's); multipart above ``threshold``.
        Return the copy's ETag when S3 answered it (a HEAD now could see a later writer's).

        ``version_id``: copy that version of ``src`` (a restore). ``source_etag``: copy
        ``src`` only while it has that ETag (a move's source, as the move found it): the
        HEAD carries ``If-Match`` and the copy ``x-amz-copy-source-if-match``, so another
        version fails the copy (412) before anything lands at ``dst``.
        """
        source = {"Bucket": self.bucket, "Key": src}
        if version_id is not None:
            source["VersionId"] = version_id
        looked = {} if source_etag is None else {"IfMatch": source_etag}
        head = await self.client.head_object(**source, **looked)
        # pinned: the copy takes only the version HEAD saw, where the server checks the
        # header (AWS S3; moto 5 checks it neither here nor on UploadPartCopy, so there
        # only the HEAD's If-Match refuses a version written before the copy began)
        pinned = {} if source_etag is None else {"CopySourceIfMatch": head["ETag"]}
        size: int = head["ContentLength"]
        if size <= threshold and headers:
            # REPLACE: every system header is then given anew, the source's kept by hand
            extra = {"ChecksumAlgorithm": "CRC32"} if self.integrity.crc32 else {}
            response = await self.client.copy_object(
                Bucket=self.bucket,
                Key=dst,
                CopySource=source,
                MetadataDirective="REPLACE",
                **_object_headers(head, headers),
                **extra,
                **sse,
                **pinned,
            )
            return copied_etag(response)
        if size <= threshold:
            # the copy gets a CRC32 of its own where the server keeps them
            extra = {"ChecksumAlgorithm": "CRC32"} if self.integrity.crc32 else {}
            response = await self.client.copy_object(
                Bucket=self.bucket,
                Key=dst,
                CopySource=source,
                MetadataDirective="COPY",
                **extra,
                **sse,
                **pinned,
            )
            return copied_etag(response)
        # a multipart copy makes a new object: carry content type and metadata by hand
        params = {**_object_headers(head, headers or {}), **sse}
        part_size = part_size_for(size, part_size)

        async def put(upload: Multipart, number: int, first: int, last: int) -> Part:
            # If-Match: every range comes from the version HEAD saw
            response = await self.client.upload_part_copy(
                Bucket=self.bucket,
                Key=dst,
                UploadId=upload.upload_id,
                PartNumber=number,
                CopySource=source,
                CopySourceRange=f"bytes={first}-{last}",
                CopySourceIfMatch=head["ETag"],
            )
            return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}

        async def jobs(upload: Multipart) -> AsyncGenerator[Awaitable[Part], None]:
            for number, offset in enumerate(range(0, size, part_size), start=1):
                yield put(upload, number, offset, min(offset + part_size, size) - 1)

        return await self.multipart(dst, params, checksums=False).run(jobs)

    async def download(
        self, key: str, local_path: Path, head: dict[str, Any], progress: Progress | None
    ) -> None:
        """Write the object into ``local_path``; above the threshold by parallel ranged GETs."""
        # If-Match pins every request to the version HEAD saw: an overwrite during the
        # download fails it (PreconditionFailed) instead of mixing two versions
        size: int = head["ContentLength"]
        part_size = self.part_size if size > self.threshold else max(size, 1)
        done = 0
        # one file, opened (made) once: a temp file opened again by its name for each
        # range would be whatever another process put at that name meanwhile; the ranges
        # take turns to write at their place in it
        writing = asyncio.Lock()

        async def fetch(out: AsyncBufferedIOBase, offset: int, length: int) -> None:
            nonlocal done
            extra = {"Range": f"bytes={offset}-{offset + length - 1}"} if length < size else {}
            response = await self.client.get_object(
                Bucket=self.bucket, Key=key, IfMatch=head["ETag"], **extra
            )
            body = response["Body"]
            async with body:
                while chunk := await body.read(CHUNK_SIZE):
                    async with writing:
                        await out.seek(offset)
                        await out.write(chunk)
                    offset += len(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, size)

        async def jobs(out: AsyncBufferedIOBase) -> AsyncGenerator[Awaitable[None], None]:
            for offset in range(0, size, part_size):
                yield fetch(out, offset, min(part_size, size - offset))

        async with opened(local_path, "wb") as out:
            await out.truncate(size)
            await run_bounded(jobs(out), self.concurrency)


_KEPT_HEADERS = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage")


def _object_headers(head: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """What a copy that makes a new object must repeat: the source's type, metadata and
    headers (a HeadObject answer), with ``overrides`` replacing some."""
    params: dict[str, Any] = {
        "ContentType": head.get("ContentType") or "application/octet-stream",
        "Metadata": head.get("Metadata") or {},
    }
    for name in _KEPT_HEADERS:
        if head.get(name):
            params[name] = head[name]
    params.update(overrides)
    return params


def copied_etag(response: dict[str, Any]) -> str | None:
    """The ETag S3 answered to a CopyObject, in its ``CopyObjectResult`` (``None``: none)."""
    result = response.get("CopyObjectResult")
    return answered_etag(result) if isinstance(result, dict) else None
