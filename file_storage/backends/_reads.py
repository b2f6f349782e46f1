"""The reading half of :class:`StorageBackend`: load, stream, exists, stat, listings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import final

from file_storage import _batch
from file_storage._keys import KeyLike
from file_storage._streams import closing, limit_chunks
from file_storage.backends._core import (
    BackendCore,
)
from file_storage.backends._pages import validate_cursor
from file_storage.backends._support import (
    check_range,
    check_version_id,
    check_version_sendable,
)
from file_storage.backends._write_options import as_etag
from file_storage.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
)
from file_storage.models import ObjectInfo


class Reads(BackendCore):
    """The reads of :class:`~file_storage.StorageBackend`; documented there."""

    @final
    async def load(self, path: KeyLike, *, version_id: str | None = None) -> bytes:
        """Return the whole object at ``path``.

        Args:
            version_id: read that version (from :meth:`list_versions`) instead of the
                latest.

        Raises:
            ObjectNotFoundError: no object at ``path``, or no such version of it.
        """
        key = self._key(path, "load")
        check_version_id(version_id)
        with self._translate("load", key) as call:
            check_version_sendable(version_id)
            if version_id is None:
                data = await self._load(key)
            else:
                data = await self._load_version(key, version_id)
            call.size = len(data)
            return data

    @final
    def stream(
        self,
        path: KeyLike,
        *,
        start: int | None = None,
        end: int | None = None,
        chunk_size: int | None = None,
        if_match: str | None = None,
        version_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        """Iterate over the bytes ``[start, end)`` of the object, like a slice.

        Negative ``start``/``end`` count from the end (one extra ``stat``). Memory stays
        bounded whatever the size; no chunk is longer than ``chunk_size`` (default 1 MiB).
        The key is checked now; a missing object raises at the first iteration.

        Args:
            if_match: an ETag from :meth:`stat` (its quotes may be left out): the stream
                then reads exactly that version of the object (all its bytes come from it),
                or raises
                :class:`PreconditionFailedError` when the object was replaced since.
            version_id: read that version (from :meth:`list_versions`) instead of the
                latest.

        Raises:
            ObjectNotFoundError: no object at ``path``, or no such version of it (on
                first iteration).
            PreconditionFailedError: ``if_match`` is not the current ETag (on first
                iteration).
        """
        key = self._key(path, "stream")
        size = check_range(start, end, chunk_size)
        if if_match is not None and (not isinstance(if_match, str) or not if_match):
            raise TypeError("if_match must be a non-empty str (an ETag) or None")
        check_version_id(version_id)
        if if_match is not None:
            if_match = as_etag(if_match)
        return self._translated_stream(key, start, end, size, if_match, version_id)

    async def _translated_stream(
        self,
        key: str,
        start: int | None,
        end: int | None,
        chunk_size: int,
        if_match: str | None = None,
        version_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        with self._translate("stream", key):
            check_version_sendable(version_id)  # (on first iteration, as every error)

            async def stat() -> ObjectInfo:
                if version_id is None:
                    return await self._stat(key)
                return await self._stat_version(key, version_id)

            lo, hi = start or 0, end
            if lo < 0 or (hi is not None and hi < 0):
                total = (await stat()).size
                lo, _, _ = slice(start, end).indices(total)
                _, hi, _ = slice(start, end).indices(total)
            if hi is not None and hi <= lo:
                # an empty range still says whether the object exists (and is that version)
                if if_match is not None:
                    if (await stat()).etag != if_match:
                        raise PreconditionFailedError("the object changed since that ETag")
                elif version_id is not None:
                    await stat()
                elif not await self._exists(key):
                    raise ObjectNotFoundError()
                return
            if version_id is None:
                source = self._stream(key, lo, hi, chunk_size, if_match)
            else:
                # a version never changes: if_match only has to name it
                if if_match is not None and (await stat()).etag != if_match:
                    raise PreconditionFailedError("that version has another ETag")
                source = self._stream_version(key, version_id, lo, hi, chunk_size)
            # close both generators: an abandoned stream must not hold a file or connection
            async with closing(source), closing(limit_chunks(source, chunk_size)) as chunks:
                async for chunk in chunks:
                    yield chunk

    @final
    async def exists(self, path: KeyLike) -> bool:
        """True when an object is stored at ``path`` (a folder is not an object)."""
        key = self._key(path, "exists")
        with self._translate("exists", key):
            return await self._exists(key)

    @final
    async def stat(self, path: KeyLike, *, version_id: str | None = None) -> ObjectInfo:
        """Return what the backend knows about the object at ``path``.

        Args:
            version_id: describe that version (from :meth:`list_versions`) instead of
                the latest.

        Raises:
            ObjectNotFoundError: no object at ``path``, or no such version of it.
        """
        key = self._key(path, "stat")
        check_version_id(version_id)
        with self._translate("stat", key):
            check_version_sendable(version_id)
            if version_id is None:
                return await self._stat(key)
            return await self._stat_version(key, version_id)

    @final
    async def get_size(self, path: KeyLike) -> int:
        """Return the size in bytes of the object at ``path``.

        Raises:
            ObjectNotFoundError: no object at ``path``.
        """
        key = self._key(path, "get_size")
        with self._translate("get_size", key):
            return (await self._stat(key)).size

    @final
    async def list_files(self, prefix: KeyLike = "") -> list[str]:
        """Return the keys strictly under the folder ``prefix`` (all when ``""``), sorted."""
        folder = self._prefix(prefix, "list_files")
        with self._translate("list_files", folder):
            return await self._list_files(folder)

    @final
    def iter_files(
        self, prefix: KeyLike = "", *, start_after: KeyLike | None = None, recursive: bool = True
    ) -> AsyncIterator[ObjectInfo]:
        """Iterate lazily (paginated) over the objects under ``prefix``, sorted by key.

        On S3 ``content_type`` may be ``None`` and ``metadata`` empty; :meth:`stat` has them.

        Args:
            start_after: a key (or a folder's key plus ``/``, a cursor of
                :meth:`list_page`): only objects whose keys sort after it (S3
                ``StartAfter``). It need not exist, nor lie under ``prefix`` (it is
                compared as a string).
            recursive: ``False``: only the objects directly under ``prefix``.

        Raises:
            InvalidKeyError: a bad ``prefix`` or ``start_after`` (when called).
        """
        folder = self._prefix(prefix, "iter_files")
        after = (
            None
            if start_after is None
            else validate_cursor(start_after, "iter_files", self._key_overhead)
        )
        if not isinstance(recursive, bool):
            raise TypeError("recursive must be a bool")
        if after is None and recursive:
            return self._translated_iter(folder)
        return self._translated_entries(folder, after, recursive)

    async def _translated_iter(self, folder: str) -> AsyncIterator[ObjectInfo]:
        with self._translate("iter_files", folder):
            async with closing(self._iter_files(folder)) as infos:
                async for info in infos:
                    yield info

    async def _translated_entries(
        self, folder: str, after: str | None, recursive: bool
    ) -> AsyncIterator[ObjectInfo]:
        with self._translate("iter_files", folder):
            async with closing(self._iter_entries(folder, after, recursive, 0)) as entries:
                async for entry in entries:
                    if isinstance(entry, ObjectInfo):
                        yield entry

    @final
    async def list_dirs(self, prefix: KeyLike = "") -> list[str]:
        """Return the immediate sub-folders of ``prefix`` as keys (no trailing ``/``), sorted."""
        folder = self._prefix(prefix, "list_dirs")
        with self._translate("list_dirs", folder):
            return sorted(await self._list_dirs(folder))

    @final
    async def get_total_size(self, prefix: KeyLike = "") -> int:
        """Return the bytes stored under ``prefix`` (everything when ``""``)."""
        folder = self._prefix(prefix, "get_total_size")
        with self._translate("get_total_size", folder):
            return await self._total_size(folder)

    @final
    async def load_many(
        self, paths: Iterable[KeyLike], *, concurrency: int = 16
    ) -> dict[str, bytes | Exception]:
        """Load many objects, at most ``concurrency`` at once, each as :meth:`load` would.

        Returns:
            For each path as given (``str(path)``, once however often it is given), in
            input order: its bytes, or the :class:`StorageError` it raised
            (:class:`ObjectNotFoundError`, :class:`InvalidKeyError`, ...).

        Raises:
            TypeError: a path of the wrong type. ValueError: ``concurrency < 1``.
        """
        return await _batch.load_many(self, paths, concurrency)
