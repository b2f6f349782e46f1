"""An in-memory backend with the same semantics as the others, for applications' tests."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import SecretStr

from file_storage._signing import presign
from file_storage._signing import signing_key as wrap_signing_key
from file_storage.backends._core import Method
from file_storage.backends._write_options import PLAIN, WriteOptions
from file_storage.backends.base import StorageBackend
from file_storage.errors import (
    ObjectConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from file_storage.models import ObjectInfo

__all__ = ["MemoryStorageBackend"]


@dataclass(frozen=True, slots=True)
class _Object:
    data: bytes
    content_type: str
    metadata: dict[str, str]
    last_modified: datetime
    etag: str
    cache_control: str | None = None
    content_disposition: str | None = None


def _parents(key: str) -> list[str]:
    """The folders above ``key``, each with its trailing ``/``: ``a/b/c`` -> ``a/``, ``a/b/``."""
    parts = key.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


class MemoryStorageBackend(StorageBackend):
    """Keeps objects in a dict. Each instance is its own empty store.

    Args:
        base_url: where the app mounts ``signed_url_router``, which answers this
            backend's presigned URLs as it does the local backend's (settings: the same
            ``STORAGE_LOCAL_BASE_URL``).
        signing_key: HMAC key of presigned URLs, at least 32 characters
            (``STORAGE_LOCAL_SIGNING_KEY``).
        public_base_url: for :meth:`get_public_url` (``STORAGE_LOCAL_PUBLIC_BASE_URL``).
    """

    def __init__(
        self,
        *,
        max_size_bytes: int | None = None,
        quota_refresh_seconds: float | None = None,
        base_url: str | None = None,
        signing_key: str | SecretStr | None = None,
        public_base_url: str | None = None,
    ) -> None:
        super().__init__(max_size_bytes=max_size_bytes, quota_refresh_seconds=quota_refresh_seconds)
        self._base_url = base_url
        self._signing_key = wrap_signing_key(signing_key)
        self._public_base_url = public_base_url
        self._objects: dict[str, _Object] = {}
        self._folders: dict[str, int] = {}  # folder ("a/b/") -> number of objects below it

    def __repr__(self) -> str:
        return f"MemoryStorageBackend(objects={len(self._objects)})"

    def _get(self, key: str) -> _Object:
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFoundError() from None

    def _put(self, key: str, obj: _Object, options: WriteOptions = PLAIN) -> None:
        # no await in here: the checks and the write are one atomic step on the loop
        current = self._objects.get(key)
        if not options.overwrite and current is not None:
            raise PreconditionFailedError("an object exists at this key (overwrite=False)")
        if options.if_match is not None and (current is None or current.etag != options.if_match):
            raise PreconditionFailedError("the object is not the version if_match names")
        if key + "/" in self._folders:
            # key=: on copy/move the clash is at the destination, not the source the call names
            raise ObjectConflictError("a folder exists at this key", key=key)
        parents = _parents(key)
        for folder in parents:
            if folder[:-1] in self._objects:
                raise ObjectConflictError(
                    f"an object exists at {folder[:-1]!r}, so it cannot be a folder", key=key
                )
        if key not in self._objects:
            for folder in parents:
                self._folders[folder] = self._folders.get(folder, 0) + 1
        self._objects[key] = obj

    def _remove(self, key: str) -> bool:
        if self._objects.pop(key, None) is None:
            return False
        for folder in _parents(key):
            left = self._folders[folder] - 1
            if left:
                self._folders[folder] = left
            else:
                del self._folders[folder]
        return True

    @staticmethod
    def _new(
        data: bytes, content_type: str, metadata: dict[str, str], options: WriteOptions
    ) -> _Object:
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        return _Object(
            data,
            content_type,
            dict(metadata),
            datetime.now(UTC),
            etag,
            options.cache_control,
            options.content_disposition,
        )

    def _info(self, key: str, obj: _Object) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=len(obj.data),
            last_modified=obj.last_modified,
            etag=obj.etag,
            content_type=obj.content_type,
            metadata=dict(obj.metadata),
            cache_control=obj.cache_control,
            content_disposition=obj.content_disposition,
        )

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
        options: WriteOptions = PLAIN,
    ) -> None:
        data = body if isinstance(body, bytes) else b"".join([c async for c in body])
        self._put(key, self._new(data, content_type, metadata, options), options)

    async def _load(self, key: str) -> bytes:
        return self._get(key).data

    async def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        obj = self._get(key)
        if if_match is not None and obj.etag != if_match:
            raise PreconditionFailedError("the object changed since that ETag")
        data = obj.data  # immutable: a later save replaces the object, not these bytes
        stop = len(data) if end is None else min(end, len(data))
        view = memoryview(data)
        for offset in range(start, stop, chunk_size):
            yield bytes(view[offset : min(offset + chunk_size, stop)])

    async def _exists(self, key: str) -> bool:
        return key in self._objects

    async def _stat(self, key: str) -> ObjectInfo:
        return self._info(key, self._get(key))

    async def _delete(self, key: str) -> None:
        self._remove(key)

    async def _delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._objects if k.startswith(prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        keys = sorted(k for k in self._objects if k.startswith(prefix))
        for key in keys:
            obj = self._objects.get(key)
            if obj is not None:
                yield self._info(key, obj)

    async def _list_dirs(self, prefix: str) -> list[str]:
        depth = prefix.count("/") + 1
        return [
            folder[:-1]
            for folder in self._folders
            if folder.startswith(prefix) and folder.count("/") == depth
        ]

    async def _copy(self, src: str, dst: str, options: WriteOptions = PLAIN) -> None:
        obj = self._get(src)
        self._put(
            dst,
            dataclasses.replace(
                obj,
                metadata=dict(obj.metadata),
                last_modified=datetime.now(UTC),
                cache_control=options.cache_control or obj.cache_control,
                content_disposition=options.content_disposition or obj.content_disposition,
            ),
        )

    async def _presign(
        self,
        key: str,
        expires_in: int,
        method: Method,
        content_type: str | None = None,
        filename: str | None = None,
    ) -> str:
        return presign(
            self._base_url, self._signing_key, key, method, expires_in, content_type, filename
        )
