"""The obstore transport of the S3 backend: its requests through the Rust ``object_store``.

``STORAGE_S3_CLIENT=obstore``. The seam between the backend and a transport is the subset of
the aiobotocore client API that ``s3._backend`` and ``s3._multipart`` call (``put_object``,
``get_object``, ``head_object``, ``delete_object(s)``, ``copy_object``, the
``list_objects_v2`` paginator, ``generate_presigned_url``, ``head_bucket``) with the same
parameters and answers. :class:`ObstoreClient` implements those calls on an obstore
``S3Store``; a call it cannot serve (an operation obstore lacks: multipart copies, bucket
lifecycle and versioning, POST policies; or a parameter it does not know) goes to an
aiobotocore client opened on first such use, so a new S3 feature works on both transports
from the start and gets the fast path once this module learns its parameters.
:class:`ObstoreTransfer` sends uploads with obstore's multipart writer (aborted on failure
or cancellation) instead of the aiobotocore multipart calls.

obstore is imported on first use, never by ``import file_storage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from file_storage._streams import CHUNK_SIZE, Progress, prepend
from file_storage.backends._core import count_attempt
from file_storage.backends._support import check_unchanged, file_version, opened, run_whole
from file_storage.backends.s3 import _multipart as mp
from file_storage.backends.s3._parts import answered_etag, part_size_for
from file_storage.errors import StorageConfigError, StorageUnavailableError

__all__ = ["ObstoreClient", "ObstoreTransfer", "load_obstore", "open_store"]

logger = logging.getLogger("file_storage.backends.s3")

# what obstore returns as attributes of its own, besides user metadata (obstore.Attribute)
_HEADERS = {
    "Content-Type": "ContentType",
    "Cache-Control": "CacheControl",
    "Content-Disposition": "ContentDisposition",
    "Content-Encoding": "ContentEncoding",
    "Content-Language": "ContentLanguage",
}
_STANDARD = frozenset({*_HEADERS, "Storage-Class"})
# obstore takes an attribute named like one of those, in any case, for that header
_RESERVED = frozenset(name.lower() for name in _STANDARD)
# put parameters the store applies itself (its SSE config) or that obstore replaces (it
# signs the payload's SHA-256, which the server verifies, instead of a CRC32 or MD5)
_STORE_PARAMS = frozenset(
    {
        "ServerSideEncryption",
        "SSEKMSKeyId",
        "ChecksumAlgorithm",
        "ChecksumCRC32",
        "ContentMD5",
    }
)
# bytes the multipart writer holds in flight: obstore keeps one copy of each part
MAX_WRITER_BUFFER = 32 * 2**20
BotoOpener = Callable[[], Awaitable[Any]]


def load_obstore() -> ModuleType:
    """Import obstore on first use; a missing extra is a configuration error."""
    try:
        import obstore
        import obstore.store
    except ImportError as exc:
        raise StorageConfigError(
            "STORAGE_S3_CLIENT=obstore needs obstore: pip install 'file_storage[obstore]'"
        ) from exc
    return obstore


def open_store(options: Any, endpoint: str | None, virtual: bool) -> Any:
    """An obstore ``S3Store`` with the backend's endpoint, credentials, timeouts and retries."""
    obstore = load_obstore()
    config: dict[str, Any] = {"region": options.region, "virtual_hosted_style_request": virtual}
    if endpoint is not None:
        config["endpoint"] = endpoint
    if options.access_key_id is not None and options.secret_access_key is not None:
        config["access_key_id"] = options.access_key_id
        config["secret_access_key"] = options.secret_access_key.get_secret_value()
        if options.session_token is not None:
            config["session_token"] = options.session_token.get_secret_value()
    if "ServerSideEncryption" in options.sse:
        config["server_side_encryption"] = options.sse["ServerSideEncryption"]
    if "SSEKMSKeyId" in options.sse:
        config["sse_kms_key_id"] = options.sse["SSEKMSKeyId"]
    client_options: dict[str, Any] = {
        "allow_http": endpoint is not None and urlsplit(endpoint).scheme == "http",
        "connect_timeout": timedelta(seconds=options.connect_timeout),
        # per read, like botocore's read_timeout; the overall timeout (30 s by default in
        # object_store) would cut a long download, so it only bounds a stalled request
        "read_timeout": timedelta(seconds=options.read_timeout),
        "timeout": timedelta(days=1),
        "pool_max_idle_per_host": str(options.pool_size),
    }
    attempt = options.connect_timeout + options.read_timeout
    retry_config: dict[str, Any] = {
        "max_retries": options.max_attempts - 1,  # obstore counts retries, we attempts
        "retry_timeout": timedelta(seconds=attempt * options.max_attempts),
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=20),
            "base": 2,
        },
    }
    return obstore.store.S3Store(
        options.bucket, config=config, client_options=client_options, retry_config=retry_config
    )


def _path(prefix: str) -> str | None:
    """object_store's listing prefix (a folder without its "/") for an S3 key prefix."""
    if not prefix:
        return None
    if not prefix.endswith("/"):  # only folders are listed here (see BackendCore)
        raise TypeError("the obstore transport lists folder prefixes only (ending in '/')")
    return prefix[:-1]


def _head(result: Any) -> dict[str, Any]:
    """A GetResult (or HEAD) as the fields of an aiobotocore ``head_object`` answer."""
    meta = result.meta
    attributes: dict[str, str] = result.attributes
    head: dict[str, Any] = {
        "ContentLength": meta["size"],
        "LastModified": meta["last_modified"],
        "ETag": meta["e_tag"],
        "Metadata": {k: v for k, v in attributes.items() if k not in _STANDARD},
    }
    if meta.get("version") is not None:
        head["VersionId"] = meta["version"]
    for attribute, field in _HEADERS.items():
        if attribute in attributes:
            head[field] = attributes[attribute]
    return head


ORIGIN_ATTR = "_file_storage_obstore"


@contextlib.contextmanager
def _from_obstore() -> Iterator[None]:
    """Mark what obstore raised: its not-found is a builtin ``FileNotFoundError``, which
    must not be taken for a local file's (``s3._obstore_errors`` reads the mark)."""
    try:
        yield
    except Exception as exc:
        setattr(exc, ORIGIN_ATTR, True)
        raise


class _Body:
    """An obstore GET as the ``Body`` of an aiobotocore answer: read, iter_chunks, async with."""

    __slots__ = ("_buffer", "_result", "_stream")

    def __init__(self, result: Any) -> None:
        self._result = result
        self._stream: Any = None
        self._buffer = b""

    async def __aenter__(self) -> _Body:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stream = None  # dropping the stream releases the connection

    async def read(self, size: int | None = None) -> bytes:
        if size is None:
            with _from_obstore():
                data = bytes(await self._result.bytes_async())
            return self._buffer + data if self._buffer else data
        if self._stream is None:
            self._stream = self._result.stream(min_chunk_size=min(size, CHUNK_SIZE))
        while len(self._buffer) < size:
            try:
                with _from_obstore():
                    self._buffer += bytes(await anext(self._stream))
            except StopAsyncIteration:
                break
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        """Chunks of at most ``size`` bytes (obstore's may be longer: they are split)."""
        stream = self._result.stream(min_chunk_size=min(size, CHUNK_SIZE))
        while True:
            try:
                with _from_obstore():
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            view = memoryview(chunk)
            for offset in range(0, len(view), size):
                yield bytes(view[offset : offset + size])


class _Fallback(Exception):
    """A call the obstore client cannot serve: it goes to aiobotocore."""


def _put_options(params: dict[str, Any]) -> tuple[dict[str, str], Any]:
    """obstore attributes and put mode for aiobotocore PutObject parameters."""
    attributes: dict[str, str] = {}
    mode: Any = None
    for name, value in params.items():
        if name == "Metadata":
            for key, item in value.items():
                if key.lower() in _RESERVED:  # would be taken for a header by obstore
                    raise _Fallback(name)
                attributes[key] = item
        elif name == "IfNoneMatch" and value == "*":
            mode = "create"
        elif name == "IfMatch":
            mode = {"e_tag": value}
        elif (attribute := _ATTRIBUTES.get(name)) is not None:
            attributes[attribute] = value
        elif name not in _STORE_PARAMS:
            raise _Fallback(name)
    return attributes, mode


_ATTRIBUTES = {field: attribute for attribute, field in _HEADERS.items()}


class ObstoreClient:
    """The aiobotocore calls of the S3 backend, served by obstore (see the module doc).

    Full S3 keys, like aiobotocore's. Errors are obstore's exceptions, translated at the
    backend's boundary (``s3._errors.map_s3_error``). Any other attribute is the
    aiobotocore client's, opened on first use by ``boto``.
    """

    def __init__(self, store: Any, bucket: str, boto: BotoOpener) -> None:
        self.store = store
        self.bucket = bucket
        self.obstore = load_obstore()
        self._boto = boto

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def forward(*args: Any, **kwargs: Any) -> Any:
            logger.debug("S3 %s goes through aiobotocore (not done by obstore)", name)
            return await getattr(await self._boto(), name)(*args, **kwargs)

        return forward

    async def _forward(self, name: str, kwargs: dict[str, Any]) -> Any:
        return await getattr(await self._boto(), name)(Bucket=self.bucket, **kwargs)

    async def head_bucket(self, *, Bucket: str) -> dict[str, Any]:
        count_attempt()
        # object_store has no HeadBucket: one listing of at most one key answers the same
        # (NoSuchBucket, AccessDenied, unreachable)
        stream = self.obstore.list(self.store, None, chunk_size=1)
        with _from_obstore():
            await anext(aiter(stream), None)
        return {}

    async def head_object(self, *, Bucket: str, Key: str, **extra: Any) -> dict[str, Any]:
        options: dict[str, Any] = {"head": True}
        if set(extra) - {"IfMatch", "VersionId"}:
            return dict(await self._forward("head_object", {"Key": Key, **extra}))
        if "IfMatch" in extra:
            options["if_match"] = extra["IfMatch"]
        if "VersionId" in extra:
            options["version"] = extra["VersionId"]
        count_attempt()
        with _from_obstore():
            return _head(await self.obstore.get_async(self.store, Key, options=options))

    async def get_object(self, *, Bucket: str, Key: str, **extra: Any) -> dict[str, Any]:
        if set(extra) - {"IfMatch", "VersionId", "Range"}:
            return dict(await self._forward("get_object", {"Key": Key, **extra}))
        options: dict[str, Any] = {}
        if "IfMatch" in extra:
            options["if_match"] = extra["IfMatch"]
        if "VersionId" in extra:
            options["version"] = extra["VersionId"]
        if "Range" in extra:
            first, _, last = str(extra["Range"]).removeprefix("bytes=").partition("-")
            options["range"] = {"offset": int(first)} if not last else (int(first), int(last) + 1)
        count_attempt()
        with _from_obstore():
            result = await self.obstore.get_async(self.store, Key, options=options)
        response = _head(result)
        response["Body"] = _Body(result)
        return response

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, **params: Any) -> Any:
        try:
            attributes, mode = _put_options(params)
        except _Fallback:
            return await self._forward("put_object", {"Key": Key, "Body": Body, **params})
        count_attempt()
        with _from_obstore():
            result = await self.obstore.put_async(
                self.store, Key, Body, attributes=attributes, mode=mode, use_multipart=False
            )
        return {"ETag": result["e_tag"], "VersionId": result["version"]}

    async def delete_object(self, *, Bucket: str, Key: str, **extra: Any) -> Any:
        if extra:
            return await self._forward("delete_object", {"Key": Key, **extra})
        count_attempt()
        with _from_obstore():
            await self.obstore.delete_async(self.store, Key)
        return {}

    async def delete_objects(self, *, Bucket: str, Delete: dict[str, Any]) -> Any:
        if any(set(item) - {"Key"} for item in Delete["Objects"]):  # versions: aiobotocore
            return await self._forward("delete_objects", {"Delete": Delete})
        count_attempt()
        # one DeleteObjects per 1000 keys; a key S3 refused raises (missing keys do not)
        with _from_obstore():
            await self.obstore.delete_async(self.store, [item["Key"] for item in Delete["Objects"]])
        return {}

    async def copy_object(
        self, *, Bucket: str, Key: str, CopySource: dict[str, str], **params: Any
    ) -> Any:
        # CopyObject keeps content type and metadata (MetadataDirective COPY, S3's default)
        extra = {name for name in params if name not in _STORE_PARAMS}
        if (
            extra - {"MetadataDirective"}
            or params.get("MetadataDirective", "COPY") != "COPY"
            # a version of the source, or a copy onto itself (a restore): aiobotocore
            or set(CopySource) - {"Bucket", "Key"}
            or CopySource["Key"] == Key
        ):
            return await self._forward(
                "copy_object", {"Key": Key, "CopySource": CopySource, **params}
            )
        count_attempt()
        with _from_obstore():
            await self.obstore.copy_async(self.store, CopySource["Key"], Key)
        return {}

    def get_paginator(self, operation: str) -> Any:
        return _Paginator(self, operation)

    async def generate_presigned_url(
        self, operation: str, Params: dict[str, Any], ExpiresIn: int
    ) -> str:
        method = {"get_object": "GET", "put_object": "PUT"}.get(operation)
        if method is None or set(Params) != {"Bucket", "Key"}:
            boto = await self._boto()
            url: str = await boto.generate_presigned_url(
                operation, Params=Params, ExpiresIn=ExpiresIn
            )
            return url
        with _from_obstore():
            signed: str = await self.obstore.sign_async(
                self.store, method, Params["Key"], timedelta(seconds=ExpiresIn)
            )
        return signed


@dataclass
class _Paginator:
    client: ObstoreClient
    operation: str

    def paginate(self, **params: Any) -> AsyncIterator[dict[str, Any]]:
        if self.operation != "list_objects_v2" or set(params) - {
            "Bucket",
            "Prefix",
            "Delimiter",
            "StartAfter",
        }:
            return self._forwarded(params)
        if params.get("Delimiter") not in (None, "/"):
            return self._forwarded(params)
        if params.get("Delimiter") == "/" and params.get("StartAfter"):
            # object_store lists one level from the start: it takes no cursor there
            return self._forwarded(params)
        if str(params.get("StartAfter", "")).endswith("/"):
            # object_store's paths drop a trailing "/": a folder cursor would become the
            # folder's bare key, which sorts before its neighbours ("u1-x" < "u1/")
            return self._forwarded(params)
        return self._pages(params)

    async def _forwarded(self, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        boto = await self.client._boto()
        async for page in boto.get_paginator(self.operation).paginate(**params):
            yield page

    async def _pages(self, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        obstore, store = self.client.obstore, self.client.store
        prefix = _path(params.get("Prefix", ""))
        if params.get("Delimiter") == "/":
            count_attempt()
            with _from_obstore():
                listing = await obstore.list_with_delimiter_async(store, prefix)
            yield {
                "Contents": [_item(meta) for meta in listing["objects"]],
                "CommonPrefixes": [{"Prefix": f"{name}/"} for name in listing["common_prefixes"]],
            }
            return
        stream = obstore.list(
            store, prefix, offset=params.get("StartAfter"), chunk_size=1000, return_arrow=False
        )
        while True:
            try:
                with _from_obstore():
                    batch = await anext(stream)
            except StopAsyncIteration:
                return
            count_attempt()
            yield {"Contents": [_item(meta) for meta in batch]}


def _item(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "Key": meta["path"],
        "Size": meta["size"],
        "LastModified": meta["last_modified"],
        "ETag": meta["e_tag"],
    }


class ObstoreTransfer(mp.Transfer):
    """:class:`mp.Transfer` whose uploads go through obstore's multipart writer.

    The writer sends parts of ``part_size`` bytes, a few at a time, and aborts the upload
    when the body fails or the call is cancelled. Downloads, copies and deletes are the
    parent's code on the obstore client; a write with parameters obstore cannot carry (a
    conditional multipart upload) goes the parent's way, through aiobotocore.
    """

    async def put(
        self,
        key: str,
        data: bytes,
        params: dict[str, Any],
        condition: dict[str, str] | None = None,
    ) -> str | None:
        """One PutObject; obstore signs the body's SHA-256, which the server verifies."""
        condition = await self.checked(condition, multipart=False)
        started = time.monotonic()
        try:
            response = await self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, **params, **(condition or {})
            )
        except Exception as exc:
            return await self.landed(exc, key, data, params, condition, started)
        return answered_etag(response)

    def _writer(self, key: str, params: dict[str, Any], part_size: int) -> Any:
        attributes, mode = _put_options(params)
        if mode is not None:  # the writer completes without conditions
            raise _Fallback("IfMatch")
        in_flight = max(1, min(self.concurrency, MAX_WRITER_BUFFER // part_size))
        obstore = load_obstore()
        return obstore.open_writer_async(
            self.client.store,
            key,
            attributes=attributes,
            buffer_size=part_size,
            max_concurrency=in_flight,
        )

    async def _save_parts(
        self,
        key: str,
        head: bytes,
        rest: AsyncIterator[bytes],
        params: dict[str, Any],
        condition: dict[str, str] | None,
    ) -> str | None:
        try:
            if condition:  # the writer completes without conditions
                raise _Fallback("condition")
            writer = self._writer(key, params, self.part_size)
        except _Fallback:
            return await super()._save_parts(key, head, rest, params, condition)
        await _write(writer, prepend((head,), rest))
        return None  # the writer does not say: a stat asks

    async def upload_file(
        self,
        key: str,
        path: Path,
        size: int,
        params: dict[str, Any],
        progress: Progress | None,
        condition: dict[str, str] | None = None,
    ) -> str | None:
        if size <= self.threshold or condition:
            # a conditional upload completes with the condition: aiobotocore's multipart
            return await super().upload_file(key, path, size, params, progress, condition)
        part_size = part_size_for(size, self.part_size)
        try:
            writer = self._writer(key, params, part_size)
        except _Fallback:
            return await super().upload_file(key, path, size, params, progress)
        await _write(writer, _file_parts(path, size, part_size, progress))
        return None  # the writer does not say: a stat asks


async def _file_parts(
    path: Path, size: int, part_size: int, progress: Progress | None
) -> AsyncIterator[bytes]:
    done = 0
    async with opened(path, "rb") as src:
        fd = src.fileno()
        version = await asyncio.to_thread(file_version, fd)
        while done < size and (data := await src.read(min(part_size, size - done))):
            # parts read before and after a write in place would hold two versions
            await asyncio.to_thread(check_unchanged, fd, version)
            done += len(data)
            if progress is not None:
                progress(done, size)
            yield data
        if done != size or await src.read(1):
            raise StorageUnavailableError(f"local file changed size while reading: {size} expected")


async def _write(writer: Any, body: AsyncIterator[bytes]) -> None:
    """Send ``body`` through an obstore writer: completed when the body ends, aborted by
    the writer when the body fails or the call is cancelled (nothing becomes visible)."""
    with _from_obstore():
        out = await writer.__aenter__()
    try:
        async for chunk in body:
            count_attempt()
            with _from_obstore():
                await out.write(chunk)
    except BaseException as exc:
        # aborts the multipart upload (obstore's __aexit__), waited for to its end however
        # often the caller is cancelled meanwhile (an anyio cancel scope cancels every await)
        aborting, late = await run_whole(out.__aexit__(type(exc), exc, exc.__traceback__))
        cancelled = late or (exc if isinstance(exc, asyncio.CancelledError) else None)
        if cancelled is not None:
            # a cancelled caller hears of its cancellation, not of a failed abort
            failed = None if aborting.cancelled() else aborting.exception()
            if failed is not None:
                logger.warning(
                    "could not abort multipart upload (%s); a bucket lifecycle rule "
                    "(AbortIncompleteMultipartUpload) will remove it",
                    type(failed).__name__,
                )
            if late is not None:
                raise late from exc
            raise
        with _from_obstore():
            aborting.result()
        raise
    with _from_obstore():
        await out.__aexit__(None, None, None)
