"""Versioning of :class:`StorageBackend`: set_versioning, list_versions, restore_version,
purge_versions (and the ``version_id=`` of load, stream and stat, in ``_reads``).

On S3 this is bucket versioning. The local and memory backends keep prior versions
themselves, hidden from listings and counted by quotas. With versioning enabled an
overwrite or a delete keeps the replaced object as a prior version (a delete leaves no
latest version: S3's delete marker); suspended, new writes get the version id ``"null"``
and replace the ``"null"`` version, while prior versions with ids stay. Under a quota,
restore and purge hold the key's lock like every write (see :mod:`file_storage._quota.ledger`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import final

from file_storage._keys import KeyLike
from file_storage.backends._support import (
    LOOK_UP_GRACE,
    check_version_sendable,
    has_landed,
    run_whole,
)
from file_storage.backends._writes import Writes, _present
from file_storage.models import ObjectEvent, ObjectVersion


class Versions(Writes):
    """The versioning of :class:`~file_storage.StorageBackend`; documented there."""

    @final
    async def set_versioning(self, enabled: bool) -> None:
        """Keep (``True``) or stop keeping (``False``) prior versions of every object.

        Enabled, every overwrite and every ``delete`` keeps the replaced object as a prior
        version: :meth:`list_versions` shows it, ``load(path, version_id=...)`` reads it,
        :meth:`restore_version` brings it back, quotas count it. Disabled again (S3's
        "suspended"), prior versions stay, and new writes replace the latest version
        when it was itself written while versioning was off. On S3 this is the bucket's
        versioning (``PutBucketVersioning``), for the whole bucket, not only the prefix;
        on local disk a small file under the root records it, so it survives restarts.

        Raises:
            StorageConfigError: the backend cannot keep versions.
        """
        if not isinstance(enabled, bool):
            raise TypeError("enabled must be a bool")
        with self._translate("set_versioning", None):
            grant = await self._versioning_lock.acquire()
            try:
                if not enabled and await self._never_versioned():
                    return  # never enabled: there is nothing to suspend
                self._versioning_changes += 1
                try:
                    await self._quotas.versioning_begins()
                    try:
                        await self._set_versioning(enabled)
                    except BaseException:
                        # it may have switched all the same (a timeout after it did):
                        # the ledger takes the state the store answers now
                        state: str | None = None
                        with contextlib.suppress(Exception):
                            state = await self._versioning()
                        await self._quotas.set_versioning(state)
                        raise
                    await self._quotas.set_versioning("enabled" if enabled else "suspended")
                finally:
                    self._versioning_changes += 1
            finally:
                self._versioning_lock.release(grant)

    @final
    async def list_versions(self, path: KeyLike) -> list[ObjectVersion]:
        """Return the stored versions of the object at ``path``, newest first.

        The latest version has ``is_latest=True``; after a ``delete`` on a versioned
        backend none has (S3's delete marker), and the older ones stay restorable. An
        object written while versioning was off has one version, ``"null"``. A key
        never written (or purged) has none: ``[]``.
        """
        key = self._key(path, "list_versions")
        with self._translate("list_versions", key):
            return await self._list_versions(key)

    @final
    async def restore_version(self, path: KeyLike, version_id: str) -> str:
        """Make version ``version_id`` of ``path`` the latest again, as a new version.

        The content, content type and metadata of that version are written as a new
        latest version (server-side on S3: ``CopyObject`` of that ``VersionId``); the
        version that was the latest stays a prior version, so a restore can be undone
        like any overwrite. Works after a ``delete`` too. Counted by the quota like a
        write of that size.

        Returns:
            The normalized key.

        Raises:
            ObjectNotFoundError: no such version of ``path``.
            StorageQuotaExceededError: over quota (nothing written).
        """
        key = self._key(path, "restore_version")
        if not isinstance(version_id, str) or not version_id:
            raise TypeError("version_id must be a non-empty str (from list_versions)")
        with self._translate("restore_version", key) as call, self._events.pending() as done:
            check_version_sendable(version_id)
            async with self._quotas.hold(key):
                reservation, size = None, 0
                if self._quotas:
                    size = call.size = (await self._stat_version(key, version_id)).size
                    reservation = await self._quotas.reserve(key, size, "restore_version")
                hook = self._restore_version(key, version_id)
                known = size if reservation is not None else None
                # the restored version is a new object at the key
                done.extend(_present(await self._write(reservation, hook, known, key)))
        return key

    @final
    async def purge_versions(self, path: KeyLike, keep: int = 1) -> int:
        """Delete all but the newest ``keep`` versions of ``path`` for good.

        ``keep=1`` keeps the latest version (or, after a ``delete``, the newest prior
        one, still restorable) and frees the bytes of every older one. ``keep=0``
        erases the key with its whole history (on S3 its delete markers too).

        Returns:
            How many versions were deleted (delete markers are not counted).

        Raises:
            ValueError: ``keep < 0``.
        """
        key = self._key(path, "purge_versions")
        if isinstance(keep, bool) or not isinstance(keep, int):
            raise TypeError("keep must be an int")
        if keep < 0:
            raise ValueError("keep must be >= 0")
        with self._translate("purge_versions", key) as call, self._events.pending() as done:
            async with self._quotas.hold(key):
                versions = await self._list_versions(key)
                doomed, kept = versions[keep:], versions[:keep]
                try:
                    if doomed or keep == 0:
                        await self._purge_versions(key, doomed, keep == 0)
                except BaseException as exc:
                    if has_landed(exc):  # cancelled once the purge was done: count it
                        await self._purged(key, doomed, kept, done)
                    elif self._unsure(exc):
                        # cancelled in flight or its answer lost: the store may have
                        # purged all the same, so count the versions it lists now
                        await self._purged_unsure(key, doomed, kept, exc, done)
                    raise
                call.size = sum(v.size for v in doomed)
                await self._purged(key, doomed, kept, done)
        return len(doomed)

    async def _purged_unsure(
        self,
        key: str,
        doomed: list[ObjectVersion],
        kept: list[ObjectVersion],
        exc: BaseException,
        done: list[ObjectEvent],
    ) -> None:
        listing, cancelled = await run_whole(
            self._list_versions(key),
            grace=LOOK_UP_GRACE,
            cancelled_before=isinstance(exc, asyncio.CancelledError),
        )
        if not listing.cancelled() and listing.exception() is None:
            left = {v.version_id for v in listing.result()}
            gone = [v for v in doomed if v.version_id not in left]
            left_kept = kept + [v for v in doomed if v.version_id in left]
            await self._purged(key, gone, left_kept, done)
        if cancelled is not None:
            raise cancelled from exc

    async def _purged(
        self,
        key: str,
        doomed: list[ObjectVersion],
        kept: list[ObjectVersion],
        done: list[ObjectEvent],
    ) -> None:
        """Count a purge that deleted ``doomed``; the latest version among them was the
        object itself (``keep=0``), gone now: its ``deleted`` event goes to ``done``."""
        if any(v.is_latest for v in doomed):
            done.append(ObjectEvent("deleted", key))
        await self._quotas.set_kept(key, sum(v.size for v in kept if not v.is_latest))
        if any(v.is_latest for v in doomed):
            await self._quotas.drop(key)
