from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from file_storage import (
    ObjectInfo,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageBackend,
    StorageSettings,
)


class Stored(NamedTuple):
    data: bytes
    content_type: str
    metadata: dict[str, str]
    modified: datetime
    cache_control: str | None = None
    content_disposition: str | None = None


class DictStorageBackend(StorageBackend):
    """Objects in a dict, key -> Stored."""

    def __init__(self, *, max_size_bytes: int | None = None) -> None:
        super().__init__(max_size_bytes=max_size_bytes)
        self._objects: dict[str, Stored] = {}

    def _get(self, key: str) -> Stored:
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFoundError() from None

    def _info(self, key: str) -> ObjectInfo:
        obj = self._get(key)
        etag = '"' + hashlib.md5(obj.data, usedforsecurity=False).hexdigest() + '"'
        etag = etag[:-1] + f'-{obj.modified.timestamp()}"'  # a new write, a new ETag
        return ObjectInfo(
            key,
            len(obj.data),
            obj.modified,
            etag,
            obj.content_type,
            dict(obj.metadata),
            obj.cache_control,
            obj.content_disposition,
        )

    async def _save(self, key, body, content_type, metadata, options: Any = None) -> None:
        if isinstance(body, bytes):
            data = body
        else:  # joined as they come: a million tiny chunks in a list are ~40x their bytes
            buf = bytearray()
            async for chunk in body:
                buf += chunk
            data = bytes(buf)
        # options (None for a plain write): the condition and headers of the write;
        # checked and stored with no await in between, so the condition is atomic
        if options is not None and not options.overwrite and key in self._objects:
            raise PreconditionFailedError("an object exists at this key")
        match = options.if_match if options is not None else None
        if match is not None and (key not in self._objects or self._info(key).etag != match):
            raise PreconditionFailedError("the object changed since that ETag")
        headers = (options.cache_control, options.content_disposition) if options else ()
        self._objects[key] = Stored(data, content_type, dict(metadata), _now(), *headers)

    async def _load(self, key: str) -> bytes:
        return self._get(key).data

    async def _stream(self, key, start, end, chunk_size, if_match) -> AsyncIterator[bytes]:
        if if_match is not None and self._info(key).etag != if_match:
            raise PreconditionFailedError("the object changed since that ETag")
        data = self._get(key).data[start:end]  # bytes are immutable: this version stays
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

    async def _copy(self, src: str, dst: str, options: Any = None) -> None:
        obj = self._get(src)._replace(modified=_now())
        if options is not None and options.cache_control is not None:
            obj = obj._replace(cache_control=options.cache_control)
        if options is not None and options.content_disposition is not None:
            obj = obj._replace(content_disposition=options.content_disposition)
        self._objects[dst] = obj


def _now() -> datetime:
    return datetime.now(UTC)


def build(settings: StorageSettings) -> StorageBackend:
    """The entry point: file_storage calls it with the settings when STORAGE_TYPE=DICT."""
    return DictStorageBackend()
