"""The S3 backend's flush of its fallback spool: what is sent, and over what.

A spooled version is sent only when S3 holds nothing newer: the flush asks S3 for the key
(``HEAD``) and drops the spooled version when S3's object was written after it, or the key
was deleted after it (a delete marker, in a bucket that versions). The upload then carries
the condition that what the check saw is still there (``If-Match`` its ETag, or
``If-None-Match: *`` when there was nothing), where the server checks it: a write or delete
another server makes between the check and the upload is newer, and wins. A refusal
after the client resent the upload (its first try's answer lost) may be that try's own
object, and so may an object newer than the spooled write that the check finds (an
earlier flush's, all its answers lost): the flush reads it back and counts it flushed
when it holds the spooled bytes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from file_storage._spool import Entry
from file_storage.backends.s3._clients import S3Clients
from file_storage.backends.s3._errors import condition_error
from file_storage.backends.s3._info import utc
from file_storage.backends.s3._landed import same_headers
from file_storage.models import ObjectEvent

if TYPE_CHECKING:
    from file_storage.backends.s3._conditions import Conditions

__all__ = ["S3Flushes"]

logger = logging.getLogger("file_storage.backends.s3")


class S3Flushes(S3Clients):
    """The spool's flush of :class:`~file_storage.S3StorageBackend`."""

    _conditions: Conditions

    if TYPE_CHECKING:

        async def _head(self, key: str) -> dict[str, Any]: ...

        def _stream_stored(
            self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
        ) -> AsyncIterator[bytes]: ...

        def _write_params(self, content_type: str, metadata: dict[str, str]) -> dict[str, Any]: ...

    def _start_background(self) -> None:
        self._fallback.start(self.flush_spool)

    async def flush_spool(self) -> int:
        """Upload what the fallback spool holds to S3, removing each object once S3 has it.

        In key order, a few at a time; an object is dropped only after S3 confirmed it and
        if no newer write replaced it. Concurrent calls never upload an object twice; after
        a crash between upload and removal, the next flush sends the same bytes again.

        Returns:
            How many spooled objects were uploaded (0 without ``fallback_path``).

        Raises:
            StorageUnavailableError: S3 is still unavailable; what was flushed before
                stays flushed, the rest stays spooled.
        """
        with self._translate("flush_spool", None):
            concurrency = min(4, self._options.concurrency)
            flushed = await self._fallback.flush(self._flush_spooled, concurrency)
        if flushed:
            logger.info("flushed %d spooled objects to S3", flushed)
        return flushed

    async def _flush_spooled(
        self, entry: Entry, path: Path, uploaded: dict[str, str | None] | None = None
    ) -> bool:
        """Send a spooled version and emit its event; False, sending nothing, when S3 holds
        an object written after it (another server's, once S3 was back): that one is newer;
        or when the key was deleted after it (a delete marker in a versioned bucket).
        ``uploaded`` gets the spooled etag -> the etag S3 gave the upload."""
        # sent only over what this check saw (where the server checks the condition): a
        # write or delete another server makes between the check and the upload is newer
        # than the spooled write, and wins
        condition: dict[str, str] = {"IfNoneMatch": "*"}
        try:
            head = await self._head(entry.key)
        except Exception as exc:
            if not self._not_found(exc):
                raise
            deleted = await self._deleted_at(entry.key, exc)
            # S3's times are whole seconds: a delete in the spooled write's second may
            # have come after it, and a deleted object must not come back
            if deleted is not None and deleted + timedelta(seconds=1) > entry.spooled_at:
                return _dropped(entry, f"deleted in S3 since (at {deleted.isoformat()})")
        else:
            stored = utc(head["LastModified"])
            if stored > entry.spooled_at:
                # a flush before this one may have stored it, its answers lost: then
                # S3 holds the spooled bytes, and they are flushed
                held = await self._holds_spooled(entry, head)
                if held is None:
                    why = f"S3 has a newer object (written {stored.isoformat()})"
                    return _dropped(entry, why)
                return await self._flushed(entry, held or None, uploaded)
            condition = {"IfMatch": head["ETag"]} if head.get("ETag") else {}
        condition = await self._checked_condition(condition, entry.size)
        try:
            etag = await self._send_spooled(entry, path, condition)
        except Exception as exc:
            refused = condition_error(exc, create_only="IfNoneMatch" in condition)
            if not condition or refused is None:
                raise
            held = await self._holds_spooled(entry)
            if held is None:
                return _dropped(entry, "S3's object was replaced or deleted during the flush")
            etag = held or None  # its own first try landed, unanswered: flushed
        return await self._flushed(entry, etag, uploaded)

    async def _flushed(
        self, entry: Entry, etag: str | None, uploaded: dict[str, str | None] | None
    ) -> bool:
        """``entry`` is in S3 (``etag``: S3's, when known): noted and announced."""
        if uploaded is not None:
            uploaded[entry.etag] = etag
        if not self._events:
            return True
        if etag is None:  # S3's, not the spool's: the spooled copy is there until this returns
            try:
                etag = (await self._head(entry.key)).get("ETag")
            except Exception as exc:
                if self._map_error(exc, "flush_spool", entry.key) is None:
                    raise
        self._events.emit(ObjectEvent("created", entry.key, entry.size, etag))
        return True

    async def _holds_spooled(self, entry: Entry, head: dict[str, Any] | None = None) -> str | None:
        """After S3 refused the flush's conditional upload, or its check found an object
        written after the spooled write: whether S3 holds the spooled bytes all the
        same: their S3 ETag (``""`` when S3 gave none), ``None`` when not. A try whose
        answer was lost (a timeout) lands, and the client's resend is then refused by
        that very object (the retries are the client's own, unseen here); when every
        answer was lost, the flush failed, and the next one finds that object.
        Compared by size, type, metadata and the bytes' SHA-256, read back only on this
        path; another server's write of the same bytes, type and metadata in that
        instant is taken for the flush's own, as it stores the same. One replaced during
        the read-back is another server's, newer: not. ``head``: S3's answer to a HEAD
        just made."""
        if head is None:
            try:
                head = await self._head(entry.key)
            except Exception as exc:
                if self._not_found(exc):
                    return None
                raise
        # the spooled write's type and metadata (it carried no other header: such writes
        # go straight to S3), compared as the look at a landed write compares them
        params = self._write_params(entry.content_type, entry.metadata)
        if head.get("ContentLength") != entry.size or not same_headers(head, params):
            return None
        digest = hashlib.sha256()
        try:
            etag = head.get("ETag") or None  # (an empty one is no condition to send)
            async for chunk in self._stream_stored(entry.key, 0, None, 1 << 20, etag):
                digest.update(chunk)
        except Exception as exc:
            # replaced (or deleted) since that HEAD: another server's write, newer
            if self._not_found(exc) or condition_error(exc, create_only=False) is not None:
                return None
            raise
        # read under If-Match that HEAD's ETag: the object the ETag names
        return str(head.get("ETag") or "") if digest.hexdigest() == entry.sha256 else None

    async def _send_spooled(
        self, entry: Entry, path: Path, condition: dict[str, str] | None = None
    ) -> str | None:
        params = self._write_params(entry.content_type, entry.metadata)
        transfer = await self._transfer()
        full = self._full(entry.key)
        return await transfer.upload_file(full, path, entry.size, params, None, condition)

    async def _checked_condition(self, condition: dict[str, str], size: int) -> dict[str, str]:
        """``condition`` if the server checks it on the upload of ``size`` bytes, else
        none (the flush then sends as before: a flush never fails for the server's lack)."""
        if not condition:
            return condition
        multipart = size > self._options.threshold
        if "IfNoneMatch" in condition and not multipart:
            return condition  # every server measured checks it on PutObject: no probe
        support = await self._conditions.learn(await self._client(), self._bucket)
        if multipart:
            return condition if set(condition) <= support.completion else {}
        return condition if support.if_match is not None else {}


def _dropped(entry: Entry, why: str) -> bool:
    """Log a spooled version the flush drops instead of sending (``False``: not sent)."""
    logger.warning(
        "spooled %r dropped, not flushed: %s",
        entry.key,
        why,
        extra={"operation": "flush_spool", "key": entry.key, "size": entry.size},
    )
    return False
