from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from file_storage import (
    ObjectInfo,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageBackend,
    StorageSettings,
)


class DictStorageBackend(StorageBackend):
    """Objects in a dict: key -> (bytes, content type, metadata, modified)."""

    def __init__(self, *, max_size_bytes: int | None = None) -> None:
        super().__init__(max_size_bytes=max_size_bytes)
        self._objects: dict[str, tuple[bytes, str, dict[str, str], datetime]] = {}

    def _get(self, key: str) -> tuple[bytes, str, dict[str, str], datetime]:
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFoundError() from None

    def _info(self, key: str) -> ObjectInfo:
        data, content_type, metadata, modified = self._get(key)
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        return ObjectInfo(key, len(data), modified, etag, content_type, dict(metadata))

    async def _save(self, key, body, content_type, metadata) -> None:
        data = body if isinstance(body, bytes) else b"".join([c async for c in body])
        self._objects[key] = (data, content_type, dict(metadata), datetime.now(UTC))

    async def _load(self, key: str) -> bytes:
        return self._get(key)[0]

    async def _stream(self, key, start, end, chunk_size, if_match) -> AsyncIterator[bytes]:
        if if_match is not None and self._info(key).etag != if_match:
            raise PreconditionFailedError("the object changed since that ETag")
        data = self._get(key)[0][start:end]  # bytes are immutable: this version stays
        for offset in range(0, len(data), chunk_size):
            yield data[offset : offset + chunk_size]

    async def _exists(self, key: str) -> bool:
        return key in self._objects

    async def _stat(self, key: str) -> ObjectInfo:
        return self._info(key)

    async def _delete(self, key: str) -> None:
        self._objects.pop(key, None)

    async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        for key in sorted(k for k in self._objects if k.startswith(prefix)):
            if key in self._objects:
                yield self._info(key)

    async def _list_dirs(self, prefix: str) -> list[str]:
        below = (k[len(prefix) :] for k in self._objects if k.startswith(prefix))
        return sorted({prefix + rest.split("/")[0] for rest in below if "/" in rest})

    async def _copy(self, src: str, dst: str) -> None:
        data, content_type, metadata, _ = self._get(src)
        self._objects[dst] = (data, content_type, dict(metadata), datetime.now(UTC))


def build(settings: StorageSettings) -> StorageBackend:
    """The entry point: file_storage calls it with the settings when STORAGE_TYPE=DICT."""
    return DictStorageBackend()
