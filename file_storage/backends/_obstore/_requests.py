"""obstore requests that end whole: a multipart body a cancelled caller can stop, and
an await that, cancelled, waits for the request to end before telling the caller.

obstore runs a request on its Rust runtime: a cancelled asyncio future is dropped there
mid-request, aborting nothing, so the request is shielded and its body stopped instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from file_storage.backends._support import mark_landed, wait_out

__all__ = ["Interruptible", "to_the_end"]


class Stopped(Exception):
    """The body of an upload whose caller was cancelled: obstore aborts the upload."""


class Interruptible:
    """The body of a multipart upload, which :meth:`stop` ends with an error.

    obstore aborts an upload whose body raises (GCS: the XML multipart upload; Azure: the
    blocks are never committed), but a cancelled obstore future is dropped on its Rust
    side mid-upload, aborting nothing: a GCS upload stayed open, its parts stored.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._stopped = False
        self._reading: asyncio.Task[Any] | None = None
        self.sent = 0  # bytes handed to obstore
        self.failed = False  # the body ended with an error, not at its end

    def __aiter__(self) -> Interruptible:
        return self

    async def __anext__(self) -> bytes:
        if self._stopped:
            raise Stopped
        # obstore awaits each chunk in a task of its own on this loop
        self._reading = asyncio.current_task()
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            raise
        except BaseException:
            self.failed = True
            raise
        finally:
            self._reading = None
        self.sent += len(chunk)
        return chunk

    def stop(self) -> None:
        """Fail the chunk being read (a client stalled mid-body) and every later one."""
        self._stopped = True
        if self._reading is not None:
            self._reading.cancel()


async def to_the_end(
    request: Awaitable[Any], body: Interruptible | None = None, *, gone_ok: bool = False
) -> Any:
    """Await an obstore request; when cancelled, stop its body and wait for it to end
    (aborted, or landed if its last step was under way) before raising the cancellation,
    so that nothing is left open and nothing lands after the caller was told. A request
    that landed marks the cancellation so (``gone_ok``: a delete that found nothing).
    Return the request's answer."""
    task = asyncio.ensure_future(request)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError as cancelled:
        # done already: the request itself was cancelled, or it ended in the same pass
        # of the loop as the caller's cancellation (its outcome is known: told below)
        if body is not None and not task.done():
            body.stop()
        await wait_out(task)  # a second cancellation waits all the same
        if not task.cancelled():
            # retrieved: the caller is told of the cancellation instead
            error = task.exception()
            if error is None or (gone_ok and isinstance(error, FileNotFoundError)):
                mark_landed(cancelled)
        raise
