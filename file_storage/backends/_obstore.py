"""The hooks of the backends built on obstore (the Rust ``object_store`` client).

:class:`ObstoreBackend` moves bytes for the GCS and Azure backends: one obstore store per
backend, opened on first use (obstore runs its requests on its own Rust runtime and
answers on whichever asyncio loop awaits, so one store serves every loop and thread).
A subclass says how to open its store and how metadata names travel; everything else
(keys under the prefix, ranges, pinned reads, listings, copies, signing) is the same.
obstore is imported when the first store opens, never by ``import file_storage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any

from file_storage._keys import validate_key
from file_storage._metadata import decode_value, encode_value
from file_storage.backends._core import DELETE_BATCH, Method
from file_storage.backends._obstore_errors import is_range_error, map_obstore_error
from file_storage.backends.base import StorageBackend
from file_storage.errors import (
    InvalidKeyError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
)
from file_storage.models import ObjectInfo

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = ["ObstoreBackend", "load_obstore"]

#: a stream that ends within this many bytes goes as one PUT; a longer one as a multipart
#: (GCS) or block-list (Azure) upload of parts this size, in parallel, aborted on failure
PART_SIZE = 8 * 2**20
PART_CONCURRENCY = 4
LIST_PAGE = 1000
DELETE_CONCURRENCY = 16
# object_store's default retries a dead server for up to 3 minutes; like the S3 backend's
# 5 attempts, give up after about 1.5 s of backoff on a refused connection
RETRY: dict[str, Any] = {
    "max_retries": 4,
    "retry_timeout": timedelta(seconds=60),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=5),
        "base": 2,
    },
}
# the attributes obstore names itself; every other name it returns is user metadata
_STANDARD = frozenset(
    {
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Type",
        "Cache-Control",
        "Storage-Class",
    }
)


def load_obstore(backend: str) -> ModuleType:
    """Import obstore, or say which extra installs it."""
    try:
        import obstore
    except ImportError as exc:
        raise StorageConfigError(
            f"the {backend} backend needs obstore: pip install 'file_storage[{backend.lower()}]'"
        ) from exc
    return obstore


class ObstoreBackend(StorageBackend):
    """A :class:`StorageBackend` whose hooks are requests of one obstore store."""

    #: the store's name in messages ("GCS", "Azure")
    _kind: str = "obstore"

    def __init__(
        self,
        *,
        prefix: str,
        max_size_bytes: int | None = None,
        quota_refresh_seconds: float | None = None,
    ) -> None:
        super().__init__(max_size_bytes=max_size_bytes, quota_refresh_seconds=quota_refresh_seconds)
        prefix = prefix.strip("/")
        if prefix:
            try:
                validate_key(prefix)
            except InvalidKeyError as exc:
                raise StorageConfigError(f"prefix: must be a valid key ({exc.detail})") from None
        self._root = prefix
        # keys live at <prefix>/<key>: leave room for both under the store's 1024 bytes
        self._key_overhead = len(prefix.encode()) + 1 if prefix else 0
        self._store_lock = threading.Lock()
        self._opened: ObjectStore | None = None
        self._obs: ModuleType | None = None

    # ---------------------------------------------------------------- for subclasses

    def _open_store(self, obs: ModuleType) -> ObjectStore:
        """Build the obstore store (no I/O): bucket or container, prefix, credentials."""
        raise NotImplementedError

    def _encode_name(self, name: str) -> str:
        """The name a metadata entry travels under (lower-case, an HTTP token, as given)."""
        return name

    def _decode_name(self, name: str) -> str:
        return name.lower()

    # ---------------------------------------------------------------- plumbing

    def _store(self) -> tuple[ModuleType, ObjectStore]:
        if self._opened is None or self._obs is None:
            with self._store_lock:
                if self._opened is None:
                    obs = load_obstore(self._kind)
                    self._opened = self._open_store(obs)
                    self._obs = obs
        assert self._obs is not None  # set together with the store
        return self._obs, self._opened

    def _map_error(self, exc: Exception, operation: str, key: str | None) -> StorageError | None:
        mapped = map_obstore_error(exc, self._kind)
        return mapped if mapped is not None else super()._map_error(exc, operation, key)

    def _attributes(self, content_type: str, metadata: dict[str, str]) -> dict[str, str]:
        attributes = {"Content-Type": content_type}
        for name, value in metadata.items():
            attributes[self._encode_name(name)] = encode_value(value)
        return attributes

    def _info(self, meta: Mapping[str, Any], attributes: Mapping[str, Any] | None) -> ObjectInfo:
        content_type: str | None = None
        metadata: dict[str, str] = {}
        for name, value in (attributes or {}).items():
            if name == "Content-Type":
                content_type = value
            elif name not in _STANDARD and isinstance(value, str):
                metadata[self._decode_name(name)] = decode_value(value)
        modified: datetime = meta["last_modified"]
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=UTC)
        return ObjectInfo(
            key=meta["path"],
            size=meta["size"],
            last_modified=modified.astimezone(UTC),
            etag=meta.get("e_tag"),
            content_type=content_type,
            metadata=metadata,
        )

    async def _head(self, key: str, if_match: str | None = None) -> ObjectInfo:
        obs, store = self._store()
        options: dict[str, Any] = {"head": True}
        if if_match is not None:
            options["if_match"] = if_match
        result = await obs.get_async(store, key, options=options)
        return self._info(result.meta, result.attributes)

    # ---------------------------------------------------------------- hooks

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
    ) -> None:
        obs, store = self._store()
        attributes = self._attributes(content_type, metadata)
        if not isinstance(body, bytes):
            # a short stream goes as one PUT (one request, no upload to abort); a long one
            # as parts, so memory stays at PART_SIZE * PART_CONCURRENCY whatever its size
            head: list[bytes] = []
            buffered = 0
            async for chunk in body:
                head.append(chunk)
                buffered += len(chunk)
                if buffered > PART_SIZE:
                    break
            else:
                body = b"".join(head)
            if not isinstance(body, bytes):
                await obs.put_async(
                    store,
                    key,
                    _chain(head, body),
                    attributes=attributes,
                    use_multipart=True,
                    chunk_size=PART_SIZE,
                    max_concurrency=PART_CONCURRENCY,
                )
                return
        await obs.put_async(store, key, body, attributes=attributes, use_multipart=False)

    async def _load(self, key: str) -> bytes:
        obs, store = self._store()
        result = await obs.get_async(store, key)
        return bytes(await result.bytes_async())

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        obs, store = self._store()
        options: dict[str, Any] = {}
        if if_match is not None:
            options["if_match"] = if_match  # the server answers 412 once it was replaced
        if end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            result = await obs.get_async(store, key, options=options)
        except Exception as exc:
            if not is_range_error(exc):
                raise
            # the range starts at or past the end: an empty slice like bytes[start:end],
            # once the object is known to exist (and to be that version)
            info = await self._head(key)
            if if_match is not None and info.etag != if_match:
                raise PreconditionFailedError("the object changed since that ETag") from None
            return
        # obstore's chunks are at least this big; the base class cuts them to chunk_size
        async for chunk in result.stream(min_chunk_size=min(chunk_size, PART_SIZE)):
            yield bytes(chunk)

    async def _exists(self, key: str) -> bool:
        obs, store = self._store()
        try:
            await obs.head_async(store, key)
        except FileNotFoundError:  # obstore's NotFoundError is one
            return False
        return True

    async def _stat(self, key: str) -> ObjectInfo:
        return await self._head(key)

    async def _delete(self, key: str) -> None:
        obs, store = self._store()
        with contextlib.suppress(FileNotFoundError):  # idempotent: already gone
            await obs.delete_async(store, key)

    async def _delete_many(self, keys: list[str]) -> None:
        obs, store = self._store()
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            try:
                # Azure: blob batch requests; GCS: concurrent deletes (object_store's own)
                await obs.delete_async(store, batch)
            except FileNotFoundError:
                # a key already gone fails the bulk call (idempotent for us): finish the
                # batch key by key, where a missing key is no error
                await self._delete_each(batch)

    async def _delete_each(self, keys: list[str]) -> None:
        limit = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def one(key: str) -> None:
            async with limit:
                await self._delete(key)

        results = await asyncio.gather(*(one(key) for key in keys), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        obs, store = self._store()
        # object_store matches whole segments: "a/b" lists a/b/..., never a/bc
        pages = obs.list(store, prefix=prefix.rstrip("/") or None, chunk_size=LIST_PAGE)
        async for page in pages:
            for meta in page:
                if _is_key(meta["path"]):  # another tool's "folder/" marker is no object
                    yield self._info(meta, None)

    async def _list_dirs(self, prefix: str) -> list[str]:
        obs, store = self._store()
        result = await obs.list_with_delimiter_async(store, prefix=prefix.rstrip("/") or None)
        names = (name.rstrip("/") for name in result["common_prefixes"])
        return sorted(name for name in names if _is_key(name))

    async def _copy(self, src: str, dst: str) -> None:
        obs, store = self._store()
        # server-side; the destination keeps the source's content type and metadata
        await obs.copy_async(store, src, dst, overwrite=True)

    async def _presign(self, key: str, expires_in: int, method: Method) -> str:
        obs, store = self._store()
        url: str = await obs.sign_async(store, method, key, timedelta(seconds=expires_in))
        return url

    async def _check(self) -> None:
        obs, store = self._store()
        async for _ in obs.list(store, chunk_size=1):  # the store holds the prefix
            break

    async def _aclose(self) -> None:
        # obstore keeps no connection a caller must close: dropping the store frees its pool
        with self._store_lock:
            self._opened = None


async def _chain(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


def _is_key(name: str) -> bool:
    try:
        validate_key(name)
    except InvalidKeyError:
        return False
    return True
