"""Conditional deletes and copies, which object_store cannot send: one signed request each.

object_store's delete takes no condition, so a check followed by a delete removes a write
landing in between (a move's source rewritten after its copy, an object re-uploaded while
``purge_expired`` checks it). With a key of its own (GCS: the service account's private
key; Azure: the account key) the backend signs a URL for one DELETE of one object and
sends it with the condition as a header (GCS ``x-goog-if-generation-match``, Azure
``If-Match``): the server deletes the object only while it is the version looked at.
Without a key (Application Default Credentials, the Azure credential chain) there is
nothing to sign with, and callers fall back to a check, then a delete.

A move's copy is sent the same way, pinned to the source's version the move looked at
(GCS ``x-goog-copy-source-if-generation-match``, Azure ``x-ms-source-if-match``): a
write landing on the source after that look fails the copy (412), nothing copied.

The request goes through :mod:`http.client` in a thread (no client library for one verb).
Its messages carry the status alone, never the URL (it holds the signature).
"""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from file_storage.errors import (
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)

__all__ = [
    "SIGNED_SECONDS",
    "Answer",
    "Conflict",
    "Outcome",
    "send_copy",
    "send_delete",
    "send_head",
]

#: how long the URL of one conditional delete is valid: its attempts all fit in it
SIGNED_SECONDS = 300
#: a refused connection, a 5xx or a 429 is tried again, after 0.1 s then 0.2 s
ATTEMPTS = 3
TIMEOUT = 30.0

#: ``deleted``; ``gone`` (404: nothing there); ``changed`` (412: the condition failed,
#: or the object is gone and the server answers so, as Azure may)
Outcome = Literal["deleted", "gone", "changed"]
#: the same for any request: ``done`` (2xx)
Answer = Literal["done", "gone", "changed"]


class Conflict(StorageError):
    """A 409: Azure refuses a copy to a blob whose copy is pending (``resent``: the
    request was sent again, and that copy may be its earlier try's, landed unanswered),
    and an abort of a copy no longer pending."""

    def __init__(self, message: str, *, resent: bool) -> None:
        super().__init__(message)
        self.resent = resent


def _send(
    url: str, headers: Mapping[str, str], method: str = "DELETE"
) -> tuple[int, dict[str, str]]:
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.netloc, timeout=TIMEOUT
        )
    else:
        connection = http.client.HTTPConnection(parts.netloc, timeout=TIMEOUT)
    try:
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        # a PUT without a body (a copy) is sent with Content-Length: 0
        connection.request(method, target, headers=dict(headers))
        response = connection.getresponse()
        response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()


async def send_delete(url: str, headers: Mapping[str, str], kind: str) -> Outcome:
    """Send the signed DELETE ``url`` with ``headers`` (its condition); say what it did.

    Raises as :func:`send_copy` does."""
    answer, _, _ = await _send_until_answered("DELETE", url, headers, kind)
    return "deleted" if answer == "done" else answer


async def send_copy(
    url: str, headers: Mapping[str, str], kind: str
) -> tuple[Answer, bool, dict[str, str]]:
    """Send the signed copy (a body-less PUT) ``url`` with ``headers`` (its condition);
    say what it did, whether an earlier try may have landed unanswered (a refusal or a
    404 is then no proof that nothing was copied), and the answer's headers (lower-case
    names; Azure's tell whether the copy is done or still pending).

    Raises StoragePermissionError (401, 403), StorageUnavailableError (no answer, 408,
    429, 5xx after :data:`ATTEMPTS`), Conflict (409), StorageError
    (any other status)."""
    return await _send_until_answered("PUT", url, headers, kind)


async def send_head(url: str, kind: str) -> tuple[Answer, dict[str, str]]:
    """Send the signed HEAD ``url``; say what it found (``done``: there, ``gone``: 404)
    and its headers (lower-case names). Raises as :func:`send_copy` does."""
    answer, _, headers = await _send_until_answered("HEAD", url, {}, kind)
    return answer, headers


async def _send_until_answered(
    method: str, url: str, headers: Mapping[str, str], kind: str
) -> tuple[Answer, bool, dict[str, str]]:
    error: StorageError = StorageUnavailableError(f"{kind} unavailable (no answer)")
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(0.1 * 2 ** (attempt - 1))
        try:
            if method == "DELETE":
                status, answered = await asyncio.to_thread(_send, url, headers)
            else:
                status, answered = await asyncio.to_thread(_send, url, headers, method)
        except (OSError, http.client.HTTPException):
            # the message of a connection error names the host at most; not chained, as
            # http.client's exceptions may carry the request line
            error = StorageUnavailableError(f"{kind} unavailable (no answer)")
            continue
        resent = attempt > 0  # after no answer, or a 408, 429 or 5xx: it may have landed
        if status in (200, 201, 202, 204):
            return "done", resent, answered
        if status == 404:
            return "gone", resent, answered
        if status == 412:
            return "changed", resent, answered
        if status in (401, 403):
            raise StoragePermissionError(f"{kind}: access denied ({status})")
        if status >= 500 or status in (408, 429):
            error = StorageUnavailableError(f"{kind} unavailable ({status})")
            continue
        if status == 409:
            raise Conflict(f"{kind} request failed ({status})", resent=resent)
        raise StorageError(f"{kind} request failed ({status})")
    raise error
