"""The abstract :class:`StorageBackend`: one contract, many backends.

Public methods are final and run the same steps in order: validate the key, reserve
quota, call the backend's ``_hook``, translate errors, return a normalized key or
:class:`ObjectInfo`. Backends implement only the hooks; hooks get valid keys and never
re-validate or count quota.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Iterable,
    Iterator,
    Mapping,
)
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, final

import aiofiles
import aiofiles.os

from file_storage import _batch
from file_storage._keys import KeyLike, validate_key, validate_prefix
from file_storage._mime import guess_content_type
from file_storage._quota import QuotaManager, Reservation
from file_storage._streams import CHUNK_SIZE, Progress, closing, limit_chunks
from file_storage.backends._support import (
    Counter,
    check_range,
    file_chunks,
    has_landed,
    is_caller_error,
    log_failure,
    map_os_error,
    mark_landed,
    metered,
    normalize_metadata,
    source_kept,
)
from file_storage.errors import (
    InvalidKeyError,
    InvalidMetadataError,
    ObjectConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageQuotaExceededError,
    StorageUnavailableError,
)
from file_storage.models import ObjectInfo, Usage

__all__ = [
    "Content",
    "InvalidKeyError",
    "InvalidMetadataError",
    "KeyLike",
    "ObjectConflictError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "PreconditionFailedError",
    "Progress",
    "StorageBackend",
    "StorageConfigError",
    "StorageError",
    "StoragePermissionError",
    "StorageQuotaExceededError",
    "StorageUnavailableError",
    "Usage",
]

logger = logging.getLogger("file_storage")

Content = bytes | bytearray | memoryview | AsyncIterable[bytes]
Method = Literal["GET", "PUT"]
MAX_PRESIGN_SECONDS = 604800  # 7 days: SigV4's maximum (AWS, "Sharing objects with presigned URLs")
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys a request


class _Call:
    """What one public call did, for its log line: bytes moved and requests sent."""

    __slots__ = ("attempts", "size")

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.attempts = 0


_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("file_storage_call")


def count_attempt() -> None:
    """Count one request sent (a retry included) against the public call running now."""
    call = _call.get(None)
    if call is not None:
        call.attempts += 1


class StorageBackend(abc.ABC):
    """Where an application keeps its files: the same API on local disk, S3 and memory.

    Args:
        max_size_bytes: cap on the total bytes stored under the backend's root or
            prefix (``None``: no cap). A write that would cross it raises
            :class:`StorageQuotaExceededError` and writes nothing.
        quota_refresh_seconds: re-scan quota usage at most this often, to see writes
            made by other processes (``None``: only on :meth:`refresh_usage`).
    """

    #: bytes the backend puts in front of every key (the S3 prefix); keys must leave room
    _key_overhead: int = 0

    def __init__(
        self,
        *,
        max_size_bytes: int | None = None,
        quota_refresh_seconds: float | None = None,
    ) -> None:
        self._quotas = QuotaManager(self._usage_scan, quota_refresh_seconds)
        if max_size_bytes is not None:
            self._quotas.set("", max_size_bytes)

    # ---------------------------------------------------------------- plumbing

    @property
    def max_size_bytes(self) -> int | None:
        """The backend-wide quota in bytes, or ``None``."""
        return self._quotas.limit("")

    def _key(self, path: KeyLike, operation: str) -> str:
        return validate_key(path, operation, reserved_bytes=self._key_overhead)

    def _prefix(self, prefix: KeyLike, operation: str) -> str:
        return validate_prefix(prefix, operation, reserved_bytes=self._key_overhead)

    def _map_error(self, exc: Exception, operation: str, key: str | None) -> StorageError | None:
        """Turn a foreign exception into a StorageError (``None``: let it through, a bug)."""
        if isinstance(exc, OSError):
            return map_os_error(exc, operation, key)
        return None

    @contextlib.contextmanager
    def _translate(
        self,
        operation: str,
        key: str | None,
        size: int | None = None,
        *,
        conflict_key: str | None = None,
    ) -> Iterator[_Call]:
        """Translate foreign errors, give every error its operation and key, and log.

        ``conflict_key``: the key an :class:`ObjectConflictError` is about when the hook
        did not say (a copy's or move's destination).
        """
        started = time.perf_counter()
        call = _Call(size)
        token = _call.set(call)
        try:
            yield call
        except StorageError as exc:
            if not exc.operation:
                exc.operation = operation
            if exc.key is None:
                exc.key = conflict_key if isinstance(exc, ObjectConflictError) else None
                exc.key = exc.key or key
            log_failure(operation, key, exc, started)
            raise
        except Exception as exc:
            if is_caller_error(exc):
                raise
            mapped = self._map_error(exc, operation, key)
            if mapped is None:
                raise
            if not mapped.operation:
                mapped.operation = operation
            if mapped.key is None:
                mapped.key = conflict_key if isinstance(mapped, ObjectConflictError) else None
                mapped.key = mapped.key or key
            log_failure(operation, key, mapped, started)
            raise mapped from exc
        finally:
            with contextlib.suppress(ValueError):  # a generator resumed in another context
                _call.reset(token)
        if logger.isEnabledFor(logging.DEBUG):
            duration = time.perf_counter() - started
            logger.debug(
                "%s %r done in %.1f ms%s%s",
                operation,
                key,
                duration * 1000,
                "" if call.size is None else f", {call.size} bytes",
                f", {call.attempts} requests" if call.attempts else "",
                extra={
                    "operation": operation,
                    "key": key,
                    "size": call.size,
                    "duration": duration,
                    "attempts": call.attempts,
                },
            )

    # ---------------------------------------------------------------- writes

    @final
    async def save(
        self,
        path: KeyLike,
        content: Content,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Store ``content`` at ``path``, replacing any object there.

        Args:
            path: the key.
            content: bytes-like, or an async iterable of bytes, streamed and never
                buffered whole (S3 turns a long stream into a parallel multipart upload).
            content_type: MIME type; guessed from the key's extension when ``None``.
            metadata: user metadata: names are HTTP tokens (returned lower-cased by
                :meth:`stat`), values any ``str``; at most 2 KiB in all, as S3 counts it.
            progress: called as ``progress(bytes_done, bytes_total_or_None)``.

        Returns:
            The normalized key.

        Raises:
            InvalidKeyError: bad key. InvalidMetadataError: bad metadata (nothing written).
            StorageQuotaExceededError: over quota (nothing written). StorageError: the key
            is a folder or under an object, or I/O failed.
        """
        key = self._key(path, "save")
        ctype = content_type or guess_content_type(key)
        meta = normalize_metadata(metadata, "save", key)
        if isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
            with self._translate("save", key, len(data)):
                async with self._quotas.hold(key):
                    reservation = await self._quotas.reserve(key, len(data), "save")
                    await self._write(reservation, self._save(key, data, ctype, meta), len(data))
                if progress is not None:
                    progress(len(data), len(data))
            return key
        if not isinstance(content, AsyncIterable):
            raise TypeError("content must be bytes-like or an async iterable of bytes")
        with self._translate("save", key) as call:
            async with self._quotas.hold(key):
                reservation = await self._quotas.reserve(key, 0, "save")
                counter = Counter()
                body = metered(content, counter, reservation, progress)
                await self._write(reservation, self._save(key, body, ctype, meta), counter)
            call.size = counter.value
        return key

    @staticmethod
    async def _write(
        reservation: Reservation | None,
        hook: Awaitable[None],
        size: int | Counter,
    ) -> None:
        """Await a write hook, committing its reservation on success and freeing it on failure."""
        try:
            await hook
        except BaseException as exc:
            if reservation is not None:
                if has_landed(exc):  # cancelled after the write became visible: count it
                    reservation.commit(size if isinstance(size, int) else size.value)
                else:
                    reservation.release()
            raise
        if reservation is not None:
            reservation.commit(size if isinstance(size, int) else size.value)

    @final
    async def upload_file(
        self,
        local_path: str | os.PathLike[str],
        path: KeyLike,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> str:
        """Store the local file ``local_path`` at ``path``, streamed from disk.

        On S3 a file above the multipart threshold is sent as parts in parallel, and a
        failure or cancellation aborts the upload, leaving nothing behind.

        Returns:
            The normalized key.

        Raises:
            ObjectNotFoundError: ``local_path`` does not exist. Otherwise as :meth:`save`.
        """
        key = self._key(path, "upload_file")
        ctype = content_type or guess_content_type(key)
        meta = normalize_metadata(metadata, "upload_file", key)
        source = Path(local_path)
        with self._translate("upload_file", key) as call:
            try:
                size = call.size = (await aiofiles.os.stat(source)).st_size
            except FileNotFoundError as exc:
                raise ObjectNotFoundError(f"local file {str(source)!r} not found") from exc
            async with self._quotas.hold(key):
                reservation = await self._quotas.reserve(key, size, "upload_file")
                hook = self._upload_file(source, key, size, ctype, meta, progress)
                await self._write(reservation, hook, size)
        return key

    @final
    async def copy(self, src: KeyLike, dst: KeyLike) -> str:
        """Copy ``src`` to ``dst`` (server-side on S3), keeping content type and metadata.

        Returns:
            The ``dst`` key.

        Raises:
            ObjectNotFoundError: ``src`` does not exist.
        """
        src_key = self._key(src, "copy")
        dst_key = self._key(dst, "copy")
        with self._translate("copy", src_key, conflict_key=dst_key):
            if src_key == dst_key:
                if not await self._exists(src_key):
                    raise ObjectNotFoundError()
                return dst_key
            # the source is held too: its size, reserved for dst, cannot change under the copy
            async with self._quotas.hold(src_key, dst_key):
                reservation, size = await self._reserve_copy(src_key, dst_key, "copy")
                await self._write(reservation, self._copy(src_key, dst_key), size)
        return dst_key

    @final
    async def move(self, src: KeyLike, dst: KeyLike) -> str:
        """Move ``src`` to ``dst``: a copy then a delete (a rename on local disk).

        On S3 (and any backend without a rename) the copy and the delete are two steps:
        if the delete fails, ``dst`` stays written, ``src`` stays too, the delete's error
        is raised, and quota counts both objects (what is really stored).

        Returns:
            The ``dst`` key.

        Raises:
            ObjectNotFoundError: ``src`` does not exist.
        """
        src_key = self._key(src, "move")
        dst_key = self._key(dst, "move")
        with self._translate("move", src_key, conflict_key=dst_key):
            if src_key == dst_key:
                if not await self._exists(src_key):
                    raise ObjectNotFoundError()
                return dst_key
            async with self._quotas.hold(src_key, dst_key):
                reservation, size = await self._reserve_copy(src_key, dst_key, "move", moving=True)
                try:
                    await self._write(reservation, self._move(src_key, dst_key), size)
                except BaseException as exc:
                    # landed: dst is counted; a rename also took the source away, while
                    # a copy whose delete failed left it (still counted)
                    if has_landed(exc) and not source_kept(exc):
                        self._quotas.forget(src_key)
                    raise
                self._quotas.forget(src_key)
        return dst_key

    async def _reserve_copy(
        self, src: str, dst: str, operation: str, *, moving: bool = False
    ) -> tuple[Reservation | None, int]:
        if not self._quotas:
            return None, 0
        size = self._quotas.size_of(src)
        if size is None:
            size = (await self._stat(src)).size
        frees = src if moving else None
        return await self._quotas.reserve(dst, size, operation, frees=frees), size

    # ---------------------------------------------------------------- reads

    @final
    async def load(self, path: KeyLike) -> bytes:
        """Return the whole object at ``path``.

        Raises:
            ObjectNotFoundError: no object at ``path``.
        """
        key = self._key(path, "load")
        with self._translate("load", key) as call:
            data = await self._load(key)
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
    ) -> AsyncIterator[bytes]:
        """Iterate over the bytes ``[start, end)`` of the object, like a slice.

        Negative ``start``/``end`` count from the end (one extra ``stat``). Memory stays
        bounded whatever the size; no chunk is longer than ``chunk_size`` (default 1 MiB).
        The key is checked now; a missing object raises at the first iteration.

        Args:
            if_match: an ETag from :meth:`stat`: the stream then reads exactly that version
                of the object (all its bytes come from it), or raises
                :class:`PreconditionFailedError` when the object was replaced since.

        Raises:
            ObjectNotFoundError: no object at ``path`` (on first iteration).
            PreconditionFailedError: ``if_match`` is not the current ETag (on first
                iteration).
        """
        key = self._key(path, "stream")
        size = check_range(start, end, chunk_size)
        if if_match is not None and (not isinstance(if_match, str) or not if_match):
            raise TypeError("if_match must be a non-empty str (an ETag) or None")
        return self._translated_stream(key, start, end, size, if_match)

    async def _translated_stream(
        self,
        key: str,
        start: int | None,
        end: int | None,
        chunk_size: int,
        if_match: str | None = None,
    ) -> AsyncIterator[bytes]:
        with self._translate("stream", key):
            lo, hi = start or 0, end
            if lo < 0 or (hi is not None and hi < 0):
                total = (await self._stat(key)).size
                lo, _, _ = slice(start, end).indices(total)
                _, hi, _ = slice(start, end).indices(total)
            if hi is not None and hi <= lo:
                # an empty range still says whether the object exists (and is that version)
                if if_match is not None:
                    if (await self._stat(key)).etag != if_match:
                        raise PreconditionFailedError("the object changed since that ETag")
                elif not await self._exists(key):
                    raise ObjectNotFoundError()
                return
            source = self._stream(key, lo, hi, chunk_size, if_match)
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
    async def stat(self, path: KeyLike) -> ObjectInfo:
        """Return what the backend knows about the object at ``path``.

        Raises:
            ObjectNotFoundError: no object at ``path``.
        """
        key = self._key(path, "stat")
        with self._translate("stat", key):
            return await self._stat(key)

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
    async def download_file(
        self,
        path: KeyLike,
        local_path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
    ) -> Path:
        """Write the object at ``path`` to the local file ``local_path``.

        Parent folders are created. Bytes go to a temp file beside ``local_path`` that is
        renamed into place once its size is verified, so a failed download leaves nothing.

        Args:
            progress: called as ``progress(bytes_done, bytes_total)``.

        Returns:
            ``local_path`` as a :class:`pathlib.Path`.

        Raises:
            ObjectNotFoundError: no object at ``path``.
        """
        return await self._download(path, local_path, progress)

    async def _download(
        self, path: KeyLike, local_path: str | os.PathLike[str], progress: Progress | None
    ) -> Path:
        key = self._key(path, "download_file")
        target = Path(local_path)
        with self._translate("download_file", key) as call:
            await aiofiles.os.makedirs(target.parent, exist_ok=True)
            # cut by UTF-8 bytes, never mid-character: a name is at most 255 bytes
            stem = os.fsencode(target.name)[:200].decode("utf-8", "ignore")
            tmp = target.with_name(f".{stem}.{uuid.uuid4().hex[:12]}.part")
            try:
                expected = call.size = await self._download_file(key, tmp, progress)
                written = (await aiofiles.os.stat(tmp)).st_size
                if written != expected:
                    raise StorageUnavailableError(
                        f"download incomplete: got {written} of {expected} bytes"
                    )
                await aiofiles.os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    await aiofiles.os.remove(tmp)
                raise
        return target

    # ---------------------------------------------------------------- deletes

    @final
    async def delete(self, path: KeyLike) -> None:
        """Delete the object at ``path``; a missing object is not an error."""
        key = self._key(path, "delete")
        with self._translate("delete", key):
            async with self._quotas.hold(key):
                await self._delete(key)
                self._quotas.forget(key)

    @final
    async def delete_many(self, paths: Iterable[KeyLike]) -> None:
        """Delete every key of ``paths`` (batched: S3 sends 1000 a request); idempotent.

        Every key is validated before anything is deleted.
        """
        keys = list(dict.fromkeys(self._key(p, "delete_many") for p in paths))
        if not keys:
            return
        with self._translate("delete_many", keys[0] if len(keys) == 1 else None, len(keys)):
            step = DELETE_BATCH if self._quotas else len(keys)  # bounds the locks held at once
            for start in range(0, len(keys), step):
                await self._delete_counted(keys[start : start + step])

    async def _delete_counted(self, keys: list[str]) -> None:
        """Delete ``keys`` holding their locks, then take them out of the quota ledger."""
        async with self._quotas.hold(*keys):
            await self._delete_many(keys)
            for key in keys:
                self._quotas.forget(key)

    @final
    async def delete_prefix(self, prefix: KeyLike) -> int:
        """Delete every object strictly under the folder ``prefix``; ``""`` deletes all.

        Returns:
            How many objects were deleted.
        """
        folder = self._prefix(prefix, "delete_prefix")
        with self._translate("delete_prefix", folder):
            if not self._quotas.overlaps(folder):
                return await self._delete_prefix(folder)
            # under a quota: delete what one listing finds, key by key locked and forgotten,
            # so that a write racing the delete is either deleted or counted, never lost
            keys = await self._list_files(folder)
            for start in range(0, len(keys), DELETE_BATCH):
                await self._delete_counted(keys[start : start + DELETE_BATCH])
            return len(keys)

    # ---------------------------------------------------------------- batches

    @final
    async def save_many(
        self,
        items: Mapping[KeyLike, Content] | Iterable[tuple[KeyLike, Content]],
        *,
        concurrency: int = 16,
    ) -> dict[str, str | Exception]:
        """Save many objects, at most ``concurrency`` at once, each as :meth:`save` would.

        Quota is checked per item, so one object over quota fails alone.

        Args:
            items: a mapping path -> content, or an iterable of ``(path, content)`` pairs
                (read whole before the first write; the contents are not read then).

        Returns:
            For each path as given (``str(path)``), in input order: its key, or the
            :class:`StorageError` that item raised (an invalid key included). One failure
            hides no other.

        Raises:
            TypeError: a path or a content of the wrong type (nothing is written).
            ValueError: a path given twice, or ``concurrency < 1`` (nothing is written).
        """
        return await _batch.save_many(self, items, concurrency)

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

    # ---------------------------------------------------------------- listings

    @final
    async def list_files(self, prefix: KeyLike = "") -> list[str]:
        """Return the keys strictly under the folder ``prefix`` (all when ``""``), sorted."""
        folder = self._prefix(prefix, "list_files")
        with self._translate("list_files", folder):
            return await self._list_files(folder)

    @final
    def iter_files(self, prefix: KeyLike = "") -> AsyncIterator[ObjectInfo]:
        """Iterate lazily (paginated) over the objects under ``prefix``, sorted by key.

        On S3 ``content_type`` may be ``None`` and ``metadata`` empty; :meth:`stat` has them.
        """
        folder = self._prefix(prefix, "iter_files")
        return self._translated_iter(folder)

    async def _translated_iter(self, folder: str) -> AsyncIterator[ObjectInfo]:
        with self._translate("iter_files", folder):
            async with closing(self._iter_files(folder)) as infos:
                async for info in infos:
                    yield info

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

    # ---------------------------------------------------------------- quotas

    @final
    def set_quota(self, prefix: KeyLike, max_bytes: int | None) -> None:
        """Cap the bytes stored under the folder ``prefix`` (``None`` removes the cap).

        ``""`` is the backend-wide quota (``max_size_bytes``). Every write checks every
        quota that covers its key. Usage is learned by one listing on first need.
        """
        self._quotas.set(self._prefix(prefix, "set_quota"), max_bytes)

    @final
    async def get_usage(self, prefix: KeyLike = "") -> Usage:
        """Return the bytes used under ``prefix`` (writes in flight included) and its limit."""
        folder = self._prefix(prefix, "get_usage")
        with self._translate("get_usage", folder):
            if self._quotas.has(folder):
                return await self._quotas.usage(folder)
            used = await self._total_size(folder)
            return Usage(prefix=folder, used=used, limit=None)

    @final
    async def refresh_usage(self, prefix: KeyLike | None = None) -> None:
        """Re-scan quota usage (all quotas, or the one at ``prefix``) to see foreign writes."""
        folder = None if prefix is None else self._prefix(prefix, "refresh_usage")
        with self._translate("refresh_usage", folder):
            await self._quotas.refresh(folder)

    # ---------------------------------------------------------------- URLs, files, close

    @final
    async def get_presigned_url(
        self, path: KeyLike, expires_in: int = 3600, method: Method = "GET"
    ) -> str:
        """Return a URL that lets anyone holding it GET or PUT ``path`` until it expires.

        Args:
            expires_in: seconds, ``1 <= expires_in <= 604800`` (7 days).
            method: ``"GET"`` or ``"PUT"``; a URL for one never works for the other.

        Raises:
            ValueError: bad ``expires_in`` or ``method``.
            StorageConfigError: the backend cannot sign (local without a signing key).
        """
        key = self._key(path, "get_presigned_url")
        if method not in ("GET", "PUT"):
            raise ValueError(f"method must be 'GET' or 'PUT', not {method!r}")
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int)
            or not 1 <= expires_in <= MAX_PRESIGN_SECONDS
        ):
            raise ValueError(f"expires_in must be an int in [1, {MAX_PRESIGN_SECONDS}] seconds")
        with self._translate("get_presigned_url", key):
            return await self._presign(key, expires_in, method)

    @contextlib.asynccontextmanager
    async def local_copy(self, path: KeyLike) -> AsyncIterator[Path]:
        """Give a local file holding the object, for tools that need a real file (FFmpeg).

        The file is a temp copy removed on exit (the local backend may hand its own file:
        treat it as read-only).
        """
        key = self._key(path, "local_copy")
        async with self._local_copy(key) as local:
            yield local

    @contextlib.asynccontextmanager
    async def staged_upload(
        self,
        path: KeyLike,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Path]:
        """Give a temp file path to write into; it is uploaded to ``path`` on a clean exit.

        On an exception nothing is uploaded and the temp file is removed.
        """
        key = self._key(path, "staged_upload")
        meta = normalize_metadata(metadata, "staged_upload", key)
        tmpdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="file_storage-")
        try:
            local = Path(tmpdir) / (key.rsplit("/", 1)[-1])
            yield local
            if not await aiofiles.os.path.exists(local):
                raise ObjectNotFoundError(
                    f"nothing was written to {str(local)!r}", operation="staged_upload", key=key
                )
            await self.upload_file(local, key, content_type=content_type, metadata=meta)
        finally:
            await asyncio.to_thread(shutil.rmtree, tmpdir, True)

    @contextlib.asynccontextmanager
    async def _local_copy(self, key: str) -> AsyncIterator[Path]:
        tmpdir = await asyncio.to_thread(tempfile.mkdtemp, prefix="file_storage-")
        try:
            yield await self.download_file(key, Path(tmpdir) / key.rsplit("/", 1)[-1])
        finally:
            await asyncio.to_thread(shutil.rmtree, tmpdir, True)

    async def aclose(self) -> None:
        """Release connections and clients. The backend may be used again afterwards."""
        await self._aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ---------------------------------------------------------------- hooks

    @abc.abstractmethod
    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
    ) -> None:
        """Store ``body`` at ``key`` atomically: on any error nothing new is visible."""

    @abc.abstractmethod
    async def _load(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, end)`` (``end`` may pass the size), chunks <= ``chunk_size``.

        With ``if_match``, every byte comes from the version with that ETag, or
        :class:`PreconditionFailedError` is raised before the first chunk.
        """

    @abc.abstractmethod
    async def _exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    async def _stat(self, key: str) -> ObjectInfo: ...

    @abc.abstractmethod
    async def _delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Yield the objects strictly under ``prefix`` (``""`` or ending in ``/``), sorted."""

    @abc.abstractmethod
    async def _list_dirs(self, prefix: str) -> list[str]: ...

    @abc.abstractmethod
    async def _copy(self, src: str, dst: str) -> None: ...

    def _usage_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """What quotas count under ``prefix`` (first use, refresh): the objects, and any
        bytes the backend stores beside them (local: other processes' temp files)."""
        return self._iter_files(prefix)

    async def _list_files(self, prefix: str) -> list[str]:
        return [info.key async for info in self._iter_files(prefix)]

    async def _total_size(self, prefix: str) -> int:
        return sum([info.size async for info in self._iter_files(prefix)])

    async def _move(self, src: str, dst: str) -> None:
        await self._copy(src, dst)
        try:
            await self._delete(src)
        except BaseException as exc:
            mark_landed(exc, source_kept=True)  # dst is stored whatever the delete did
            raise

    async def _delete_many(self, keys: list[str]) -> None:
        for key in keys:
            await self._delete(key)

    async def _delete_prefix(self, prefix: str) -> int:
        deleted = 0
        batch: list[str] = []
        async for info in self._iter_files(prefix):
            batch.append(info.key)
            if len(batch) == DELETE_BATCH:
                await self._delete_many(batch)
                deleted += len(batch)
                batch = []
        if batch:
            await self._delete_many(batch)
            deleted += len(batch)
        return deleted

    async def _upload_file(
        self,
        local_path: Path,
        key: str,
        size: int,
        content_type: str,
        metadata: dict[str, str],
        progress: Progress | None,
    ) -> None:
        body = file_chunks(local_path, size, progress)
        await self._save(key, body, content_type, metadata)

    async def _download_file(self, key: str, local_path: Path, progress: Progress | None) -> int:
        """Write the object to ``local_path``; return the size the store says it has."""
        expected = (await self._stat(key)).size
        done = 0
        async with aiofiles.open(local_path, "wb") as out:
            async for chunk in self._stream(key, 0, None, CHUNK_SIZE, None):
                await out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, expected)
        return expected

    async def _presign(self, key: str, expires_in: int, method: Method) -> str:
        raise StorageConfigError(f"{type(self).__name__} cannot sign URLs")

    async def _check(self) -> None:
        """Raise if the store cannot be used (S3: the bucket; local: the root). Default: no check.

        Run once at start-up by ``storage_lifespan`` inside ``_translate("check", None)``,
        so a hook raises SDK or OS errors like any other hook.
        """
        return None

    async def _aclose(self) -> None:
        return None
