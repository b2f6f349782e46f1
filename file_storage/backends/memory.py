"""An in-memory backend with the same semantics as the others, for applications' tests."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from bisect import bisect_left, bisect_right, insort
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import SecretStr

from file_storage._quota.ledger import VERSION_SEP
from file_storage._settings_common import check_base_url, checked
from file_storage.backends._pages import Entry, folder_end
from file_storage.backends._pins import looked_at, moving
from file_storage.backends._router_signed import RouterSigned
from file_storage.backends._version_hooks import NULL_VERSION, Versioning
from file_storage.backends._write_options import PLAIN, WriteOptions
from file_storage.errors import (
    ObjectConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from file_storage.models import ObjectInfo, ObjectVersion

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


class MemoryStorageBackend(RouterSigned):
    """Keeps objects in a dict. Each instance is its own empty store.

    Args:
        base_url: where the app mounts ``signed_url_router``, which answers this
            backend's presigned URLs as it does the local backend's (settings: the same
            ``STORAGE_LOCAL_BASE_URL``).
        signing_key: HMAC key of presigned URLs, at least 32 characters
            (``STORAGE_LOCAL_SIGNING_KEY``).
        public_base_url: for :meth:`get_public_url` (``STORAGE_LOCAL_PUBLIC_BASE_URL``).
    """

    _streams_conditional_writes = True  # (every object is held whole anyway)
    # several worker processes each hold their own store: a URL one signed reaches
    # another one as often as not, and "invalid signature" alone reads as a wrong key
    _refused_hint = (
        "; a memory backend answers only the URLs it signed itself "
        "(each worker process of a server has its own store)"
    )

    def __init__(
        self,
        *,
        max_size_bytes: int | None = None,
        quota_refresh_seconds: float | None = None,
        quota_redis_url: str | SecretStr | None = None,
        quota_redis_namespace: str | None = None,
        quota_lease_seconds: float = 60.0,
        quota_fail_open: bool = False,
        expire_interval_seconds: float | None = None,
        base_url: str | None = None,
        signing_key: str | SecretStr | None = None,
        public_base_url: str | None = None,
    ) -> None:
        super().__init__(
            max_size_bytes=max_size_bytes,
            quota_refresh_seconds=quota_refresh_seconds,
            quota_redis_url=quota_redis_url,
            quota_redis_namespace=quota_redis_namespace,
            quota_lease_seconds=quota_lease_seconds,
            quota_fail_open=quota_fail_open,
            expire_interval_seconds=expire_interval_seconds,
        )
        self._set_signing(base_url, signing_key)
        self._public_base_url = checked("public_base_url", check_base_url, public_base_url)
        self._objects: dict[str, _Object] = {}
        self._folders: dict[str, int] = {}  # folder ("a/b/") -> number of objects below it
        self._versioning_state: Versioning = "off"
        self._live_ids: dict[str, str] = {}  # key -> version id of its object ("null": absent)
        self._history: dict[str, list[tuple[str, _Object]]] = {}  # prior versions, oldest first
        self._index: list[str] = []  # the keys, sorted: listings bisect instead of sorting

    def __repr__(self) -> str:
        return f"MemoryStorageBackend(objects={len(self._objects)})"

    def _get(self, key: str) -> _Object:
        try:
            return self._objects[key]
        except KeyError:
            raise ObjectNotFoundError() from None

    def _check_layout(self, key: str) -> list[str]:
        """Raise ObjectConflictError when ``key`` is a folder or under an object; return
        its folders. Checked before a write's condition and before a stream is read, as
        the local backend (which must make the folders first) does."""
        if key + "/" in self._folders:
            # key=: on copy/move the clash is at the destination, not the source the call names
            raise ObjectConflictError("a folder exists at this key", key=key)
        parents = _parents(key)
        for folder in parents:
            if folder[:-1] in self._objects:
                raise ObjectConflictError(
                    f"an object exists at {folder[:-1]!r}, so it cannot be a folder", key=key
                )
        return parents

    def _put(self, key: str, obj: _Object, options: WriteOptions = PLAIN) -> str:
        # no await in here: the checks and the write are one atomic step on the loop
        parents = self._check_layout(key)
        current = self._objects.get(key)
        if not options.overwrite and current is not None:
            raise PreconditionFailedError("an object exists at this key (overwrite=False)")
        if options.if_match is not None and (current is None or current.etag != options.if_match):
            raise PreconditionFailedError("the object is not the version if_match names")
        if key not in self._objects:
            for folder in parents:
                self._folders[folder] = self._folders.get(folder, 0) + 1
            insort(self._index, key)
        self._retire(key, replaced=True)
        self._objects[key] = obj
        return obj.etag

    def _remove(self, key: str, *, keep: bool = True) -> bool:
        if keep and key in self._objects:
            self._retire(key, replaced=False)
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

    def _listed(self, key: str, obj: _Object) -> ObjectInfo:
        # like the listings of S3, GCS, Azure and local disk: no content type, metadata
        # or headers (stat has them), so code that reads them from a listing fails here
        # too, in the tests that run on memory, rather than only in production
        return ObjectInfo(
            key=key, size=len(obj.data), last_modified=obj.last_modified, etag=obj.etag
        )

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
        options: WriteOptions = PLAIN,
    ) -> str:
        if not isinstance(body, bytes):
            self._check_layout(key)  # before the stream is read (and counted by quota)
            # joined as they come: a list of a million tiny chunks is ~40x their bytes
            buf = bytearray()
            async for chunk in body:
                buf += chunk
            body = bytes(buf)
        return self._put(key, self._new(body, content_type, metadata, options), options)

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

    async def _delete_expired(self, key: str, listed: ObjectInfo) -> bool:
        # compared and removed with no await between: no write can land in between
        obj = self._objects.get(key)
        if obj is None or (obj.etag, obj.last_modified) != (listed.etag, listed.last_modified):
            return False
        self._remove(key)
        return True

    async def _move(self, src: str, dst: str) -> str | None:
        # the source is deleted only while it is the object the move found, compared and
        # deleted with nothing able to run between (_delete does not wait): a write
        # landing on it after the copy (a hook's, a subclass's) is kept, as on S3, GCS
        # and Azure. The copy takes only that object too (see _pins): one landing before
        # the copy fails the move with nothing at dst
        found = self._get(src)

        async def delete_source() -> None:
            now = self._objects.get(src)
            if now is found:
                await self._delete(src)
            elif now is not None:
                raise PreconditionFailedError(
                    "the source was written during the move: it is kept, and the "
                    "destination holds the copy"
                )

        with moving(src, found):
            return await self._copy_then_delete(src, dst, delete_source)

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
                yield self._listed(key, obj)
            pos = bisect_right(index, key)

    async def _list_dirs(self, prefix: str) -> list[str]:
        depth = prefix.count("/") + 1
        return [
            folder[:-1]
            for folder in self._folders
            if folder.startswith(prefix) and folder.count("/") == depth
        ]

    async def _copy(self, src: str, dst: str, options: WriteOptions = PLAIN) -> str:
        obj = self._get(src)
        found = looked_at(src)
        if found is not None and obj is not found:
            raise PreconditionFailedError(
                "the source was written during the move: it is kept, and nothing was copied"
            )
        return self._put(
            dst,
            dataclasses.replace(
                obj,
                metadata=dict(obj.metadata),
                last_modified=datetime.now(UTC),
                cache_control=options.cache_control or obj.cache_control,
                content_disposition=options.content_disposition or obj.content_disposition,
            ),
        )

    # ---------------------------------------------------------------- versions

    def _retire(self, key: str, *, replaced: bool) -> None:
        """Before the object at ``key`` is replaced or deleted: keep it as a prior version
        when versioning says so (S3's rules), and give a replacing object its id."""
        state = self._versioning_state
        if state == "off":
            return
        live_id = self._live_ids.pop(key, "null")
        history = self._history.get(key, [])
        if state == "suspended":  # the new write is the "null" version: it replaces that one
            history = [(vid, obj) for vid, obj in history if vid != "null"]
        obj = self._objects.get(key)
        if obj is not None and (state == "enabled" or live_id != "null"):
            history.append((live_id, obj))
        if history:
            self._history[key] = history
        else:
            self._history.pop(key, None)
        if replaced and state == "enabled":
            self._live_ids[key] = uuid.uuid4().hex

    def _version(self, key: str, version_id: str) -> _Object:
        obj = self._objects.get(key)
        if obj is not None and self._live_ids.get(key, "null") == version_id:
            return obj
        for vid, old in self._history.get(key, ()):
            if vid == version_id:
                return old
        raise ObjectNotFoundError("no such version")

    async def _versioning(self) -> Versioning:
        return self._versioning_state

    async def _set_versioning(self, enabled: bool) -> None:
        self._versioning_state = "enabled" if enabled else "suspended"

    async def _list_versions(self, key: str) -> list[ObjectVersion]:
        versions = [
            ObjectVersion(vid, len(obj.data), obj.last_modified, False)
            for vid, obj in reversed(self._history.get(key, []))
        ]
        if (live := self._objects.get(key)) is not None:
            vid = self._live_ids.get(key, "null")
            versions.insert(0, ObjectVersion(vid, len(live.data), live.last_modified, True))
        return versions

    async def _stat_version(self, key: str, version_id: str) -> ObjectInfo:
        return self._info(key, self._version(key, version_id))

    async def _stream_version(
        self, key: str, version_id: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        data = self._version(key, version_id).data
        stop = len(data) if end is None else min(end, len(data))
        view = memoryview(data)
        for offset in range(start, stop, chunk_size):
            yield bytes(view[offset : min(offset + chunk_size, stop)])

    async def _restore_version(self, key: str, version_id: str) -> str:
        old = self._version(key, version_id)
        return self._put(key, dataclasses.replace(old, last_modified=datetime.now(UTC)))

    async def _purge_versions(
        self, key: str, versions: list[ObjectVersion], everything: bool
    ) -> None:
        doomed = {v.version_id for v in versions}
        listed = {(v.version_id, v.last_modified, v.size) for v in versions}
        # the live object goes only with everything (keep=0): else the caller kept the
        # latest version it listed, so a live object named here was written since under
        # an id used again ("null", versioning suspended meanwhile): a newer write
        if everything and key in self._objects and self._live_ids.get(key, "null") in doomed:
            self._live_ids.pop(key, None)
            self._remove(key, keep=False)
        # a prior version goes when it is the one listed: a "null" version written since
        # (suspended meanwhile, then overwritten) has the id but is a newer write
        history = [
            (vid, obj)
            for vid, obj in self._history.get(key, [])
            if vid not in doomed
            or (
                vid == NULL_VERSION
                and not everything
                and (vid, obj.last_modified, len(obj.data)) not in listed
            )
        ]
        if history:
            self._history[key] = history
        else:
            self._history.pop(key, None)

    async def _usage_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in self._iter_files(prefix):
            yield info
        for key in sorted(k for k in self._history if k.startswith(prefix)):
            for vid, obj in self._history.get(key, []):
                yield self._info(f"{key}{VERSION_SEP}{vid}", obj)
