"""Azure's server-side copies end before anything trusts them.

Azure's Copy Blob may answer 202 with ``x-ms-copy-status: pending``: the service goes on
copying after its answer, reading the source as it goes. A move that deleted its source
then would leave the copy to fail, and the object lost. So a copy is awaited until the
destination's ``x-ms-copy-status`` says ``success`` (polled with a signed HEAD, the
waits growing to :data:`MAX_POLL` seconds; a look left without an answer is made again,
a refused one aborts the copy and raises); ``failed`` or ``aborted`` raise, and so does
a copy still pending after :data:`COPY_WAIT` seconds, which is aborted first (Abort Copy
Blob) so that it does not land after its caller was told it failed (an abort that
finds the copy ended is followed by one more look, which the caller is told); these raise
:class:`StorageUnavailableError`, a server-side fault to try again. A caller cancelled
while it waits aborts the copy the same way before the cancellation goes on (what the
destination then holds is counted, as for any cancelled write). Either way a move's
source is kept.

A destination written by another writer while the copy was pending (its copy id is no
longer this copy's) fails the copy too: the copy was aborted by that write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from file_storage.backends._core import Method
from file_storage.backends._obstore._conditional import Conflict, send_copy, send_head
from file_storage.backends._obstore._requests import to_the_end
from file_storage.errors import (
    PreconditionFailedError,
    StorageError,
    StorageUnavailableError,
)

__all__ = ["COPY_WAIT", "MAX_POLL", "CopyStatus", "Sign", "wait_for_copy"]

#: how long a pending copy is awaited before it is aborted, in seconds
COPY_WAIT = 900.0
#: the longest wait between two looks at a pending copy, in seconds
MAX_POLL = 2.0

#: signs a request of ``method`` on the destination blob: ``GET`` (a HEAD is sent with
#: it) to look at the copy, ``PUT`` to abort it
Sign = Callable[[Method], Awaitable[str]]


class CopyStatus:
    """What the destination's headers say of its last copy."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.status = headers.get("x-ms-copy-status")  # None: never copied, or written since
        self.copy_id = headers.get("x-ms-copy-id")
        self.source = headers.get("x-ms-copy-source")

    @property
    def pending(self) -> bool:
        return self.status == "pending"


async def wait_for_copy(copy_id: str | None, sign: Sign, version: str) -> None:
    """Wait for the pending copy ``copy_id`` (``None``: whichever copy the destination
    holds, if any) to end; ``sign`` signs the requests on the destination.

    Raises StorageUnavailableError (the copy failed or was aborted, or it was still
    pending after :data:`COPY_WAIT` seconds: aborted; or it could not be looked at, its
    looks refused or unanswered for as long: aborted), PreconditionFailedError (the
    destination was written meanwhile). What the destination then holds is counted as
    for a write left without an answer (looked at)."""
    loop = asyncio.get_running_loop()
    wait = COPY_WAIT
    end = loop.time() + wait
    delay = 0.05
    pending_id = copy_id
    looked_again = False  # once the wait is over, after an abort that found no copy
    try:
        while True:
            try:
                answer, headers = await send_head(await sign("GET"), "Azure")
            except StorageUnavailableError:
                # a look left without an answer: the copy goes on all the same, so it is
                # looked at again (until the wait is over), never given up on unaborted
                answer, headers = None, {}
            except StorageError as exc:
                # the copy cannot be looked at (refused): given up, aborted first; what
                # the destination holds is unknown (the copy may have ended), so it is
                # raised as a copy left without an answer, which the quota looks at
                with contextlib.suppress(StorageError):
                    await _abort(sign, pending_id, version)
                raise StorageUnavailableError(
                    f"Azure: the server-side copy could not be looked at ({exc.detail}); aborted"
                ) from exc
            state = CopyStatus(headers)
            if answer is not None:
                if answer == "gone" or (copy_id is not None and state.copy_id != copy_id):
                    raise PreconditionFailedError(
                        "the destination was written or deleted while Azure copied to it: "
                        "the copy did not complete"
                    )
                if not state.pending:
                    if state.status in (None, "success"):
                        return
                    raise StorageUnavailableError(
                        f"Azure: the server-side copy ended {state.status}"
                    )
                pending_id = state.copy_id
            if loop.time() >= end:
                if not looked_again:
                    aborted = None
                    with contextlib.suppress(StorageError):  # best tried (the store down)
                        aborted = await _abort(sign, pending_id, version)
                    if aborted is False:
                        # refused (409): the copy ended before the abort reached it, and
                        # one more look says how (complete: the caller is told so)
                        looked_again = True
                        continue
                raise StorageUnavailableError(
                    f"Azure: the server-side copy was still pending after {wait:g} s (aborted)"
                    if answer is not None
                    else f"Azure: the server-side copy could not be looked at for {wait:g} s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL)
    except asyncio.CancelledError:
        # aborted, so that it does not land after its caller was told; if it ended first,
        # what the destination holds is counted as any cancelled write's is (a look)
        with contextlib.suppress(StorageError):
            await _abort(sign, pending_id, version)
        raise


async def _abort(sign: Sign, copy_id: str | None, version: str) -> bool:
    """Abort the pending copy ``copy_id``; False: it was no longer pending (it ended).
    Awaited to its end even when cancelled."""
    if copy_id is None:
        return False
    headers = {"x-ms-copy-action": "abort", "x-ms-version": version}
    url = await sign("PUT") + "&comp=copy&copyid=" + quote(copy_id, safe="")
    try:
        answer: str = (await to_the_end(send_copy(url, headers, "Azure")))[0]
    except Conflict:  # 409 NoPendingCopyOperation: the copy ended before the abort came
        return False
    return answer == "done"
