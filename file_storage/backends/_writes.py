"""The writing half of :class:`StorageBackend`: save, upload_file, copy, move, deletes, batches.

Each public method checks its keys, holds the keys under quota, reserves, calls the
hook and commits or releases: see :mod:`file_storage._quota.ledger`.
"""

from __future__ import annotations

import asyncio
import os
import stat as stat_mod
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Iterable,
    Mapping,
)
from pathlib import Path, PurePosixPath
from typing import final

import aiofiles
import aiofiles.os

from file_storage import _batch
from file_storage._events import note_landed
from file_storage._keys import KeyLike
from file_storage._metadata import check_content_type
from file_storage._mime import guess_content_type
from file_storage._quota.ledger import Reservation
from file_storage._streams import Progress
from file_storage.backends import _pages
from file_storage.backends._core import (
    DELETE_BATCH,
    Content,
    SaveItems,
)
from file_storage.backends._settles import Settles
from file_storage.backends._support import (
    Counter,
    has_landed,
    mark_landed,
    metered,
    normalize_metadata,
    source_kept,
)
from file_storage.backends._write_options import WriteOptions, passed, write_options
from file_storage.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
)
from file_storage.models import ObjectEvent


class Writes(Settles):
    """The writes of :class:`~file_storage.StorageBackend`; documented there."""

    @final
    async def save(
        self,
        path: KeyLike,
        content: Content,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        overwrite: bool = True,
        if_match: str | None = None,
        cache_control: str | None = None,
        content_disposition: str | None = None,
    ) -> str:
        """Store ``content`` at ``path``, replacing any object there (unless told not to).

        Args:
            path: the key.
            content: bytes-like, or an async iterable of bytes, streamed and never
                buffered whole (S3 turns a long stream into a parallel multipart upload).
            content_type: MIME type; guessed from the key's extension when ``None``.
            metadata: user metadata: names are HTTP tokens (returned lower-cased by
                :meth:`stat`), values any ``str``; at most 2 KiB in all, as S3 counts it.
            progress: called as ``progress(bytes_done, bytes_total_or_None)``.
            overwrite: ``False``: create only; when an object is at ``path`` already,
                raise :class:`PreconditionFailedError` and store nothing. Atomic: of
                writers racing to create one key, exactly one wins (S3 ``If-None-Match: *``).
            if_match: an ETag from :meth:`stat` (its quotes may be left out, as S3 allows):
                replace only that version of the object; when it was replaced (or
                deleted) since, raise :class:`PreconditionFailedError`
                (S3 ``If-Match``; local disk: exact between processes of one machine,
                see docs/usage.md).
            cache_control: the ``Cache-Control`` stored with the object and sent with it
                (``storage_response``, presigned GETs); visible ASCII.
            content_disposition: the ``Content-Disposition`` stored with the object, e.g.
                ``content_disposition("Отпуск 2026.mp4")`` from :mod:`file_storage.fastapi`.

        Returns:
            The normalized key.

        Raises:
            InvalidKeyError: bad key. InvalidMetadataError: bad metadata or header value
            (nothing written). PreconditionFailedError: ``overwrite``/``if_match`` did not
            hold (nothing written). StorageQuotaExceededError: over quota (nothing
            written). StorageError: the key is a folder or under an object, or I/O failed.
        """
        key = self._key(path, "save")
        ctype = check_content_type(content_type or guess_content_type(key), "save", key)
        meta = normalize_metadata(metadata, "save", key)
        options = write_options(
            "save",
            key,
            overwrite=overwrite,
            if_match=if_match,
            cache_control=cache_control,
            content_disposition=content_disposition,
        )
        if isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
            with self._translate("save", key, len(data)), self._events.pending() as done:
                async with self._quotas.hold(key, lazy=True):
                    reservation = await self._quotas.reserve(key, len(data), "save")
                    hook = self._save(key, data, ctype, meta, *passed(options))
                    done.extend(_present(await self._write(reservation, hook, len(data), key)))
                if progress is not None:
                    progress(len(data), len(data))
            return key
        if not isinstance(content, AsyncIterable):
            raise TypeError("content must be bytes-like or an async iterable of bytes")
        with self._translate("save", key) as call, self._events.pending() as done:
            async with self._quotas.hold(key, lazy=True):
                reservation = await self._quotas.reserve(key, 0, "save")
                counter = Counter()
                body = metered(content, counter, reservation, progress)
                hook = self._save(key, body, ctype, meta, *passed(options))
                done.extend(_present(await self._write(reservation, hook, counter, key)))
            call.size = counter.value
        return key

    async def _write(
        self,
        reservation: Reservation | None,
        hook: Awaitable[str | None],
        size: int | Counter | None,
        key: str,
    ) -> ObjectEvent | None:
        """Await a write hook of ``key``, committing its reservation on success and freeing
        it on failure; return the write's ``created`` event (``None``: nobody subscribed).
        The hook answers the stored object's ETag when it knows it (``None``: a stat asks).

        ``size``: the bytes written (``None``: unknown, no quota counts them). A write
        cancelled once it had landed is counted, and its event emitted before the
        cancellation is raised: subscribers see every object that is stored."""
        since = self._recount_mark()
        try:
            etag = await hook
        except BaseException as exc:
            try:
                if reservation is not None:
                    sent = size.value if isinstance(size, Counter) else size or 0
                    if has_landed(exc):  # cancelled after the write became visible: count it
                        await reservation.commit(sent)
                    elif isinstance(exc, asyncio.CancelledError) and self._cancel_may_land:
                        await self._settle(reservation, sent)
                    elif self._cancel_may_land and (
                        self._unanswered(exc) or isinstance(exc, PreconditionFailedError)
                    ):
                        # a refused condition too: a resend (its first try's answer lost)
                        # is refused by that try's own object, which is stored
                        await self._settle(reservation, sent, assume_stored=False)
                    else:
                        await reservation.release()
            finally:
                if has_landed(exc):
                    await self._announce(key, size, exc)
            raise
        value = size.value if isinstance(size, Counter) else size
        try:
            if reservation is not None:
                await reservation.commit(value or 0)  # a Redis ledger's round trip
                await self._recount_versions(
                    key, since=since, relisted=reservation.relisted, locked=True
                )
        except asyncio.CancelledError as cancelled:
            # the write is done (a move's source gone too): its caller counts it so, and
            # subscribers hear of it
            mark_landed(cancelled)
            await self._announce(key, size, cancelled)
            raise
        note_landed(key, etag)
        try:
            return await self._made(key, value, etag)
        except asyncio.CancelledError as cancelled:
            mark_landed(cancelled)
            raise

    async def _announce(self, key: str, size: int | Counter | None, exc: BaseException) -> None:
        """Emit the ``created`` event of a write that landed although its caller was
        cancelled (``exc``). A cancellation while its stat is made carries what ``exc``
        said of the write: a move's caller still counts its source by it."""
        value = size.value if isinstance(size, Counter) else size
        try:
            self._events.emit(*_present(await self._made(key, value)))
        except asyncio.CancelledError as late:
            mark_landed(late, source_kept=source_kept(exc))
            raise

    async def _made(
        self, key: str, size: int | None, etag: str | None = None
    ) -> ObjectEvent | None:
        """The ``created`` event of a write that landed at ``key`` (``None``: nobody
        subscribed), with the ETag the write's hook answered, else one stat's. A size not
        known (a copy without quota) comes from that stat too, when it names the same
        ETag. A caller cancelled while that stat is made emits it at once, without what
        the stat would have told, before the cancellation goes on: subscribers hear of
        every object stored, and a caller going away does not wait for the store."""
        if not self._events:
            return None
        if etag is not None and size is not None:
            # the write's own: a stat now could see a later write of the key
            return ObjectEvent("created", key, size, etag)
        stat = asyncio.ensure_future(self._created(key, size))
        try:
            made = await asyncio.shield(stat)
        except asyncio.CancelledError:
            event = None
            if not stat.done():
                stat.cancel()
            elif not stat.cancelled() and stat.exception() is None:
                event = stat.result()  # made in the same pass as the cancellation
            self._events.emit(_written(event, key, size, etag))
            raise
        return None if made is None else _written(made, key, size, etag)

    @final
    async def upload_file(
        self,
        local_path: str | os.PathLike[str],
        path: KeyLike,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        overwrite: bool = True,
        if_match: str | None = None,
        cache_control: str | None = None,
        content_disposition: str | None = None,
    ) -> str:
        """Store the local file ``local_path`` at ``path``, streamed from disk.

        On S3 a file above the multipart threshold is sent as parts in parallel, and a
        failure or cancellation aborts the upload, leaving nothing behind. The keyword
        arguments are those of :meth:`save` (a refused condition leaves no upload open).

        Returns:
            The normalized key.

        Raises:
            ObjectNotFoundError: ``local_path`` does not exist. Otherwise as :meth:`save`.
        """
        key = self._key(path, "upload_file")
        ctype = check_content_type(content_type or guess_content_type(key), "upload_file", key)
        meta = normalize_metadata(metadata, "upload_file", key)
        options = write_options(
            "upload_file",
            key,
            overwrite=overwrite,
            if_match=if_match,
            cache_control=cache_control,
            content_disposition=content_disposition,
        )
        await self._upload("upload_file", Path(local_path), key, ctype, meta, progress, options)
        return key

    async def _upload(
        self,
        operation: str,
        source: Path,
        key: str,
        ctype: str,
        meta: dict[str, str],
        progress: Progress | None,
        options: WriteOptions,
    ) -> None:
        """upload_file's work, on checked arguments; its errors name ``operation``, the
        call the user made (``staged_upload`` uploads its file through here too)."""
        with self._translate(operation, key) as call:
            try:
                st = await aiofiles.os.stat(source)
            except FileNotFoundError as exc:
                # the name only: the message reaches HTTP clients (a 404 body), the folder
                # is the server's own; the cause keeps the full path for the log
                raise ObjectNotFoundError(f"local file {source.name!r} not found") from exc
            if not stat_mod.S_ISREG(st.st_mode):
                # a FIFO would block the read (its thread, and a cancellation, for ever)
                raise ObjectNotFoundError(f"local file {source.name!r} is not a regular file")
            size = call.size = st.st_size
            with self._events.pending() as done:
                async with self._quotas.hold(key, lazy=True):
                    reservation = await self._quotas.reserve(key, size, operation)
                    hook = self._upload_file(
                        source, key, size, ctype, meta, progress, *passed(options)
                    )
                    done.extend(_present(await self._write(reservation, hook, size, key)))

    @final
    async def copy(
        self,
        src: KeyLike,
        dst: KeyLike,
        *,
        cache_control: str | None = None,
        content_disposition: str | None = None,
    ) -> str:
        """Copy ``src`` to ``dst`` (server-side on S3), keeping content type, metadata and
        headers.

        Args:
            cache_control: replaces the source's ``Cache-Control`` on ``dst`` (``None``:
                keep the source's).
            content_disposition: replaces the source's ``Content-Disposition`` likewise.

        Returns:
            The ``dst`` key.

        Raises:
            ObjectNotFoundError: ``src`` does not exist.
        """
        src_key = self._key(src, "copy")
        dst_key = self._key(dst, "copy")
        options = write_options(
            "copy", dst_key, cache_control=cache_control, content_disposition=content_disposition
        )
        with self._translate("copy", src_key, conflict_key=dst_key):
            if src_key == dst_key and options.plain:  # with headers: rewritten in place
                if not await self._exists(src_key):
                    raise ObjectNotFoundError()
                return dst_key
            # the source is held too: its size, reserved for dst, cannot change under the copy
            with self._events.pending() as done:
                async with self._quotas.hold(src_key, dst_key):
                    reservation, size = await self._reserve_copy(src_key, dst_key, "copy")
                    hook = self._copy(src_key, dst_key, *passed(options))
                    known = size if reservation is not None else None
                    done.extend(_present(await self._write(reservation, hook, known, dst_key)))
        return dst_key

    @final
    async def move(self, src: KeyLike, dst: KeyLike) -> str:
        """Move ``src`` to ``dst``: a copy then a delete (a rename on local disk).

        On S3 (and any backend without a rename) the copy and the delete are two steps:
        if the delete fails, ``dst`` stays written, ``src`` stays too, the delete's error
        is raised, and quota counts both objects (what is really stored; a delete done
        whose answer was lost counts ``dst`` alone). The delete is conditional on S3
        (where the server checks ``If-Match`` on DeleteObject: AWS, not Ceph RGW 16), GCS
        and Azure (with a key of their own): a write landing on ``src`` after the move
        looked at it is kept.

        Returns:
            The ``dst`` key.

        Raises:
            ObjectNotFoundError: ``src`` does not exist.
            PreconditionFailedError: (S3, GCS, Azure, memory) ``src`` was written during
                the move: it is kept, and ``dst`` holds the copy (a write landing before
                the copy read ``src`` fails the copy instead: nothing is at ``dst``; on
                GCS and Azure only with a key of their own to sign the copy with).
        """
        src_key = self._key(src, "move")
        dst_key = self._key(dst, "move")
        with self._translate("move", src_key, conflict_key=dst_key):
            if src_key == dst_key:
                if not await self._exists(src_key):
                    raise ObjectNotFoundError()
                return dst_key
            with self._events.pending() as done:
                await self._move_counted(src_key, dst_key, done)
        return dst_key

    async def _move_counted(self, src_key: str, dst_key: str, done: list[ObjectEvent]) -> None:
        """Move holding both keys, counting the result; its events go to ``done``."""
        since = self._recount_mark()
        held = self._quotas.hold(src_key, dst_key)
        async with held:
            reservation, size = await self._reserve_copy(src_key, dst_key, "move", moving=True)
            known = size if reservation is not None else None
            try:
                event = await self._write(reservation, self._move(src_key, dst_key), known, dst_key)
            except BaseException as exc:
                # landed: dst is counted (and its event emitted); a rename also took
                # the source away, while a copy whose delete failed left it (still
                # counted), unless that delete was done and its answer lost
                if has_landed(exc):
                    if not source_kept(exc):
                        await self._forget_deleted(src_key)
                    else:
                        await self._failed_delete(src_key, exc, done=False)
                raise
            done.extend((*_present(event), ObjectEvent("deleted", src_key)))
            await self._quotas.forget(src_key)
        # (after the unlock: a shared ledger forgets the source as it unlocks)
        await self._recount_deleted(src_key, since=since, held=held)

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

    @final
    async def delete(self, path: KeyLike) -> None:
        """Delete the object at ``path``; a missing object is not an error."""
        key = self._key(path, "delete")
        with self._translate("delete", key), self._events.pending() as done:
            since = self._recount_mark()
            held = self._quotas.hold(key)
            async with held:
                try:
                    await self._delete(key)
                except BaseException as exc:
                    await self._failed_delete(key, exc)
                    raise
                done.append(ObjectEvent("deleted", key))
                await self._quotas.forget(key)
            await self._recount_deleted(key, since=since, held=held)

    @final
    async def delete_many(self, paths: Iterable[KeyLike]) -> None:
        """Delete every key of ``paths`` (batched: S3 sends 1000 a request); idempotent.

        Every key is validated before anything is deleted.

        Raises:
            TypeError: ``paths`` is one path (a ``str`` is an iterable of one-character
                keys: nothing is deleted).
        """
        if isinstance(paths, str | PurePosixPath):
            raise TypeError("paths must be an iterable of paths, not one path")
        keys = list(dict.fromkeys(self._key(p, "delete_many") for p in paths))
        if not keys:
            return
        with self._translate("delete_many", keys[0] if len(keys) == 1 else None, len(keys)):
            # bounds the locks held at once (keys are locked under a quota or a subscriber)
            step = DELETE_BATCH if self._quotas or self._events else len(keys)
            for start in range(0, len(keys), step):
                batch = keys[start : start + step]
                await self._delete_counted(batch)

    async def _delete_counted(self, keys: list[str]) -> None:
        """Delete ``keys`` holding their locks, then take them out of the quota ledger;
        their events are sent however the unlock ends."""
        with self._events.pending() as done:
            since = self._recount_mark()
            held = self._quotas.hold(*keys)
            async with held:
                await self._delete_locked(keys, done)
            await self._recount_deleted(*keys, since=since, held=held)

    async def _delete_listed(self, folder: str, keys: list[str], after: str | None) -> int:
        """Delete what of the listed ``keys`` (sorted, after ``after``) is still stored once
        they are held: one another caller deleted meanwhile is neither counted nor
        announced again. Returns how many were deleted."""
        with self._events.pending() as done:
            since = self._recount_mark()
            held = self._quotas.hold(*keys)
            async with held:
                listing = self._iter_entries(folder, after, True, len(keys))
                present = await _pages.still_listed(listing, keys)
                if present:
                    await self._delete_locked(present, done)
            await self._recount_deleted(*present, since=since, held=held)
            return len(present)

    async def _delete_locked(self, keys: list[str], done: list[ObjectEvent]) -> None:
        try:
            await self._delete_many(keys)
        except BaseException as exc:
            # cancelled with some deleted, done and the answers lost, or refused part
            # way (a key denied, a disk error): those deleted are not counted, and
            # subscribers hear of them (the first key that cannot be looked up ends
            # the look; a cancellation meanwhile is raised once every key is asked)
            if has_landed(exc) or self._unsure(exc) or self._part_done(exc, keys):
                late: asyncio.CancelledError | None = None
                for key in keys:
                    hurry = late is not None or isinstance(exc, asyncio.CancelledError)
                    gone, cancelled = await self._forget_gone(key, cancelled=hurry)
                    late = late or cancelled
                    if gone is None:
                        break  # the store cannot tell now: the rest stay counted
                if late is not None:
                    raise late from exc
            raise
        done.extend(ObjectEvent("deleted", key) for key in keys)
        for key in keys:
            await self._quotas.forget(key)

    @final
    async def delete_prefix(self, prefix: KeyLike) -> int:
        """Delete every object strictly under the folder ``prefix``; ``""`` deletes all.

        Returns:
            How many objects were deleted.
        """
        folder = self._prefix(prefix, "delete_prefix")
        with self._translate("delete_prefix", folder):
            if not self._quotas.overlaps(folder) and not self._events:
                async with self._quotas.watch(folder):  # a quota set meanwhile: listed again
                    return await self._delete_prefix(folder)
            # under a quota: delete what one listing finds, key by key locked and forgotten,
            # so that a write racing the delete is either deleted or counted, never lost;
            # with subscribers too, as the events name the keys
            keys = await self._list_files(folder)
            deleted = 0
            for start in range(0, len(keys), DELETE_BATCH):
                after = keys[start - 1] if start else None
                batch = keys[start : start + DELETE_BATCH]
                deleted += await self._delete_listed(folder, batch, after)
            return deleted

    @final
    async def save_many(
        self,
        items: SaveItems,
        *,
        concurrency: int = 16,
    ) -> dict[str, str | Exception]:
        """Save many objects, at most ``concurrency`` at once, each as :meth:`save` would.

        Quota is checked per item, so one object over quota fails alone.

        Args:
            items: a mapping path -> content, or an iterable of ``(path, content)`` pairs.
                A mapping or a list (any collection) is checked whole before the first
                write: a bad item there writes nothing. Any other iterable (a generator)
                is pulled only as saves end, at most ``concurrency`` items ahead, so its
                contents are never all held at once; an item found bad there raises
                (below) once the saves already started have ended: the items before it
                are saved, none from it on. An exception the generator raises comes
                out the same way, as itself.

        Returns:
            For each path as given (``str(path)``), in input order: its key, or the
            :class:`StorageError` that item raised (an invalid key included), or the
            exception its own content stream raised (nothing of that item is stored).
            One failure hides no other.

        Raises:
            InvalidKeyError: a path that is no ``str`` or ``PurePosixPath``.
            TypeError: a content that is not bytes-like or an async iterable, or
                ``items`` that are no iterable (an async iterable of pairs included).
            ValueError: a path given twice, or ``concurrency < 1``.
        """
        return await _batch.save_many(self, items, concurrency)


def _present(event: ObjectEvent | None) -> tuple[ObjectEvent, ...]:
    return () if event is None else (event,)


def _written(stat: ObjectEvent | None, key: str, size: int | None, etag: str | None) -> ObjectEvent:
    """The event of a write that answered ``etag`` (``None``: it did not say), from a
    stat's event made after it: one naming another ETag saw a later writer's object,
    whose ETag and size are not this write's."""
    if stat is None or (etag is not None and stat.etag != etag):
        return ObjectEvent("created", key, size, etag)
    return stat
