"""An in-memory backend with the same semantics as the others, for applications' tests."""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right, insort
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from file_storage.backends._core import Method
from file_storage.backends._pages import Entry, folder_end
from file_storage.backends.base import StorageBackend
from file_storage.errors import (
    ObjectConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageConfigError,
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


def _parents(key: str) -> list[str]:
    """The folders above ``key``, each with its trailing ``/``: ``a/b/c`` -> ``a/``, ``a/b/``."""
    parts = key.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


class MemoryStorageBackend(StorageBackend):
    """Keeps objects in a dict. Each instance is its own empty store.

    Presigned URLs need a server to answer them, so ``get_presigned_url`` raises
    :class:`StorageConfigError` here; use the local backend with a signing key for that.
    """

    def __init__(
        self,
        *,
        max_size_bytes: int | None = None,
        quota_refresh_seconds: float | None = None,
    ) -> None:
        super().__init__(max_size_bytes=max_size_bytes, quota_refresh_seconds=quota_refresh_seconds)
        self._objects: dict[str, _Object] = {}
        self._folders: dict[str, int] = {}  # folder ("a/b/") -> number of objects below it
        self._index: list[str] = []  # the keys, sorted: listings bisect instead of sorting

    def __repr__(self) -> str:
        return f"MemoryStorageBackend(objects={len(self._objects)})"

    def _get(self, key: str) -> _Object:
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFoundError() from None

    def _put(self, key: str, obj: _Object) -> None:
        # no await in here: the check and the write are one atomic step on the loop
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
            insort(self._index, key)
        self._objects[key] = obj

    def _remove(self, key: str) -> bool:
        if self._objects.pop(key, None) is None:
            return False
        del self._index[bisect_left(self._index, key)]
        for folder in _parents(key):
            left = self._folders[folder] - 1
            if left:
                self._folders[folder] = left
            else:
                del self._folders[folder]
        return True

    @staticmethod
    def _new(data: bytes, content_type: str, metadata: dict[str, str]) -> _Object:
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        return _Object(data, content_type, dict(metadata), datetime.now(UTC), etag)

    def _info(self, key: str, obj: _Object) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=len(obj.data),
            last_modified=obj.last_modified,
            etag=obj.etag,
            content_type=obj.content_type,
            metadata=dict(obj.metadata),
        )

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
    ) -> None:
        data = body if isinstance(body, bytes) else b"".join([c async for c in body])
        self._put(key, self._new(data, content_type, metadata))

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
        doomed = self._index[self._first(prefix, None) : self._end(prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def _first(self, prefix: str, start_after: str | None) -> int:
        if start_after is None or start_after < prefix:
            return bisect_left(self._index, prefix)
        return bisect_right(self._index, start_after)

    def _end(self, prefix: str) -> int:
        return len(self._index) if not prefix else bisect_left(self._index, folder_end(prefix[:-1]))

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for entry in self._iter_entries(prefix, None, True, 0):
            if isinstance(entry, ObjectInfo):
                yield entry

    async def _iter_entries(
        self, prefix: str, start_after: str | None, recursive: bool, page_size: int
    ) -> AsyncIterator[Entry]:
        # each step bisects from the last key handed out: O(log n), and right however
        # the index changed while the caller held the iterator
        index = self._index
        pos = self._first(prefix, start_after)
        while pos < len(index) and (key := index[pos]).startswith(prefix):
            name, slash, _ = key[len(prefix) :].partition("/")
            if slash and not recursive:
                folder = prefix + name
                if start_after is None or folder + "/" > start_after:
                    yield folder
                pos = bisect_left(index, folder_end(folder))
                continue
            obj = self._objects.get(key)
            if obj is not None:
                yield self._info(key, obj)
            pos = bisect_right(index, key)

    async def _list_dirs(self, prefix: str) -> list[str]:
        depth = prefix.count("/") + 1
        return [
            folder[:-1]
            for folder in self._folders
            if folder.startswith(prefix) and folder.count("/") == depth
        ]

    async def _copy(self, src: str, dst: str) -> None:
        obj = self._get(src)
        self._put(
            dst,
            _Object(obj.data, obj.content_type, dict(obj.metadata), datetime.now(UTC), obj.etag),
        )

    async def _presign(self, key: str, expires_in: int, method: Method) -> str:
        raise StorageConfigError(
            "the memory backend cannot serve presigned URLs; use STORAGE_TYPE=LOCAL with "
            "STORAGE_LOCAL_BASE_URL and STORAGE_LOCAL_SIGNING_KEY, or S3"
        )
