"""The S3 backend's deletes of one version: a move's source, migrate's, an expired object.

A move copies, then deletes its source; ``migrate(delete_source=True)`` and
``purge_expired`` look at an object, then delete it. A plain DeleteObject in the second
step would take a write landing in between with it. So that delete carries ``If-Match``
with the ETag the look saw, where the server checks it (probed once: ``_conditions``):
S3 deletes the object only while it is that version, and a write landing meanwhile stays
(the move raises :class:`PreconditionFailedError`, the migration reports the object
failed, the purge keeps it). A server that ignores the header (Ceph RGW 16) gets the
plain delete it got before, as documented. With the fallback spool, a spooled version
looked at is deleted under the key's spool lock; a conditional delete is never spooled.

S3's ETag names the bytes (their MD5, for a single upload without SSE-KMS): a rewrite
with the same bytes is taken for the version looked at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

        return await self._copy_then_delete(src, dst, delete_source)

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

        async def on_s3() -> Outcome:
            etag = looked_at.etag
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

        return await self._fallback.delete_unchanged(key, looked_at, on_s3, plain)

    async def _in_s3(self, key: str) -> bool:
        client: Any = await self._client()
        try:
            await client.head_object(Bucket=self._bucket, Key=self._full(key))
        except Exception as exc:
            if self._not_found(exc):
                return False
            raise
        return True
