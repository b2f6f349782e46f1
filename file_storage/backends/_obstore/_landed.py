"""A conditional write whose answer was lost: stored or not?

object_store does not send a conditional PUT again when its answer is lost (a resend
could be refused by the first try's own object), so the write fails as an outage whose
outcome is unknown. The caller cannot simply try again either: a landed first try would
refuse it. So the key is looked at: when the object there is the write's own (its size,
content type, metadata and headers, stored since the write began, and its bytes, read
back and compared), the write is done. Anything else leaves the outage as it was; the
quota counts what the key holds either way.

What nothing can tell apart: another writer storing exactly the same object while this
write was in flight (or in the clock's slack before it began); the key then holds what
the caller asked for. The store's clock is read off the object (``last_modified``) and
compared with this machine's: a clock here running ahead by more than the slack makes
the write's own object look older, and the outage stands, as before the look.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

from file_storage.models import ObjectInfo

__all__ = ["SLACK", "Sent", "own_object"]

logger = logging.getLogger("file_storage.backends")

#: the two clocks' difference allowed for, and Last-Modified's truncation to seconds
SLACK = timedelta(seconds=2)


class Sent:
    """What a conditional PUT sent, as a stat of the object must show it."""

    __slots__ = ("body", "content_type", "headers", "metadata", "started")

    def __init__(
        self,
        body: bytes,
        content_type: str,
        metadata: dict[str, str],
        headers: tuple[str | None, str | None],
        started: datetime,
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.metadata = metadata
        self.headers = headers  # cache_control, content_disposition
        self.started = started

    def described_by(self, info: ObjectInfo) -> bool:
        return (
            info.size == len(self.body)
            and info.content_type == self.content_type
            and info.metadata == self.metadata
            and (info.cache_control, info.content_disposition) == self.headers
            and info.last_modified >= self.started - SLACK
        )


async def own_object(
    key: str,
    sent: Sent,
    head: Callable[[], Awaitable[ObjectInfo]],
    read: Callable[[str | None], AsyncIterator[bytes]],
) -> ObjectInfo | None:
    """The object at ``key`` when it is the write's own (``None``: it is not, or the
    look failed). ``read(etag)`` streams the object's bytes pinned to that version."""
    try:
        info = await head()
        if not sent.described_by(info):
            return None
        offset = 0
        async for chunk in read(info.etag):
            end = offset + len(chunk)
            if sent.body[offset:end] != chunk:
                return None
            offset = end
    except Exception as exc:
        if not isinstance(exc, FileNotFoundError):  # nothing stored: not landed
            logger.warning(
                "could not check whether a conditional write of %r had landed (%s)",
                key,
                type(exc).__name__,
            )
        return None
    if offset != len(sent.body):
        return None
    logger.info("a conditional write of %r whose answer was lost had landed: done", key)
    return info
