"""What a remote write or delete left, when its caller was not told: cancelled in flight,
or its answer lost. The key is asked of the store, and the quota and the events follow
what it holds (see :mod:`file_storage._quota.ledger`)."""

from __future__ import annotations

import asyncio
import contextlib

from file_storage._quota.ledger import Reservation
from file_storage.backends._core import BackendCore
from file_storage.backends._support import LOOK_UP_GRACE, has_landed, is_caller_error, run_whole
from file_storage.errors import StorageError, StorageUnavailableError
from file_storage.models import ObjectEvent


class Settles(BackendCore):
    """The look-ups of :class:`~file_storage.StorageBackend` after an unsure write or delete."""

    # bumped as set_versioning begins and ends: an operation that saw it change may have
    # been applied by the store under either state
    _versioning_changes = 0

    def _recount_mark(self) -> tuple[int, int]:
        """Taken as a write or delete begins, for :meth:`_recount_versions`."""
        return self._versioning_changes, self._quotas.listings

    async def _recount_versions(
        self, *keys: str, since: tuple[int, int], relisted: bool = False, locked: bool = False
    ) -> None:
        """Count the keys' prior versions as the store lists them, after a write or a
        delete the ledger may have counted wrong on a store keeping versions (one listing
        per key, only then): while versioning is suspended, a write or a delete replaces
        the key's "null" version but keeps one with an id of its own, which the ledger
        cannot tell apart; ``set_versioning`` ran meanwhile (``since``: the mark taken as
        the operation began), so the store may have applied either state (also when the
        whole operation ran inside it: the store switched, the ledger not yet); or a listing of
        usage ran meanwhile, which may have counted the new object, or the one it
        replaced as a prior version, before the ledger did, or began while one ran
        (``relisted``: a shared ledger saw one of another process do so). Each key is
        listed and counted under its lock (``locked``: the caller holds them), so no
        write to it comes in between."""
        if not self._quotas:
            return
        versioning, listings = since
        if not (
            self._quotas.versioning == "suspended"
            or self._versioning_changes != versioning
            or versioning % 2  # begun while a switch was under way, ended before it did
            or relisted
            or (self._quotas.keeps and (self._quotas.listings != listings or listings % 2))
        ):
            return
        for key in keys:
            async with contextlib.nullcontext() if locked else self._quotas.recounting(key):
                try:
                    versions = await self._list_versions(key)
                except Exception:  # the write is done: its replaced object stays counted
                    continue
                kept = sum(v.size for v in versions if not v.is_latest)
                await self._quotas.set_kept(key, kept)

    async def _recount_deleted(self, *keys: str, since: tuple[int, int], held: object) -> None:
        """:meth:`_recount_versions` once a delete's hold (``held``) has ended: when a
        shared ledger answered that the keys are to be counted as the store lists them,
        they are held again for that count, so a write of another process cannot land
        between its listing and its commit (its replaced object then counted twice)."""
        if keys and relisted(held):
            async with self._quotas.hold(*keys):
                await self._recount_versions(*keys, since=since, relisted=True, locked=True)
        else:
            await self._recount_versions(*keys, since=since)

    def _unanswered(self, exc: BaseException) -> bool:
        """A remote write that failed without an answer (a connection cut after the server
        stored it, a timeout): the object may be stored all the same."""
        if not isinstance(exc, Exception) or is_caller_error(exc):
            return False
        error = exc if isinstance(exc, StorageError) else self._map_error(exc, "", None)
        return isinstance(error, StorageUnavailableError)

    def _unsure(self, exc: BaseException) -> bool:
        """A remote delete cancelled in flight or failed without an answer, under a quota:
        the store may have done it all the same (its answer was on the way back)."""
        if not self._cancel_may_land or not self._quotas:
            return False
        return isinstance(exc, asyncio.CancelledError) or self._unanswered(exc)

    def _part_done(self, exc: BaseException, keys: list[str]) -> bool:
        """A delete of several keys under a quota, or while someone subscribes, failed with
        a store's error: it may have deleted some of them before (local disk key by key,
        S3's DeleteObjects reporting errors per key, GCS/Azure deleting concurrently)."""
        if len(keys) < 2 or not (self._quotas or self._events) or not isinstance(exc, Exception):
            return False
        if is_caller_error(exc):
            return False
        return isinstance(exc, StorageError) or self._map_error(exc, "", None) is not None

    async def _forget_gone(
        self, key: str, *, cancelled: bool
    ) -> tuple[bool | None, asyncio.CancelledError | None]:
        """Stop counting ``key`` if it holds no object, asked of the store (so the quota
        does not count bytes that are gone until the next listing; and subscribers hear
        of the delete). Returns whether it was gone (``None``: the store cannot tell now,
        still down), and the caller's cancellation if one came meanwhile: the look-up is
        awaited to its end all the same, and the caller raises the cancellation once it
        has counted (an anyio cancel scope cancels every await made after it); cut
        ``LOOK_UP_GRACE`` after (``cancelled``: before) it: unknown, still counted."""
        look, late = await run_whole(
            self._stat(key), grace=LOOK_UP_GRACE, cancelled_before=cancelled
        )
        gone: bool | None = None
        if not look.cancelled():
            error = look.exception()
            gone = False if error is None else (True if self._not_found(error) else None)
        if gone:
            await self._forget_deleted(key)
        return gone, late

    async def _failed_delete(self, key: str, exc: BaseException, *, done: bool = True) -> None:
        """A delete of ``key`` raised ``exc``: cancelled after it was done (``done``: a
        landed cancellation means deleted), or done by the store with its answer lost
        (asked of the store): then no longer counted, and announced. A cancellation that
        comes during the look-up is raised once it has counted."""
        if done and has_landed(exc):
            await self._forget_deleted(key)
        elif self._unsure(exc):
            hurry = isinstance(exc, asyncio.CancelledError)
            _, cancelled = await self._forget_gone(key, cancelled=hurry)
            if cancelled is not None:
                raise cancelled from exc

    async def _forget_deleted(self, key: str) -> None:
        """``key`` was deleted although its caller was not told (cancelled, or the answer
        lost): no longer counted, and its ``deleted`` event emitted all the same."""
        try:
            await self._quotas.forget(key)
        finally:
            self._events.emit(ObjectEvent("deleted", key))

    async def _settle(
        self, reservation: Reservation, sent: int, *, assume_stored: bool = True
    ) -> None:
        """A remote write cancelled in flight, or left without an answer: the server may
        have stored it all the same (its answer was on the way back), so count what the
        key holds now, never less. When that cannot be read: count what was sent, or
        (``assume_stored=False``, the write failed and the store is down) nothing.

        A cancellation that comes meanwhile waits for the look-up, counts what it found,
        and is raised then (the write's own error is its context). Cancelled (before it:
        ``assume_stored``), the look-up is cut after ``LOOK_UP_GRACE`` (a store down
        must not hold a shutdown while its client retries): unknown, counted as sent."""
        look, cancelled = await run_whole(
            self._stat(reservation.key), grace=LOOK_UP_GRACE, cancelled_before=assume_stored
        )
        error = look.exception() if not look.cancelled() else None
        if look.cancelled() or error is not None:
            if error is not None and self._not_found(error):
                await reservation.release()  # not stored
            elif assume_stored or look.cancelled():  # unknown (an outage, or cut)
                await reservation.commit(sent)
            else:
                await reservation.release()
        else:
            counted = False
            if self._quotas.keeps:
                hurry = assume_stored or cancelled is not None
                counted, late = await self._settle_versions(reservation, cancelled=hurry)
                cancelled = cancelled or late
            if not counted:  # (maybe another writer's object: never taken back)
                await reservation.commit(look.result().size, found=True)
        if cancelled is not None:
            raise cancelled

    async def _settle_versions(
        self, reservation: Reservation, *, cancelled: bool
    ) -> tuple[bool, asyncio.CancelledError | None]:
        """On a store keeping versions, the object at the key may be the one the write
        would have replaced (it never landed): counted as the latest version, and its
        prior versions as what they hold, whichever it is. False: the versions could not
        be listed (the commit then keeps the replaced object as a prior version). With
        the cancellation that came while they were listed, to raise once counted."""
        key = reservation.key
        listing, late = await run_whole(
            self._list_versions(key), grace=LOOK_UP_GRACE, cancelled_before=cancelled
        )
        if listing.cancelled() or listing.exception() is not None:
            return False, late
        versions = listing.result()
        latest = [v.size for v in versions if v.is_latest]
        if not latest:
            await reservation.release()  # deleted since: what it kept is counted so
            return True, late
        await reservation.commit(latest[0], found=True)
        await self._quotas.set_kept(key, sum(v.size for v in versions if not v.is_latest))
        return True, late


def relisted(held: object) -> bool:
    """A shared ledger's hold that says its deleted keys' versions are to be counted as
    the store lists them (see ``FINISH`` in :mod:`file_storage._quota.redis.scripts`)."""
    return getattr(held, "relisted", False) is True
