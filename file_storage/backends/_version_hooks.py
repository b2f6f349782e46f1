"""The version hooks' defaults, for a backend that keeps no versions.

Each object is its one version ``"null"`` (what S3 reports for an object written while
versioning was off), and ``set_versioning`` raises. Backends that keep versions (S3, local,
memory, GCS, Azure) override all of these; the public methods that call them live in
:mod:`file_storage.backends._versions` (and ``_reads`` for ``version_id=``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

from file_storage._streams import CHUNK_SIZE
from file_storage.errors import ObjectNotFoundError, StorageConfigError
from file_storage.models import ObjectInfo, ObjectVersion

__all__ = ["NULL_VERSION", "VersionHooks", "Versioning"]

Versioning = Literal["off", "enabled", "suspended"]
NULL_VERSION = "null"  # the version id of an object written while versioning was off


class VersionHooks:
    """The ``_<verb>`` version hooks of :class:`~file_storage.backends._core.BackendCore`."""

    if TYPE_CHECKING:

        def _not_found(self, exc: BaseException) -> bool: ...

        async def _stat(self, key: str) -> ObjectInfo: ...

        async def _delete(self, key: str) -> None: ...

        def _stream(
            self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
        ) -> AsyncIterator[bytes]: ...

    def _no_versions(self) -> StorageConfigError:
        return StorageConfigError(f"{type(self).__name__} does not keep versions")

    async def _versioning(self) -> Versioning:
        """The store's versioning state: ``"off"`` (never enabled), enabled, suspended."""
        return "off"

    async def _never_versioned(self) -> bool:
        """Known never to have kept versions: ``set_versioning(False)`` has nothing to
        suspend. A backend whose ``"off"`` may be a guess answers ``False`` then."""
        return await self._versioning() == "off"

    async def _set_versioning(self, enabled: bool) -> None:
        raise self._no_versions()

    async def _list_versions(self, key: str) -> list[ObjectVersion]:
        """The versions of ``key``, newest first (delete markers left out)."""
        try:
            info = await self._stat(key)
        except Exception as exc:
            if not self._not_found(exc):
                raise
            return []
        return [ObjectVersion(NULL_VERSION, info.size, info.last_modified, True)]

    def _only_version(self, version_id: str) -> None:
        if version_id != NULL_VERSION:
            raise ObjectNotFoundError(f"no version {version_id!r}: only {NULL_VERSION!r} is kept")

    async def _stat_version(self, key: str, version_id: str) -> ObjectInfo:
        self._only_version(version_id)
        return await self._stat(key)

    async def _stream_version(
        self, key: str, version_id: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, end)`` of one version of ``key``, like ``_stream``."""
        self._only_version(version_id)
        async for chunk in self._stream(key, start, end, chunk_size, None):
            yield chunk

    async def _load_version(self, key: str, version_id: str) -> bytes:
        chunks = self._stream_version(key, version_id, 0, None, CHUNK_SIZE)
        return b"".join([chunk async for chunk in chunks])

    async def _restore_version(self, key: str, version_id: str) -> str | None:
        """Write that version of ``key`` as its new latest version (content type and
        metadata included); return its ETag as ``_save`` does."""
        # the one version is the latest already: nothing to write once it is known to exist
        return (await self._stat_version(key, version_id)).etag

    async def _purge_versions(
        self, key: str, doomed: list[ObjectVersion], everything: bool
    ) -> None:
        """Delete these versions of ``key`` for good, as listed; ``everything``: no
        version is left, so delete markers go too (S3). Else the latest version listed
        was kept: one of ``doomed`` whose id a write since took again (``"null"``,
        versioning suspended meanwhile) is that newer write, never deleted."""
        if any(v.version_id == NULL_VERSION for v in doomed):
            await self._delete(key)
