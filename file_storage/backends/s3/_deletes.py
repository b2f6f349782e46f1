"""The S3 backend's deletes of one version: a move's source, migrate's, an expired object.

A move copies, then deletes its source; ``migrate(delete_source=True)`` and
``purge_expired`` look at an object, then delete it. A plain DeleteObject in the second
step would take a write landing in between with it. So that delete carries ``If-Match``
with the ETag the look saw, where the server checks it (probed once: ``_conditions``):
S3 deletes the object only while it is that version, and a write landing meanwhile stays
(the move raises :class:`PreconditionFailedError`, the migration reports the object
failed, the purge keeps it). A server that ignores the header (Ceph RGW 16) gets the
plain delete it got before, as documented. With the fallback spool, a spooled version
looked at is deleted under the key's spool lock, with S3's object under it only while it
is what a HEAD then found there (where checked); a conditional delete is never spooled.

S3's ETag names the bytes (their MD5, for a single upload without SSE-KMS): a rewrite
with the same bytes is taken for the version looked at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from file_storage.backends._pins import looked_at as moves_look
from file_storage.backends._pins import moving
from file_storage.backends.s3._errors import NOT_FOUND, condition_error, error_code
from file_storage.backends.s3._fallback import Outcome
from file_storage.backends.s3._flushes import S3Flushes
from file_storage.errors import PreconditionFailedError
from file_storage.models import ObjectInfo

__all__ = ["S3Deletes"]


class S3Deletes(S3Flushes):
    """The conditional deletes of :class:`~file_storage.S3StorageBackend`."""

    if TYPE_CHECKING:

        def _full(self, key: str) -> str: ...

    async def _move(self, src: str, dst: str) -> str | None:
        # the version copied is the one looked at now (or a later one, whose delete the
        # server then refuses): the delete takes only that version
        looked_at = await self._stat(src)

        async def delete_source() -> None:
            if await self._delete_unchanged(src, looked_at) == "changed":
                raise PreconditionFailedError(
                    "the source was written during the move: it is kept, and the "
                    "destination holds the copy"
                )

        # the copy is pinned to that version too (see _pinned): a write landing before
        # the copy reads src fails the copy, and nothing lands at dst. Unpinned, the copy
        # took the new version and the delete then refused: a move that failed with src
        # and dst both holding the new bytes
        with moving(src, looked_at.etag):
            return await self._copy_then_delete(src, dst, delete_source)

    @contextlib.contextmanager
    def _pinned(self, src: str) -> Iterator[str | None]:
        """The ETag a copy of ``src`` is pinned to: the one the move copying it found
        (``None``: not a move's copy). The copy's refusal (412) raises
        :class:`PreconditionFailedError`: the source changed, nothing was copied."""
        found = moves_look(src)
        etag = found if isinstance(found, str) else None
        try:
            yield etag
        except Exception as exc:
            if etag is None or not _refused(exc):
                raise
            raise PreconditionFailedError(
                "the source was written during the move: it is kept, and nothing was copied"
            ) from exc

    async def _delete_looked_at(self, key: str, current: ObjectInfo) -> bool:
        # "gone" is deleted too: botocore resends a DeleteObject whose answer was lost,
        # and the resend of one that landed finds nothing (404); either way nothing is
        # stored, so the quota frees it and the delete is told, as a plain delete would
        return await self._delete_unchanged(key, current) != "changed"

    async def _delete_unchanged(self, key: str, looked_at: ObjectInfo) -> Outcome:
        """Delete ``key`` only while it holds ``looked_at`` (its ETag), where the server
        checks ``If-Match`` on DeleteObject; else plainly (``"deleted"``)."""
        client = await self._client()
        full = self._full(key)

        async def plain() -> None:
            await client.delete_object(Bucket=self._bucket, Key=full)

        async def on_s3(etag: str | None) -> Outcome:
            condition = None
            if etag is not None:
                condition = await self._conditions.for_delete(client, self._bucket, etag)
            if condition is None:  # nothing to compare, or a server that would not
                await plain()
                return "deleted"
            try:
                await client.delete_object(Bucket=self._bucket, Key=full, **condition)
            except Exception as exc:
                if error_code(exc) in NOT_FOUND:
                    return "gone"  # AWS and moto answer 404 NoSuchKey for a key not there
                if condition_error(exc, create_only=False) is None:
                    raise
                # a 412 (or a 409: a concurrent write won); a server answering 412 for a
                # key not there says "gone" once asked
                return "changed" if await self._in_s3(key) else "gone"
            return "deleted"

        async def under_spooled() -> Outcome:
            # S3's older object under the spooled version looked at: deleted only while
            # it is what S3 holds now (HEAD), where the server checks, so a direct write
            # by a process outside this spool, landing meanwhile, stays ("changed").
            # A server that would not check gets the plain delete, as documented
            if not await self._conditions.checks_delete(client, self._bucket):
                await plain()
                return "deleted"
            etag = await self._s3_etag(key)
            if etag is None:
                return "gone"  # nothing in S3 under it: nothing to delete there
            return await on_s3(etag)

        return await self._fallback.delete_unchanged(
            key, looked_at, lambda: on_s3(looked_at.etag), under_spooled
        )

    async def _in_s3(self, key: str) -> bool:
        return await self._s3_etag(key) is not None

    async def _s3_etag(self, key: str) -> str | None:
        """The ETag of the object S3 holds at ``key`` (``None``: none), spool aside."""
        client: Any = await self._client()
        try:
            head = await client.head_object(Bucket=self._bucket, Key=self._full(key))
        except Exception as exc:
            if self._not_found(exc):
                return None
            raise
        return str(head["ETag"])


def _refused(exc: Exception) -> bool:
    """The copy's condition failed (not: the source is gone, which stays not found)."""
    if isinstance(exc, PreconditionFailedError):  # the obstore transport's own
        return True
    return error_code(exc) not in NOT_FOUND and condition_error(exc, create_only=False) is not None
