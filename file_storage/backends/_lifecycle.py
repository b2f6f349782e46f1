"""Operating the data over time: expiry rules (set_expiration, get_expiration,
purge_expired) and object events (subscribe)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import final

from file_storage._events import Callback
from file_storage._expiry import check_days, cutoff, expired_by
from file_storage._keys import KeyLike
from file_storage.backends._writes import Writes
from file_storage.errors import StorageError, StorageUnavailableError
from file_storage.models import ObjectEvent, ObjectInfo

logger = logging.getLogger("file_storage")


class Lifecycle(Writes):
    """Expiry and events of :class:`~file_storage.StorageBackend`; documented there."""

    @final
    async def set_expiration(self, prefix: KeyLike, days: int | None) -> None:
        """Delete the objects under the folder ``prefix`` once they are ``days`` days old.

        One rule per prefix: setting it again replaces it, ``days=None`` removes it. An
        object's age counts from its last write (``last_modified``). On S3 the rule is
        merged into the bucket's lifecycle configuration (one read and one write of it;
        rules made by anything else are kept as they are) and S3 deletes the objects
        itself, usually within a day of their expiry. On local disk and memory the
        backend keeps the rule (local: in a file under the root, so it survives
        restarts) and :meth:`purge_expired` applies it.

        Calls in one process take turns; two processes changing the rules of one bucket
        at the same moment can lose one of the changes (S3 has no conditional write of a
        lifecycle configuration): set rules from one place, such as a deploy step.

        Args:
            prefix: a folder, or ``""`` for every object.
            days: a positive int, or ``None`` to remove the rule.

        Raises:
            InvalidKeyError: bad prefix. ValueError: bad ``days``.
            StoragePermissionError: on S3, no ``s3:PutLifecycleConfiguration`` right.
        """
        folder = self._prefix(prefix, "set_expiration")
        checked = check_days(days)
        with self._translate("set_expiration", folder):
            async with self._expiry.lock:
                await self._rules.put(folder, checked)

    @final
    async def get_expiration(self) -> dict[str, int]:
        """Return the expiry rules: folder prefix (``""`` or ending in ``/``) -> days.

        On S3, the rules this library made for this backend's prefix, as the bucket holds
        them now; rules made by other tools are not listed.
        """
        with self._translate("get_expiration", None):
            return dict(sorted((await self._rules.get()).items()))

    @final
    async def purge_expired(self, now: datetime | None = None) -> int:
        """Delete the objects older than their rule's days (see :meth:`set_expiration`).

        Each is deleted as :meth:`delete` would, so quotas and subscribers see it. Only
        the object the listing found is deleted: one rewritten at its key meanwhile stays
        (compared and deleted in one step on local disk and memory; on GCS and Azure a
        write landing within the instant between the check and the delete can be lost,
        see docs/compatibility.md). Each delete goes by the rules as they are then: a
        rule removed or made longer by a :meth:`set_expiration` that has returned deletes
        nothing more. On S3
        this does nothing (S3 applies the rules itself) and returns 0. With
        ``expire_interval_seconds`` (``STORAGE_EXPIRE_INTERVAL_SECONDS``) it also runs
        in the background while the backend is in use.

        Args:
            now: the time to compare with (an aware datetime); ``None``: now.

        Returns:
            How many objects were deleted.

        Raises:
            StorageError: an object could not be deleted: raised once every other
            expired object was tried (so one undeletable object does not keep the rest
            from expiring), or at once when the store is unavailable.
        """
        if now is not None and (not isinstance(now, datetime) or now.utcoffset() is None):
            raise ValueError("now must be an aware datetime (or None)")
        moment = datetime.now(UTC) if now is None else now
        with self._translate("purge_expired", None):
            if self._rules.applies_itself:
                return 0
            rules = await self._rules.get()
            expired: dict[str, ObjectInfo] = {}
            for folder, days in rules.items():
                limit = cutoff(moment, days)
                if limit is None:
                    continue
                async for info in self._iter_files(folder):
                    if info.last_modified < limit:  # nested rules: expired under any
                        expired.setdefault(info.key, info)
        deleted = 0
        refused: StorageError | None = None
        for key, listed in sorted(expired.items()):
            # the rules may have changed since the listing (removed, made longer): each
            # delete goes by them as they are now, read under the lock set_expiration
            # takes, so that no delete follows a change whose call has returned
            async with self._expiry.lock:
                with self._translate("purge_expired", None):
                    rules = await self._rules.get(quiet=True)  # logged at the start
                if not expired_by(rules, key, listed.last_modified, moment):
                    continue
                try:
                    if await self._purge_one(key, listed):
                        deleted += 1
                except StorageError as exc:
                    if isinstance(exc, StorageUnavailableError):
                        raise  # the store is down: the rest would fail the same way
                    # this object only (a policy, a permission): the others still expire
                    refused = refused or exc
        if deleted:
            logger.info("purged %d expired objects", deleted)
        if refused is not None:
            raise refused
        return deleted

    async def _purge_one(
        self, key: str, listed: ObjectInfo, operation: str = "purge_expired"
    ) -> bool:
        """Delete the object ``listed`` as :meth:`delete` would (quota, event), unless
        ``key`` was deleted or written again since the listing: an application's fresh
        object at that key is never purged for its predecessor's age (nor, for
        ``migrate``, for a copy of its that failed)."""
        # the event is sent however the unlock ends (a Redis round trip a cancel scope cuts)
        with self._translate(operation, key), self._events.pending() as done:
            since = self._recount_mark()
            held = self._quotas.hold(key)
            async with held:
                try:
                    gone = await self._delete_expired(key, listed)
                except BaseException as exc:
                    await self._failed_delete(key, exc)
                    raise
                if gone:
                    done.append(ObjectEvent("deleted", key))
                    await self._quotas.forget(key)
            if gone:
                # as after a delete: suspended, the store replaced a "null" version (freed)
                # or kept one with an id, which only its listing of the key tells
                await self._recount_deleted(key, since=since, held=held)
        return gone

    async def _purge_expired_now(self) -> int:
        return await self.purge_expired()

    @final
    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` with an :class:`ObjectEvent` after each change this
        backend makes: ``"created"`` for :meth:`save`, :meth:`upload_file`, :meth:`copy`
        and a move's destination (and the S3 spool's flush), ``"deleted"`` for
        :meth:`delete` (a missing key included, as S3 reports it), :meth:`delete_many`,
        :meth:`delete_prefix`, a move's source and :meth:`purge_expired`.

        Events come only after the change succeeded, from this backend object (not from
        other processes: on S3 use bucket notifications and :func:`parse_s3_event`). A
        plain function is called before the write returns, so it must be quick; an
        ``async`` one runs as a task, each subscriber's tasks one after another in event
        order, and :meth:`aclose` waits for them (10 s at most). An exception in a
        callback is logged and never fails the write. While anyone subscribes, a
        ``"created"`` event whose write did not answer its ETag (or a copy's, its size)
        costs one :meth:`stat` (a HEAD request on S3; docs/events.md).

        Returns:
            A function that ends the subscription (calling it twice is fine).

        Raises:
            TypeError: ``callback`` is not callable.
        """
        return self._events.subscribe(callback)
