"""The conditional requests of the backends built on obstore: a move's copy and its
delete, and the delete of an object looked at (migrate, purge_expired), each made only
while the object is the version looked at, where a key of the backend's own signs them
(see ``_conditional``); without one, the copy and a check-then-delete of object_store.
"""

from __future__ import annotations

from file_storage.backends._obstore._conditional import (
    Conflict,
    Outcome,
    send_copy,
    send_delete,
)
from file_storage.backends._obstore._requests import to_the_end
from file_storage.backends._pins import looked_at, moving
from file_storage.backends.base import StorageBackend
from file_storage.errors import ObjectNotFoundError, PreconditionFailedError
from file_storage.models import ObjectInfo

__all__ = ["ObstoreConditions"]


class ObstoreConditions(StorageBackend):
    """The conditional moves and deletes of :class:`ObstoreBackend`."""

    #: the store's name in messages ("GCS", "Azure")
    _kind: str = "obstore"
    #: a server-side copy has its source's ETag (GCS: the MD5; Azure makes a new one)
    _copy_keeps_etag: bool = False

    async def _head_meta(
        self, key: str, if_match: str | None = None
    ) -> tuple[ObjectInfo, str | None]:
        """The object's info and its store version (GCS: the generation)."""
        raise NotImplementedError

    async def _delete_request(
        self, key: str, info: ObjectInfo, version: str | None
    ) -> tuple[str, dict[str, str]] | None:
        """The signed URL and headers of a DELETE of ``key`` that the server refuses (412)
        unless the object is still ``info`` (``version``: its store version, when known);
        ``None``: no key of our own to sign with (see ``_conditional``). Raises
        PreconditionFailedError or FileNotFoundError when it is already known to be
        another object, or none."""
        return None

    async def _copy_request(
        self, src: str, dst: str, info: ObjectInfo, version: str | None
    ) -> tuple[str, dict[str, str]] | None:
        """The signed URL and headers of a server-side copy of ``src`` to ``dst`` that the
        server refuses (412) unless ``src`` is still ``info`` (``version``: its store
        version, when known); ``None``: no key of our own to sign with (object_store's
        copy, which takes whatever ``src`` holds)."""
        return None

    async def _delete_unchanged(
        self, key: str, info: ObjectInfo, version: str | None = None
    ) -> Outcome | None:
        """Delete ``key`` only while it holds ``info``: what the delete did, or ``None``
        when it cannot be made conditional here (nothing deleted)."""
        try:
            request = await self._delete_request(key, info, version)
        except FileNotFoundError:
            return "gone"
        except PreconditionFailedError:
            return "changed"
        if request is None:
            return None
        url, headers = request
        outcome: Outcome = await to_the_end(send_delete(url, headers, self._kind))
        if outcome == "changed" and not await self._exists(key):
            # Azure answers 412 for a blob gone, as does a retry of a delete whose
            # first answer was lost
            return "gone"
        return outcome

    async def _move(self, src: str, dst: str) -> str | None:
        # a copy, then a delete of the source only while it is the object found here: a
        # write landing on it meanwhile stays (the delete fails, as move documents). The
        # copy takes only that object too, where it can be signed (see _pins): a write
        # landing before the copy fails the move with nothing at dst
        info, version = await self._head_meta(src)

        async def delete_source() -> None:
            outcome = await self._delete_unchanged(src, info, version)
            if outcome is None:
                await self._delete(src)  # no key to sign with: unconditional
            elif outcome == "changed":
                raise PreconditionFailedError(
                    "the source was written during the move: it is kept, and the "
                    "destination holds the copy"
                )

        with moving(src, (info, version)):
            return await self._copy_then_delete(src, dst, delete_source)

    async def _pinned_copy(self, src: str, dst: str) -> bool:
        """A move's copy of ``src`` to ``dst``: made only while ``src`` is the object the
        move found (see _pins); False: not a move's copy, or it cannot be pinned here
        (nothing sent: object_store's copy it is)."""
        found = looked_at(src)
        if found is None:
            return False
        request = await self._copy_request(src, dst, *_found(found))
        if request is None:
            return False
        url, headers = request
        try:
            answer, resent, answered = await to_the_end(send_copy(url, headers, self._kind))
        except Conflict as conflict:
            # Azure refuses a copy to a blob whose copy is pending: the try whose answer
            # was lost may be that copy, going on (awaited there until complete)
            if conflict.resent and await self._copied(src, dst, found):
                return True
            raise
        if answer == "done":
            await self._copy_done(dst, answered)
            return True
        if resent and await self._copied(src, dst, found):
            # a try whose answer was lost copied the version looked at, and the source
            # changed (or went) before the resend: the copy is there, and the move's
            # delete, conditional on that version, tells what became of the source
            return True
        if answer == "gone" or (answer == "changed" and not await self._exists(src)):
            raise ObjectNotFoundError()  # (Azure may answer 412 for a source gone)
        if answer == "changed":
            raise PreconditionFailedError(
                "the source was written during the move: it is kept, and nothing was copied"
            )
        return True

    async def _copy_done(self, dst: str, answered: dict[str, str] | None) -> None:
        """Return once the server-side copy to ``dst`` is complete (``answered``: the
        copy's answer headers; ``None``: object_store's copy, whose answer is not seen).
        GCS's copies end with their answer; Azure's may go on after it (see azure)."""

    async def _copied(self, src: str, dst: str, found: object) -> bool:
        """Whether ``dst`` holds a copy of the source version ``found`` (its size, type,
        metadata and headers; on GCS its MD5 ETag too, which a copy keeps; on Azure a
        complete copy of ``src``, as the destination's copy properties say)."""
        info, _ = _found(found)
        try:
            there, _ = await self._head_meta(dst)
        except FileNotFoundError:
            return False
        same = (there.size, there.content_type, dict(there.metadata)) == (
            info.size,
            info.content_type,
            dict(info.metadata),
        )
        kept = (there.cache_control, there.content_disposition) == (
            info.cache_control,
            info.content_disposition,
        )
        return same and kept and (not self._copy_keeps_etag or there.etag == info.etag)

    async def _delete_looked_at(self, key: str, current: ObjectInfo) -> bool:
        outcome = await self._delete_unchanged(key, current)
        if outcome is None:  # no key to sign with: checked, then deleted
            await self._delete(key)
            return True
        # "gone" is deleted too: a resent DELETE whose first try landed finds nothing;
        # either way nothing is stored, so the quota frees it and the delete is told
        return outcome != "changed"


def _found(found: object) -> tuple[ObjectInfo, str | None]:
    """What ``_move`` handed its copy: the source's info and store version."""
    assert isinstance(found, tuple)  # set by _move alone
    return found
