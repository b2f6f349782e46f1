"""``migrate``: copy every object under a prefix from one backend to another, resumably.

Built on the public :class:`StorageBackend` API only, so it moves data between any two
backends. The two listings are walked side by side (both are sorted by key), so the
destination is listed once instead of asked about every key. A bounded pool of workers
copies objects: each streams its object through (chunks of 1 MiB; S3 keeps at most its
part buffers in flight), so memory depends on ``concurrency``, never on sizes or counts.

When is an object at the destination kept (counted as skipped, not written again)?

* it was written at least ``_CLOCK_STEP`` (2 s) after the source object's last change:
  a copy made by an earlier run, or the application's own newer write once writes go to
  the destination (see docs/migration.md). This needs the two clocks to agree, as S3's
  and an NTP-synced host's do, and the step to cover how coarsely stores tell times;
* or it has the same size and the same MD5, and the same content type, metadata and
  headers (asked of both sides with ``stat``: a listing may lack them). Both sides may
  know the MD5 (memory's ETag, a single-part S3 ETag); when only one side does (local
  against S3, say), the other side is read once and hashed: reading costs far less than
  writing again. When neither does (local ETags are mtime and size, multipart S3 ETags
  are no MD5), it is copied again, unless it is no older than the source (within the
  step: the times cannot tell which came first): then both sides are read and hashed.

Either way the object kept must be the one stored under exactly that key: on a store
whose names fold (a case-insensitive file system: ``A.txt`` and ``a.txt`` are one file) a
lookup of one key answers for another, and a source deleted on that answer would be lost.
The listing carries the names as stored, so an object kept on the listing's word is one
of exactly that name; one found only by a lookup (a conditional write refused, an
unconditional one about to replace something) is looked up in a listing too, by
:func:`_holds`, and when that name is not there the object is failed and its source kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from file_storage._batch import check_concurrency, run_all
from file_storage._events import landing
from file_storage._migrate_places import overlap
from file_storage._streams import closing
from file_storage.backends.base import StorageBackend
from file_storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
)
from file_storage.models import ObjectInfo

__all__ = ["MigrationProgress", "MigrationReport", "migrate"]

Outcome = Literal["copied", "skipped", "failed"]
# a plain function, or a coroutine function: awaited by the worker that called it
MigrationProgress = Callable[[str, Outcome, "MigrationReport"], Awaitable[None] | None]

# An S3 ETag is the hex MD5 of the bytes for a single-part upload without SSE-KMS/SSE-C;
# a multipart one ends in "-<parts>" (AWS, "Checking object integrity"). Local ETags
# ("<mtime>-<size>") never match.
_MD5_ETAG = re.compile(r'"?([0-9a-fA-F]{32})"?')
# the object headers ObjectInfo carries, copied with each object and verified; those it
# does not carry (S3's Content-Encoding and Content-Language) are never read, so an
# object moved from S3 arrives without them
_HEADERS = ("cache_control", "content_disposition")
_HASH_IN_THREAD = 256 * 1024  # hash larger chunks off the event loop
# how much later than its source's last change a destination object must be to count as
# written after it on its time alone: stores tell times in whole seconds (S3's
# Last-Modified, HFS+) or two (FAT, exFAT), truncated, so a copy made in the second in
# which its source was then rewritten looks as new as the rewrite, or newer
_CLOCK_STEP = timedelta(seconds=2)
# why an object is failed when its key finds an object stored under another name
_TAKEN = (
    "the destination holds another key's object under this name (a case-insensitive "
    "file system?); the source is kept"
)
# an object up to this size is one request on every backend (S3's default multipart
# threshold is 16 MiB; GCS and Azure send parts of 8 MiB), where a write's condition costs
# nothing; a larger conditional write is buffered whole on GCS and Azure, so it goes
# without one there (local, memory and S3 check it streamed: ``_streams_conditional_writes``;
# an S3 server refusing conditions in parts gets it without one, see ``_copy``)
_CONDITIONAL_BYTES = 8 * 2**20


@dataclass(slots=True)
class MigrationReport:
    """What :func:`migrate` did.

    Attributes:
        copied: objects written to the destination (and verified, when asked).
        skipped: objects already at the destination, not written again.
        failed: key -> reason, for every object that could not be moved.
        bytes: bytes written to the destination.
    """

    copied: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    bytes: int = 0


class _Mismatch(Exception):
    """The destination does not hold what was copied (a verify failure)."""


async def migrate(
    source: StorageBackend,
    dest: StorageBackend,
    prefix: str = "",
    *,
    concurrency: int = 16,
    verify: bool = True,
    delete_source: bool = False,
    progress: MigrationProgress | None = None,
) -> MigrationReport:
    """Copy every object under ``prefix`` from ``source`` to ``dest``.

    Content type and metadata are kept; bytes are streamed, at most ``concurrency``
    objects at once. Resumable: an object already at ``dest`` with the same size,
    checksum, content type and metadata is skipped, so re-running after a crash finishes
    the job without copying anything twice. One object that fails never stops the others.

    Args:
        prefix: the folder to move (``""``: everything), as in :meth:`StorageBackend.iter_files`.
        concurrency: objects in flight at once.
        verify: re-``stat`` each copied object at ``dest`` and compare size, checksum
            (where known), content type and metadata.
        delete_source: delete each object from ``source`` once it is verified at
            ``dest`` (copied and verified, or skipped as identical). Needs ``verify``.
            An object whose key finds another key's object at ``dest`` (``A.txt`` for
            ``a.txt`` on a case-insensitive file system) is failed, its source kept.
            Only the version moved is deleted: one written since is kept, and failed.
        progress: called as ``progress(key, outcome, report)`` after each object, with
            ``outcome`` one of ``"copied"``, ``"skipped"``, ``"failed"`` and the running
            report, in the event loop (keep it quick; a coroutine function is awaited,
            holding up only the worker that called it). What it raises stops the run,
            as a cancellation does, and comes out of ``migrate``.

    Returns:
        A :class:`MigrationReport`; ``copied + skipped + len(failed)`` objects were seen.

    Raises:
        ValueError: ``concurrency < 1``, ``delete_source`` without ``verify``, or
            ``source`` and ``dest`` are the same object or store under ``prefix`` into
            the same place (the same folder or bucket prefix, or one inside the other).
        InvalidKeyError: bad ``prefix``.
        StorageError: a listing failed (objects copied so far stay copied).
    """
    if not isinstance(source, StorageBackend) or not isinstance(dest, StorageBackend):
        raise TypeError("source and dest must be StorageBackend instances")
    check_concurrency(concurrency)
    if delete_source and not verify:
        raise ValueError("delete_source deletes only verified objects: it needs verify=True")
    if source is dest:
        raise ValueError("source and dest are the same backend")
    listing = source.iter_files(prefix)  # checks the prefix now
    if overlap(source, dest, prefix):
        # every object would be "already there" (and deleted with delete_source), or
        # copies would land among the objects being moved
        raise ValueError(
            "source and dest are the same storage: they store into the same place "
            "(the same folder or bucket prefix, or one inside the other)"
        )
    existing = dest.iter_files(prefix)
    report = MigrationReport()
    queue: asyncio.Queue[tuple[ObjectInfo, ObjectInfo | None] | None] = asyncio.Queue(
        maxsize=concurrency
    )
    job = _Job(source, dest, verify, delete_source)

    async def produce() -> None:
        async for pair in _pair_up(listing, existing):
            await queue.put(pair)
        for _ in range(concurrency):
            await queue.put(None)

    async def work() -> None:
        while (pair := await queue.get()) is not None:
            info, there = pair
            outcome: Outcome
            try:
                copied = await job.run(info, there)
            except ObjectNotFoundError as exc:
                outcome, report.failed[info.key] = "failed", f"gone from the source: {exc}"
            except (StorageError, ValueError, _Mismatch) as exc:
                # ValueError: data the destination refuses (metadata it cannot store)
                outcome, report.failed[info.key] = "failed", str(exc)
            else:
                if copied is None:
                    outcome = "skipped"
                    report.skipped += 1
                else:
                    outcome = "copied"
                    report.copied += 1
                    report.bytes += copied
            if progress is not None:
                told = progress(info.key, outcome, report)
                if inspect.isawaitable(told):
                    await told

    await run_all([produce(), *(work() for _ in range(concurrency))])
    return report


async def _pair_up(
    listing: AsyncIterator[ObjectInfo], existing: AsyncIterator[ObjectInfo]
) -> AsyncIterator[tuple[ObjectInfo, ObjectInfo | None]]:
    """Each source object with the destination object of the same key, or ``None``."""
    there = await anext(existing, None)
    async for info in listing:
        while there is not None and there.key < info.key:
            there = await anext(existing, None)
        yield info, there if there is not None and there.key == info.key else None


class _Job:
    """Moves one object; returns the bytes copied, or ``None`` when it was already there."""

    def __init__(
        self, source: StorageBackend, dest: StorageBackend, verify: bool, delete_source: bool
    ) -> None:
        self.source = source
        self.dest = dest
        self.verify = verify
        self.delete_source = delete_source

    async def run(self, info: ObjectInfo, there: ObjectInfo | None) -> int | None:
        copied = None
        if there is None or not await self._keep(info, there):
            copied, moved = await self._copy(info.key, there)
        elif self.delete_source:
            try:
                moved = await self.source.stat(info.key)
            except ObjectNotFoundError:
                # deleted at the source since it was listed (the application's delete):
                # the destination holds it, nothing is lost and nothing is left to do
                return None
            if _changed(info, moved):
                # replaced at the source since it was listed (a listing is read ahead of
                # the copies): the destination holds an older version, all that is left
                copied, moved = await self._copy(info.key, there)
        if self.delete_source:
            await self._delete_moved(info.key, moved)
        return copied

    async def _delete_moved(self, key: str, moved: ObjectInfo) -> None:
        """Delete the source version ``moved`` (the one at the destination now), never one
        written since: checked and deleted in one step where the backend can (local,
        memory; elsewhere a conditional delete where the store checks one, so a write
        landing between the two is kept; a plain delete, which takes it, where not)."""
        if await self.source._purge_one(key, moved, "delete"):
            return
        if await self.source.exists(key):  # not gone meanwhile: written again
            raise _Mismatch(
                f"delete {key!r}: the source changed after it was copied; it is kept "
                "(run again to move it)"
            )

    async def _keep(self, info: ObjectInfo, there: ObjectInfo) -> bool:
        # ``there`` is the destination listing's object of exactly this key (``_pair_up``
        # compares the names as stored), never another key's found by a folding lookup
        if there.last_modified - info.last_modified >= _CLOCK_STEP:
            return True
        if info.size != there.size:
            return False
        ours, theirs = _md5_of(info.etag, self.source), _md5_of(there.etag, self.dest)
        # written within a clock step of the source's last change: the times cannot
        # tell which came first, so the bytes must (both sides read when neither knows
        # its MD5: far cheaper than writing again, and rare)
        both = ours is None and theirs is None and there.last_modified >= info.last_modified
        try:
            if ours is None and (theirs is not None or both):
                ours = await _md5(self.source.stream(info.key, if_match=info.etag))
            if theirs is None and ours is not None:
                theirs = await _md5(self.dest.stream(there.key, if_match=there.etag))
        except PreconditionFailedError:  # changed since it was listed: copy it
            return False
        if ours is None or ours != theirs:
            return False
        # the same bytes, and older: the same object only if its content type, metadata
        # and headers are the same too (saved again with new metadata since a run copied
        # it, the source differs, and delete_source would lose what differs); a listing
        # may not carry them (S3's does not), so both sides are asked
        try:
            now = await self.source.stat(info.key)
        except ObjectNotFoundError:
            return True  # deleted since the listing: the destination holds its bytes
        try:
            _check(now, await self.dest.stat(there.key), ours, self.dest)
        except (_Mismatch, ObjectNotFoundError):
            return False
        return not _changed(info, now)

    async def _written_since(self, key: str, there: ObjectInfo | None) -> bool:
        """Whether the destination holds another object at ``key`` than its listing found."""
        try:
            now = await self.dest.stat(key)
        except ObjectNotFoundError:
            return False  # nothing there: none written, or written and deleted again
        # ETags compared bare: a listing may give them without the quotes stat gives
        return there is None or (_bare(now.etag), now.size) != (_bare(there.etag), there.size)

    async def _source_gone(self, key: str) -> bool:
        try:
            return not await self.source.exists(key)
        except StorageError:
            return False  # unknown: as if it were there

    async def _copy(self, key: str, there: ObjectInfo | None) -> tuple[int | None, ObjectInfo]:
        """The bytes copied (``None`` when the destination was written meanwhile), and the
        source version read."""
        try:
            return await self._copy_once(key, there, conditional=True)
        except StorageConfigError:
            # a destination that cannot check a condition on this write (an S3 server
            # checking none on uploads in parts): as before, without one
            return await self._copy_once(key, there, conditional=False)

    async def _copy_once(
        self, key: str, there: ObjectInfo | None, *, conditional: bool
    ) -> tuple[int | None, ObjectInfo]:
        info = await self.source.stat(key)
        digest = hashlib.md5(usedforsecurity=False)
        read = _Read()
        condition: dict[str, Any] = {}
        if conditional and (
            info.size <= _CONDITIONAL_BYTES or self.dest._streams_conditional_writes
        ):
            # replace only what the listing found there (nothing: create only), so that a
            # write of the application's since then is kept, not overwritten
            if there is None:
                condition["overwrite"] = False
            elif there.etag is not None:
                condition["if_match"] = there.etag
        # a write without a condition replaces what it finds: never another key's object
        # that this key finds under another name (though no store without conditions can
        # exclude two such names written at the same time)
        if (
            not condition
            and there is None
            and await self.dest.exists(key)
            and not await _holds(self.dest, key)
        ):
            raise _Mismatch(f"copy {key!r}: {_TAKEN}")
        chunks = self.source.stream(key, if_match=info.etag)

        async def ended() -> None:
            # the last byte was read, the copy has not landed: a source that no longer
            # holds what was read (deleted or replaced meanwhile) fails the write, so
            # nothing lands (a landed copy deleted again could have been taken for done,
            # and its source deleted, by a second run at the same time)
            sent = digest.hexdigest()
            if read.bytes != info.size or _md5_of(info.etag, self.source) not in (None, sent):
                raise _Mismatch(f"copy {key!r}: the source changed while it was copied")
            if _changed(info, await self.source.stat(key)):
                raise _Mismatch(f"copy {key!r}: the source changed while it was copied")

        with landing() as landed:
            async with closing(_hashed(chunks, digest, read, ended)) as body:
                try:
                    await self.dest.save(
                        key,
                        body,
                        content_type=info.content_type,
                        metadata=info.metadata,
                        **_headers(info),
                        **condition,
                    )
                except PreconditionFailedError:
                    if read.failed or not condition:
                        raise  # the source changed under its pinned read
                    if not await self._written_since(key, there):
                        # refused, yet the destination holds what the listing found: no
                        # newer write to keep (delete_source would delete the only new copy)
                        raise
                    if not await _holds(self.dest, key):
                        # refused for an object of another name that this key finds (on a
                        # case-insensitive file system, another source key copied just
                        # before under another case): no copy of this object is there
                        raise _Mismatch(f"copy {key!r}: {_TAKEN}") from None
                    if not await self._sent_there(key, info, read, digest.hexdigest()):
                        return None, info  # the destination's own newer write: kept
                    # this very copy, stored by a first attempt whose answer was lost
                    # (the retried create-only write found it): copied, verified below
        ours = landed.get(key)  # the copy's own ETag (None: the write did not say)
        md5 = digest.hexdigest()
        replaced = False
        try:
            if read.bytes != info.size or _md5_of(info.etag, self.source) not in (None, md5):
                raise _Mismatch(f"copy {key!r}: the source changed while it was copied")
            if self.verify:
                got = await self.dest.stat(key)
                try:
                    _check(info, got, md5, self.dest)
                except _Mismatch:
                    if not _other_write(got, ours):
                        raise
                    # another write landed on the copy since (the application's, its
                    # writes going to the destination): newer, so kept, as one landing
                    # before the copy is; no copy of migrate's to verify (nor to delete)
                    replaced = True
            # replaced since its last byte was read: the copy holds the old bytes, and
            # delete_source would lose the new ones. Deleted since then: the copy stays,
            # as the source may be gone because a second run found the copy and deleted
            # it (an application deleting from both backends in that instant, as the
            # Moving recipe does, finds its deletion undone; deleted before the last
            # byte was read, it fails the write above)
            try:
                now = await self.source.stat(key)
            except ObjectNotFoundError:
                now = None
            if now is not None and _changed(info, now):
                raise _Mismatch(f"copy {key!r}: the source changed while it was copied")
        except (_Mismatch, ObjectNotFoundError) as exc:
            if isinstance(exc, _Mismatch) and await self._source_gone(key):
                # a second run took the copy for done and deleted its source: the copy
                # is all that is left of the object
                kept = f"{exc}; the source is gone meanwhile, so the copy is kept"
                raise _Mismatch(kept) from exc
            # a copy that did not verify is newer than its source: left in place, the next
            # run would keep it (and delete the source with delete_source=True)
            try:
                await self._remove_copy(key, ours)
            except StorageError as error:
                raise _Mismatch(f"{exc}; removing the copy failed: {error}") from error
            raise
        return None if replaced else read.bytes, info

    async def _sent_there(self, key: str, info: ObjectInfo, read: _Read, md5: str) -> bool:
        """Whether the destination holds exactly what this copy sent, checked by its MD5."""
        if read.bytes != info.size:
            return False
        try:
            got = await self.dest.stat(key)
            _check(info, got, md5, self.dest)
        except (_Mismatch, ObjectNotFoundError):
            return False
        return _md5_of(got.etag, self.dest) == md5

    async def _remove_copy(self, key: str, ours: str | None) -> None:
        """Delete the copy this run wrote at ``key``, never a write that replaced it since
        (the application's newer object): only while the destination holds the copy's
        ETag, checked and deleted in one step where the backend can (local, memory)."""
        try:
            now = await self.dest.stat(key)
        except ObjectNotFoundError:
            return
        if _other_write(now, ours):
            return  # replaced since the copy landed: not migrate's to delete
        if ours is None or now.etag is None:
            await self.dest.delete(key)  # no ETag to tell the copy by: as before
        else:
            await self.dest._purge_one(key, now, "delete")


async def _holds(backend: StorageBackend, key: str) -> bool:
    """Whether ``backend`` lists an object under exactly the name ``key``.

    Listings give names as stored, where a lookup of ``key`` may find the object of
    another (``A.txt`` for ``a.txt`` on a case-insensitive file system). The listing of
    the key's folder starts just before it (a cursor of the key less its last character:
    one request on S3), so only names sharing all but that character are passed over.
    """
    folder, _, name = key.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    try:
        infos = backend.iter_files(
            prefix, start_after=key[:-1] if len(name) > 1 else None, recursive=False
        )
    except InvalidKeyError:  # a cursor the backend refuses: the folder from its start
        infos = backend.iter_files(prefix, recursive=False)
    async with closing(infos):
        async for info in infos:
            if info.key >= key:
                return info.key == key
    return False


def _bare(etag: str | None) -> str | None:
    return None if etag is None else etag.removeprefix("W/").strip('"')


def _other_write(now: ObjectInfo, ours: str | None) -> bool:
    """Whether the destination object ``now`` is another write than the copy whose ETag
    was ``ours`` (unknown, when either ETag is: taken for the copy)."""
    return ours is not None and now.etag is not None and _bare(now.etag) != _bare(ours)


def _changed(before: ObjectInfo, now: ObjectInfo) -> bool:
    """Whether the source object was replaced since ``before`` was read of it."""
    if before.etag is not None and now.etag is not None:
        return _bare(before.etag) != _bare(now.etag)  # a listed one may lack the quotes
    return (before.size, before.last_modified) != (now.size, now.last_modified)


def _headers(info: ObjectInfo) -> dict[str, Any]:
    """The object headers to send with the copy: those the object model carries."""
    return {name: value for name in _HEADERS if (value := getattr(info, name, None)) is not None}


def _check(info: ObjectInfo, got: ObjectInfo, md5: str, dest: StorageBackend) -> None:
    problem = None
    if got.size != info.size:
        problem = f"size {got.size} != {info.size}"
    elif _md5_of(got.etag, dest) not in (None, md5):
        problem = "checksum differs"
    elif info.content_type is not None and got.content_type != info.content_type:
        problem = f"content type {got.content_type!r} != {info.content_type!r}"
    elif dict(got.metadata) != dict(info.metadata):
        problem = "metadata differs"
    else:
        for name in _HEADERS:
            if getattr(got, name, None) != getattr(info, name, None):
                problem = f"{name} differs"
    if problem is not None:
        raise _Mismatch(f"verify {info.key!r}: the destination has {problem}")


def _md5_of(etag: str | None, backend: StorageBackend) -> str | None:
    """The MD5 an ETag of ``backend`` gives, if any (SSE-KMS ETags look like one)."""
    if etag is None or not backend._md5_etags:
        return None
    match = _MD5_ETAG.fullmatch(etag)
    return match.group(1).lower() if match else None


async def _update(digest: Any, chunk: bytes) -> None:
    if len(chunk) >= _HASH_IN_THREAD:
        await asyncio.to_thread(digest.update, chunk)
    else:
        digest.update(chunk)


@dataclass(slots=True)
class _Read:
    """What :func:`_hashed` read of the source: bytes, and whether the read failed."""

    bytes: int = 0
    failed: bool = False


async def _hashed(
    chunks: AsyncIterator[bytes],
    digest: Any,
    read: _Read,
    ended: Callable[[], Awaitable[None]],
) -> AsyncIterator[bytes]:
    async with closing(chunks):
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                await ended()  # raised here, it fails the write: nothing lands
                return
            except BaseException:
                read.failed = True
                raise
            await _update(digest, chunk)
            read.bytes += len(chunk)
            yield chunk


async def _md5(chunks: AsyncIterator[bytes]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    async with closing(chunks):
        async for chunk in chunks:
            await _update(digest, chunk)
    return digest.hexdigest()
