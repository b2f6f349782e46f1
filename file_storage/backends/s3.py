"""Amazon S3 and S3-compatible stores (MinIO, R2, Ceph), through one aiobotocore client.

The SDK is imported on first use, never by ``import file_storage``. Objects live at
``<prefix>/<key>`` in the bucket; every key handed back has the prefix stripped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from file_storage._keys import validate_key
from file_storage._streams import Progress
from file_storage.backends import _s3_multipart as mp
from file_storage.backends._s3_errors import batch_delete_error, error_code, map_s3_error
from file_storage.backends.base import DELETE_BATCH, Method, StorageBackend
from file_storage.errors import (
    InvalidKeyError,
    StorageConfigError,
    StorageError,
)
from file_storage.models import ObjectInfo

__all__ = ["S3StorageBackend"]

logger = logging.getLogger(__name__)

# legacy us-east-1 names allow capitals and "_" (AWS, "General purpose bucket naming rules")
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


def _load_sdk() -> tuple[ModuleType, ModuleType]:
    """Import aiobotocore and botocore's Config on first client creation."""
    try:
        import aiobotocore.session
        import botocore.config
    except ImportError as exc:
        raise StorageConfigError(
            "the S3 backend needs aioboto3: pip install 'aioboto3>=15'"
        ) from exc
    return aiobotocore.session, botocore.config


_shared_session: Any = None


def _session(session_module: ModuleType) -> Any:
    """One botocore session per process: it caches the service model, so clients after
    the first build in milliseconds instead of ~100 ms. Sessions are not bound to an
    event loop; each backend still owns its client, and credentials go to the client."""
    global _shared_session
    if _shared_session is None:
        _shared_session = session_module.get_session()
    return _shared_session


def _check_url(name: str, url: str | None) -> str | None:
    """Validate an endpoint URL without echoing it (it could hold credentials)."""
    if url is None:
        return None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise StorageConfigError(f"{name} must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise StorageConfigError(f"{name} must not contain credentials")
    if parts.query or parts.fragment:
        raise StorageConfigError(f"{name} must not have a query or fragment")
    return url.rstrip("/")


def _is_local(url: str) -> bool:
    """True for an IP or localhost endpoint, where virtual-host buckets cannot resolve."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StorageConfigError(f"{name} must be an int >= {minimum}")
    if maximum is not None and value > maximum:
        raise StorageConfigError(f"{name} must be at most {maximum}")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise StorageConfigError(f"{name} must be a positive number of seconds")
    return float(value)


def _choice(name: str, value: object, allowed: tuple[str | None, ...]) -> Any:
    if value not in allowed:
        raise StorageConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}")
    return value


def _secret(name: str, value: str | SecretStr | None) -> SecretStr | None:
    if value is None or isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        return SecretStr(value)
    raise StorageConfigError(f"{name} must be a str or SecretStr")


class S3StorageBackend(StorageBackend):
    """Stores objects in an S3 bucket under ``prefix``; see :class:`StorageBackend`.

    Args:
        bucket: the bucket, which must exist.
        prefix: the folder in the bucket this backend owns (``""``: the whole bucket).
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
        max_attempts: total attempts per request (botocore retries the rest).
    """

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
        max_attempts: int = 5,
        retry_mode: Literal["standard", "adaptive"] = "standard",
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_pool_connections: int | None = None,
    ) -> None:
        if max_size_bytes is not None:
            _int("max_size_bytes", max_size_bytes, 0)
        if quota_refresh_seconds is not None and (
            isinstance(quota_refresh_seconds, bool)
            or not isinstance(quota_refresh_seconds, int | float)
            or quota_refresh_seconds < 0
        ):
            raise StorageConfigError("quota_refresh_seconds must be a number of seconds >= 0")
        super().__init__(max_size_bytes=max_size_bytes, quota_refresh_seconds=quota_refresh_seconds)
        if not isinstance(bucket, str) or not _BUCKET_NAME.fullmatch(bucket):
            raise StorageConfigError("bucket must be a valid S3 bucket name")
        if not isinstance(prefix, str):
            raise StorageConfigError("prefix must be a str")
        if prefix:
            if prefix.startswith("/") or prefix.endswith("/"):
                raise StorageConfigError("prefix must not start or end with '/'")
            try:  # leave room for a "/" and at least one byte of key
                validate_key(prefix, reserved_bytes=2)
            except InvalidKeyError as exc:
                raise StorageConfigError(f"prefix is not valid: {exc.detail}") from None
        if not isinstance(region, str) or not region:
            raise StorageConfigError("region must be a non-empty str")
        if access_key_id is not None and not isinstance(access_key_id, str):
            raise StorageConfigError("access_key_id must be a str")
        self._secret_access_key = _secret("secret_access_key", secret_access_key)
        self._session_token = _secret("session_token", session_token)
        if (access_key_id is None) != (self._secret_access_key is None):
            raise StorageConfigError("set both access_key_id and secret_access_key, or neither")
        if self._session_token is not None and access_key_id is None:
            raise StorageConfigError("session_token needs access_key_id and secret_access_key")
        self._bucket = bucket
        self._root = f"{prefix}/" if prefix else ""
        self._key_overhead = len(self._root.encode())
        self._region = region
        self._access_key_id = access_key_id
        self._endpoint_url = _check_url("endpoint_url", endpoint_url)
        self._public_endpoint_url = _check_url("public_endpoint_url", public_endpoint_url)
        self._addressing_style: str = _choice(
            "addressing_style", addressing_style, ("auto", "path", "virtual")
        )
        self._threshold = _int("multipart_threshold", multipart_threshold, 0, mp.MAX_PUT_SIZE)
        self._chunk_size = _int(
            "multipart_chunk_size", multipart_chunk_size, mp.MIN_PART_SIZE, mp.MAX_PART_SIZE
        )
        self._concurrency = _int("max_concurrency", max_concurrency, 1)
        self._sse: dict[str, str] = {}
        if _choice("sse", sse, (None, "AES256", "aws:kms")) is not None:
            self._sse["ServerSideEncryption"] = str(sse)
        if sse_kms_key_id is not None:
            if sse != "aws:kms" or not isinstance(sse_kms_key_id, str) or not sse_kms_key_id:
                raise StorageConfigError("sse_kms_key_id needs sse='aws:kms'")
            self._sse["SSEKMSKeyId"] = sse_kms_key_id
        self._max_attempts = _int("max_attempts", max_attempts, 1)
        self._retry_mode: str = _choice("retry_mode", retry_mode, ("standard", "adaptive"))
        self._connect_timeout = _seconds("connect_timeout", connect_timeout)
        self._read_timeout = _seconds("read_timeout", read_timeout)
        self._pool_size = (
            max(10, 2 * self._concurrency)
            if max_pool_connections is None
            else _int("max_pool_connections", max_pool_connections, 1)
        )
        self._lock = asyncio.Lock()
        self._client_stack = contextlib.AsyncExitStack()
        self._s3: Any = None
        self._signer: Any = None
        self._background: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (
            f"S3StorageBackend(bucket={self._bucket!r}, prefix={self._root[:-1]!r}, "
            f"endpoint_url={self._endpoint_url!r})"
        )

    # ---------------------------------------------------------------- clients

    async def _client(self) -> Any:
        """The backend's one S3 client, opened on first use."""
        if self._s3 is None:
            async with self._lock:
                if self._s3 is None:
                    self._s3 = await self._open(self._endpoint_url)
        return self._s3

    async def _signing_client(self) -> Any:
        """The client that signs URLs: a second one bound to public_endpoint_url when set."""
        # SigV4 signs the host: a URL re-pointed after signing no longer verifies
        if self._public_endpoint_url is None:
            return await self._client()
        if self._signer is None:
            async with self._lock:
                if self._signer is None:
                    self._signer = await self._open(self._public_endpoint_url)
        return self._signer

    async def _open(self, endpoint: str | None) -> Any:
        session_module, config_module = _load_sdk()
        style = self._addressing_style
        if style == "auto" and endpoint is not None and _is_local(endpoint):
            style = "path"
        config = config_module.Config(
            region_name=self._region,
            signature_version="s3v4",  # presigned URLs on custom endpoints need SigV4
            s3={"addressing_style": style},
            # total attempts, the first included ("max_attempts" there counts retries only)
            retries={"total_max_attempts": self._max_attempts, "mode": self._retry_mode},
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            max_pool_connections=self._pool_size,
        )
        credentials: dict[str, str] = {}
        if self._access_key_id is not None and self._secret_access_key is not None:
            credentials["aws_access_key_id"] = self._access_key_id
            credentials["aws_secret_access_key"] = self._secret_access_key.get_secret_value()
            if self._session_token is not None:
                credentials["aws_session_token"] = self._session_token.get_secret_value()
        creator = _session(session_module).create_client(
            "s3", region_name=self._region, endpoint_url=endpoint, config=config, **credentials
        )
        client = await self._client_stack.enter_async_context(creator)
        logger.debug("opened S3 client for bucket %r", self._bucket)
        return client

    async def _aclose(self) -> None:
        async with self._lock:
            if self._background:  # aborts of failed uploads still need the client
                await asyncio.gather(*self._background, return_exceptions=True)
            stack, self._client_stack = self._client_stack, contextlib.AsyncExitStack()
            self._s3 = self._signer = None
            await stack.aclose()

    def _map_error(self, exc: Exception, operation: str, key: str | None) -> StorageError | None:
        mapped = map_s3_error(exc, bucket=self._bucket)
        return mapped if mapped is not None else super()._map_error(exc, operation, key)

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
            return validate_key(full[len(self._root) :])
        except InvalidKeyError:
            return None

    # ---------------------------------------------------------------- writes

    def _write_params(self, content_type: str, metadata: dict[str, str]) -> dict[str, Any]:
        return {"ContentType": content_type, "Metadata": metadata, **self._sse}

    async def _transfer(self) -> mp.Transfer:
        return mp.Transfer(
            client=await self._client(),
            bucket=self._bucket,
            threshold=self._threshold,
            part_size=self._chunk_size,
            concurrency=self._concurrency,
            background=self._background,
        )

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
    ) -> None:
        params = self._write_params(content_type, metadata)
        await (await self._transfer()).save(self._full(key), body, params)

    async def _upload_file(
        self,
        local_path: Path,
        key: str,
        size: int,
        content_type: str,
        metadata: dict[str, str],
        progress: Progress | None,
    ) -> None:
        params = self._write_params(content_type, metadata)
        transfer = await self._transfer()
        await transfer.upload_file(self._full(key), local_path, size, params, progress)

    async def _copy(self, src: str, dst: str) -> None:
        transfer = await self._transfer()
        await transfer.copy(
            self._full(src), self._full(dst), self._sse, self._copy_threshold, self._copy_part_size
        )

    async def _delete(self, key: str) -> None:
        client = await self._client()
        await client.delete_object(Bucket=self._bucket, Key=self._full(key))

    async def _delete_many(self, keys: list[str]) -> None:
        client = await self._client()
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            response = await client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": self._full(k)} for k in batch], "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                exc = batch_delete_error(str(first.get("Code", "Unknown")), len(errors), len(batch))
                exc.key = self._user_key(str(first.get("Key", "")))
                raise exc

    # ---------------------------------------------------------------- reads

    async def _head(self, key: str) -> dict[str, Any]:
        client = await self._client()
        head: dict[str, Any] = await client.head_object(Bucket=self._bucket, Key=self._full(key))
        return head

    async def _load(self, key: str) -> bytes:
        client = await self._client()
        response = await client.get_object(Bucket=self._bucket, Key=self._full(key))
        body = response["Body"]
        async with body:
            data: bytes = await body.read()
        return data

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        client = await self._client()
        extra: dict[str, str] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
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
        head = await self._head(key)
        await (await self._transfer()).download(self._full(key), local_path, head, progress)
        size: int = head["ContentLength"]
        return size

    async def _exists(self, key: str) -> bool:
        try:
            await self._head(key)
        except Exception as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def _stat(self, key: str) -> ObjectInfo:
        head = await self._head(key)
        return ObjectInfo(
            key=key,
            size=head["ContentLength"],
            last_modified=_utc(head["LastModified"]),
            etag=head.get("ETag"),
            content_type=head.get("ContentType"),
            metadata={name.lower(): value for name, value in (head.get("Metadata") or {}).items()},
        )

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
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
                        last_modified=_utc(item["LastModified"]),
                        etag=item.get("ETag"),
                    )

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
        return folders

    async def _presign(self, key: str, expires_in: int, method: Method) -> str:
        client = await self._signing_client()
        # no SSE or checksum parameters: they would become signed headers that every
        # uploader must repeat; bucket default encryption covers presigned PUTs
        url: str = await client.generate_presigned_url(
            "get_object" if method == "GET" else "put_object",
            Params={"Bucket": self._bucket, "Key": self._full(key)},
            ExpiresIn=expires_in,
        )
        return url


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)
