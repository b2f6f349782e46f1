"""Amazon S3 and S3-compatible stores (MinIO, R2, Ceph), through one aiobotocore client.

The SDK is imported on first use, never by ``import file_storage``. Objects live at
``<prefix>/<key>`` in the bucket; every key handed back has the prefix stripped.
botocore retries throttling, 5xx answers, timeouts and dropped connections itself
(``max_attempts``, ``retry_mode``); every request body is bytes, so any request can be
replayed. With ``fallback_path``, writes that S3 cannot take after those retries go to a
local spool, which :meth:`S3StorageBackend.flush_spool` later uploads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from file_storage._keys import validate_key
from file_storage._metadata import encode_value
from file_storage._settings_common import check_base_url, checked
from file_storage._spool import Spool, read_range
from file_storage._streams import Progress
from file_storage.backends import _pages
from file_storage.backends._aws import aws_partition
from file_storage.backends._core import Method
from file_storage.backends._support import server_of
from file_storage.backends._write_options import PLAIN, WriteOptions
from file_storage.backends.s3 import _multipart as mp
from file_storage.backends.s3._checksums import Checksums
from file_storage.backends.s3._clients import LoopClients
from file_storage.backends.s3._conditions import Conditions
from file_storage.backends.s3._config import s3_options
from file_storage.backends.s3._deletes import S3Deletes
from file_storage.backends.s3._errors import condition_error, error_code
from file_storage.backends.s3._fallback import Fallback
from file_storage.backends.s3._info import head_info, utc
from file_storage.backends.s3._lifecycle import S3Rules
from file_storage.backends.s3._obstore import ObstoreTransfer
from file_storage.backends.s3._pages import presign_post, s3_entries
from file_storage.errors import (
    InvalidKeyError,
    PreconditionFailedError,
)
from file_storage.models import ObjectInfo, PresignedPost

__all__ = ["S3StorageBackend"]

logger = logging.getLogger("file_storage.backends.s3")


class S3StorageBackend(S3Deletes):
    """Stores objects in an S3 bucket under ``prefix``; see :class:`StorageBackend`.

    Args:
        bucket: the bucket, which must exist.
        prefix: the folder in the bucket this backend owns (``""`` or ``"/"``: the whole
            bucket).
        endpoint_url: an S3-compatible server; ``None`` for AWS.
        public_endpoint_url: the address clients use for presigned URLs, when it
            differs from ``endpoint_url`` (a server inside Docker, a proxy).
        addressing_style: ``"path"`` for MinIO-like servers; ``"auto"`` uses path
            style for IP and localhost endpoints and lets botocore decide otherwise.
        multipart_threshold: larger streams and files go as parallel multipart
            uploads and downloads as parallel ranged GETs.
        multipart_chunk_size: the part size, at least 5 MiB (S3's minimum part).
        max_concurrency: parts in flight per transfer.
        sse: server-side encryption for every write (``"AES256"`` or ``"aws:kms"``).
        checksum: what every upload request carries for the server to verify its body:
            ``"crc32"``, ``"md5"`` (Content-MD5), ``"off"``, or ``"auto"``: CRC32 where
            the server keeps flexible checksums, else Content-MD5 (docs/compatibility.md).
        max_attempts: total attempts per request (botocore retries the rest).
        retry_mode: botocore's ``"standard"`` or ``"adaptive"`` (client-side rate limit).
        connect_timeout: seconds to get a connection (a free pooled one, or a new one),
            per attempt.
        read_timeout: seconds to wait for data, per attempt.
        fallback_path: a local folder that keeps ``save``/``upload_file`` writes while
            S3 is unavailable (see docs/reliability.md); ``None``: such writes fail.
        flush_interval_seconds: with ``fallback_path``, upload the spool this often in
            the background; ``None``: only when :meth:`flush_spool` is called.
        client: the transport: ``"aioboto3"`` (aiobotocore), or ``"obstore"`` (the Rust
            ``object_store``, extra ``file_storage[obstore]``: less client CPU per
            request); what obstore cannot do still goes through aiobotocore, opened on
            first such use (docs/compatibility.md).
        quota_redis_url: keep quotas in this Redis, shared by every process using it
            (``STORAGE_QUOTA_REDIS_URL``, extra ``file_storage[redis]``); ``None``: in
            this process. As on :class:`~file_storage.LocalStorageBackend`.
        quota_redis_namespace: prefix of the ledger's Redis keys
            (``STORAGE_QUOTA_REDIS_NAMESPACE``); default derived from the endpoint,
            bucket and prefix.
        quota_lease_seconds: how long a write's reservation and key locks outlive a
            process that stopped renewing them (``STORAGE_QUOTA_LEASE_SECONDS``).
        quota_fail_open: with Redis unreachable, let writes through uncounted instead
            of failing them (``STORAGE_QUOTA_FAIL_OPEN``).
        expire_interval_seconds: accepted like the other backends; unused, as S3 applies
            expiry rules itself.
        public_base_url: the URL that serves the backend's root, that is ``prefix``,
            without a signature (a CDN whose origin path is ``/<prefix>``, or a public
            bucket's ``https://<bucket>.s3.<region>.amazonaws.com/<prefix>``), for
            :meth:`get_public_url` (``STORAGE_S3_PUBLIC_BASE_URL``).
    """

    _public_setting = "STORAGE_S3_PUBLIC_BASE_URL"
    _cancel_may_land = True  # a request S3 took completes whether its caller waits or not
    _streams_conditional_writes = True  # checked when the multipart upload completes

    #: objects above this go through UploadPartCopy (CopyObject takes at most 5 GiB)
    _copy_threshold: int = mp.MAX_PUT_SIZE
    #: copy part size: server-side, so big parts cost no memory and few requests
    _copy_part_size: int = 512 * 2**20

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "storage",
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | SecretStr | None = None,
        session_token: str | SecretStr | None = None,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        addressing_style: Literal["auto", "path", "virtual"] = "auto",
        max_size_bytes: int | None = None,
        quota_refresh_seconds: float | None = None,
        multipart_threshold: int = 16 * 2**20,
        multipart_chunk_size: int = 8 * 2**20,
        max_concurrency: int = 8,
        sse: Literal["AES256", "aws:kms"] | None = None,
        sse_kms_key_id: str | None = None,
        checksum: Literal["auto", "crc32", "md5", "off"] = "auto",
        max_attempts: int = 5,
        retry_mode: Literal["standard", "adaptive"] = "standard",
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_pool_connections: int | None = None,
        fallback_path: str | os.PathLike[str] | None = None,
        flush_interval_seconds: float | None = None,
        client: Literal["aioboto3", "obstore"] = "aioboto3",
        quota_redis_url: str | SecretStr | None = None,
        quota_redis_namespace: str | None = None,
        quota_lease_seconds: float = 60.0,
        quota_fail_open: bool = False,
        expire_interval_seconds: float | None = None,
        public_base_url: str | None = None,
    ) -> None:
        # an http(s) URL, or a path of the app's own (a route that proxies the bucket)
        self._public_base_url = checked("public_base_url", check_base_url, public_base_url)
        self._options = options = s3_options(
            bucket,
            prefix=prefix,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            endpoint_url=endpoint_url,
            public_endpoint_url=public_endpoint_url,
            addressing_style=addressing_style,
            max_size_bytes=max_size_bytes,
            quota_refresh_seconds=quota_refresh_seconds,
            multipart_threshold=multipart_threshold,
            multipart_chunk_size=multipart_chunk_size,
            max_concurrency=max_concurrency,
            sse=sse,
            sse_kms_key_id=sse_kms_key_id,
            checksum=checksum,
            max_attempts=max_attempts,
            retry_mode=retry_mode,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            fallback_path=fallback_path,
            flush_interval_seconds=flush_interval_seconds,
            client=client,
        )
        super().__init__(
            max_size_bytes=max_size_bytes,
            quota_refresh_seconds=quota_refresh_seconds,
            quota_redis_url=quota_redis_url,
            quota_redis_namespace=quota_redis_namespace,
            quota_lease_seconds=quota_lease_seconds,
            quota_fail_open=quota_fail_open,
            quota_identity=f"s3:{_spelled_once(endpoint_url)}/{options.bucket}/{options.root}",
            expire_interval_seconds=expire_interval_seconds,
        )
        self._bucket = options.bucket
        self._root = options.root
        self._rules = S3Rules(self._client, self._bucket, self._root)
        self._key_overhead = len(self._root.encode())
        path = options.fallback_path
        # a key held by another worker is waited for as long as one S3 request may take
        # to fail (every attempt timed out): a worker that hangs holding it fails the
        # others' writes of that key, typed, rather than blocking them for ever
        wait = options.max_attempts * (options.connect_timeout + options.read_timeout)
        spool = None if path is None else Spool(path, f"{options.bucket}/{options.root}", wait)
        self._fallback = Fallback(spool, options.flush_interval)
        # clients per event loop: an aiohttp session belongs to the loop it was opened in
        self._loops: dict[asyncio.AbstractEventLoop, LoopClients] = {}
        self._loops_lock = threading.Lock()  # threads may each run a loop of their own
        self._parents_clients: list[LoopClients] = []  # set aside in a forked child
        self._closing: set[asyncio.Task[None]] = set()  # clients closing after operations
        self._checksums = Checksums(options.checksum)
        # ETags of objects written under SSE-KMS are no MD5 (AWS, "Checking object integrity")
        self._md5_etags = options.sse.get("ServerSideEncryption") != "aws:kms"
        self._conditions = Conditions(self._root)  # what the server checks, probed on need
        self._stores: dict[str | None, Any] = {}  # obstore S3Stores, per endpoint

    def _store_place(self) -> str:
        # the server however its URL is spelled (a trailing "/", an upper-case scheme), or
        # AWS's partition, whose every endpoint reaches the same buckets: the quota's
        # identity (its Redis namespace) folds only the URL's case and trailing "/"
        url, region = self._options.endpoint_url, self._options.region
        server = aws_partition(url, region) or server_of(url or "")
        return f"s3:{server}/{self._bucket}/{self._root}"

    def __repr__(self) -> str:
        return (
            f"S3StorageBackend(bucket={self._bucket!r}, prefix={self._root[:-1]!r}, "
            f"endpoint_url={self._options.endpoint_url!r})"
        )

    # ---------------------------------------------------------------- keys

    def _full(self, key: str) -> str:
        return self._root + key

    def _user_key(self, full: str) -> str | None:
        """The key for a stored name, or ``None`` when the key grammar rejects it."""
        # other tools leave such names (console "folders" ending in "/", "a//b"): they
        # are not objects of this API, so listings skip them
        if not full.startswith(self._root):
            return None
        try:
            return validate_key(full[len(self._root) :], reserved_bytes=self._key_overhead)
        except InvalidKeyError:
            return None

    # ---------------------------------------------------------------- writes

    def _write_params(
        self, content_type: str, metadata: dict[str, str], options: WriteOptions = PLAIN
    ) -> dict[str, Any]:
        # header values: RFC 2047 encoded-words where a value would not survive as it is
        wire = {name: encode_value(value) for name, value in metadata.items()}
        return {
            "ContentType": content_type,
            "Metadata": wire,
            **_headers(options),
            **self._options.sse,
        }

    async def _conditional(
        self,
        key: str,
        options: WriteOptions,
        send: Callable[[dict[str, str]], Awaitable[str | None]],
    ) -> str | None:
        """Send a write S3 must check (``If-None-Match: *`` / ``If-Match``) or that carries
        headers: straight to S3, after the key's spooled version (the spool cannot check a
        condition, nor keeps headers), never absorbed by the spool. An ``if_match`` naming
        the spooled version names what its flush stored in S3."""
        uploaded: dict[str, str | None] = {}
        await self._fallback.flush_key(
            key, functools.partial(self._flush_spooled, uploaded=uploaded)
        )
        condition: dict[str, str] = {}
        if not options.overwrite:
            condition["IfNoneMatch"] = "*"
        elif options.if_match is not None:
            condition["IfMatch"] = uploaded.get(options.if_match) or options.if_match
        try:
            return await send(condition)
        except Exception as exc:
            refused = condition_error(exc, create_only=not options.overwrite) if condition else None
            if refused is None:
                raise
            raise refused from exc

    async def _transfer(self) -> mp.Transfer:
        kind = ObstoreTransfer if self._options.client == "obstore" else mp.Transfer
        return kind(
            client=await self._client(),
            bucket=self._bucket,
            threshold=self._options.threshold,
            part_size=self._options.chunk_size,
            concurrency=self._options.concurrency,
            background=self._here().background,
            integrity=self._checksums,
            conditions=self._conditions,
        )

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
        options: WriteOptions = PLAIN,
    ) -> str | None:
        params = self._write_params(content_type, metadata, options)
        transfer = await self._transfer()
        if not options.plain:
            save = functools.partial(transfer.save, self._full(key), body, params)
            return await self._conditional(key, options, save)
        send = functools.partial(transfer.save, self._full(key), params=params)
        return await self._fallback.save(key, body, content_type, metadata, send)

    async def _upload_file(
        self,
        local_path: Path,
        key: str,
        size: int,
        content_type: str,
        metadata: dict[str, str],
        progress: Progress | None,
        options: WriteOptions = PLAIN,
    ) -> str | None:
        params = self._write_params(content_type, metadata, options)
        transfer = await self._transfer()
        if not options.plain:
            upload = functools.partial(
                transfer.upload_file, self._full(key), local_path, size, params, progress
            )
            return await self._conditional(key, options, upload)
        send = functools.partial(
            transfer.upload_file, self._full(key), local_path, size, params, progress
        )
        return await self._fallback.upload_file(key, local_path, content_type, metadata, send)

    async def _copy(self, src: str, dst: str, options: WriteOptions = PLAIN) -> str | None:
        headers = _headers(options)
        if headers:  # the new headers go on S3's copy of src: a spooled src is sent first
            await self._fallback.flush_key(src, self._flush_spooled)
        with self._pinned(src) as source_etag:  # a move's copy: only the version it found
            copy = functools.partial(
                (await self._transfer()).copy,
                self._full(src),
                self._full(dst),
                self._options.sse,
                self._copy_threshold,
                self._copy_part_size,
                headers=headers,
                source_etag=source_etag,
            )
            return await self._fallback.copy(src, dst, copy, self._send_spooled)

    async def _delete(self, key: str) -> None:
        client = await self._client()
        delete = functools.partial(client.delete_object, Bucket=self._bucket, Key=self._full(key))
        await self._fallback.delete([key], delete)

    async def _delete_many(self, keys: list[str]) -> None:
        full = [self._full(key) for key in keys]
        delete = functools.partial((await self._transfer()).delete_many, full, self._user_key)
        await self._fallback.delete(keys, delete)

    # ---------------------------------------------------------------- reads

    async def _head(self, key: str) -> dict[str, Any]:
        client = await self._client()
        head: dict[str, Any] = await client.head_object(Bucket=self._bucket, Key=self._full(key))
        return head

    async def _load(self, key: str) -> bytes:
        if (spooled := await self._fallback.read(key)) is not None:
            return spooled
        client = await self._client()
        response = await client.get_object(Bucket=self._bucket, Key=self._full(key))
        body = response["Body"]
        async with body:
            data: bytes = await body.read()
        return data

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        if (spooled := await self._fallback.open(key)) is not None:
            entry, src = spooled  # the file is that entry's version, whatever comes later
            if if_match is not None and entry.etag != if_match:
                await asyncio.to_thread(src.close)
                raise PreconditionFailedError("the object changed since that ETag")
            async for chunk in read_range(src, start, end, chunk_size):
                yield chunk
            return
        async for chunk in self._stream_stored(key, start, end, chunk_size, if_match):
            yield chunk

    async def _stream_stored(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        """:meth:`_stream` of what S3 holds, whatever the spool holds."""
        client = await self._client()
        extra: dict[str, str] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        if if_match is not None:
            extra["IfMatch"] = if_match  # S3 answers 412 when the object was replaced
        try:
            response = await client.get_object(Bucket=self._bucket, Key=self._full(key), **extra)
        except Exception as exc:
            # S3 checks existence first: a 416 means the range starts at or past the
            # end (or the object is empty), an empty slice like bytes[start:end]
            if error_code(exc) == "InvalidRange":
                return
            raise
        body = response["Body"]
        async with body:  # releases the connection when the caller stops early
            async for chunk in body.iter_chunks(chunk_size):
                yield chunk

    async def _download_file(self, key: str, local_path: Path, progress: Progress | None) -> int:
        if (spooled := await self._fallback.copy_to(key, local_path)) is not None:
            if progress is not None:
                progress(spooled, spooled)
            return spooled
        head = await self._head(key)
        await (await self._transfer()).download(self._full(key), local_path, head, progress)
        length: int = head["ContentLength"]
        return length

    async def _exists(self, key: str) -> bool:
        if await self._fallback.get(key) is not None:
            return True
        try:
            await self._head(key)
        except Exception as exc:
            if self._not_found(exc):
                return False
            raise
        return True

    async def _stat(self, key: str) -> ObjectInfo:
        if (entry := await self._fallback.get(key)) is not None:
            return entry.info()
        return head_info(key, await self._head(key))

    def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        return self._fallback.merge(prefix, self._list_objects(prefix))

    async def _list_objects(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        client = await self._client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._full(prefix)
        )
        # S3 lists in UTF-8 byte order, which is code point order: Python's sorted()
        async for page in pages:
            for item in page.get("Contents") or ():
                key = self._user_key(item["Key"])
                if key is not None:
                    yield ObjectInfo(
                        key=key,
                        size=item["Size"],
                        last_modified=utc(item["LastModified"]),
                        etag=item.get("ETag"),
                    )

    def _iter_entries(
        self, prefix: str, start_after: str | None, recursive: bool, page_size: int
    ) -> AsyncIterator[_pages.Entry]:
        return s3_entries(self, prefix, start_after, recursive, page_size)

    async def _list_dirs(self, prefix: str) -> list[str]:
        client = await self._client()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=self._full(prefix), Delimiter="/"
        )
        folders: list[str] = []
        async for page in pages:
            for common in page.get("CommonPrefixes") or ():
                folder = self._user_key(common["Prefix"][:-1])
                if folder is not None:
                    folders.append(folder)
        return list(set(folders) | await self._fallback.folders(prefix))

    async def _presign(
        self,
        key: str,
        expires_in: int,
        method: Method,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> str:
        # the URL must reach the newest version (GET), or replace it (PUT)
        await self._fallback.flush_key(key, self._flush_spooled)
        client = await self._signing_client()
        # no SSE or checksum parameters: they would become signed headers that every
        # uploader must repeat; bucket default encryption covers presigned PUTs
        params: dict[str, str] = {"Bucket": self._bucket, "Key": self._full(key)}
        if method == "PUT" and content_type is not None:
            params["ContentType"] = content_type  # a signed header: the uploader must send it
        if method == "GET":
            served, disposition = await self._served_headers(key, content_type, filename)
            if served is not None:
                params["ResponseContentType"] = served
            if disposition is not None:
                params["ResponseContentDisposition"] = disposition
        url: str = await client.generate_presigned_url(
            "get_object" if method == "GET" else "put_object",
            Params=params,
            ExpiresIn=expires_in,
        )
        return url

    async def _presign_post(
        self, key: str, expires_in: int, max_bytes: int | None, content_type: str
    ) -> PresignedPost:
        await self._fallback.flush_key(key, self._flush_spooled)  # else it would land later
        client = await self._signing_client()
        return await presign_post(
            client, self._bucket, self._full(key), expires_in, max_bytes, content_type
        )


def _headers(options: WriteOptions) -> dict[str, str]:
    headers: dict[str, str] = {}
    if options.cache_control is not None:
        headers["CacheControl"] = options.cache_control
    if options.content_disposition is not None:
        headers["ContentDisposition"] = options.content_disposition
    return headers


def _spelled_once(endpoint_url: str | None) -> str:
    """The endpoint as the Redis ledger's namespace names it: scheme and host in lower
    case, no trailing ``/`` (processes spelling one URL two ways share one ledger). Kept
    otherwise as given, so that the namespace of a URL already spelled so is unchanged."""
    if endpoint_url is None:
        return "aws"
    parts = urlsplit(endpoint_url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
