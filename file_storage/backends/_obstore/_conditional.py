"""Conditional deletes, which object_store cannot send: one signed request per delete.

object_store's delete takes no condition, so a check followed by a delete removes a write
landing in between (a move's source rewritten after its copy, an object re-uploaded while
``purge_expired`` checks it). With a key of its own (GCS: the service account's private
key; Azure: the account key) the backend signs a URL for one DELETE of one object and
sends it with the condition as a header (GCS ``x-goog-if-generation-match``, Azure
``If-Match``): the server deletes the object only while it is the version looked at.
Without a key (Application Default Credentials, the Azure credential chain) there is
nothing to sign with, and callers fall back to a check, then a delete.

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

__all__ = ["SIGNED_SECONDS", "Outcome", "send_delete"]

#: how long the URL of one conditional delete is valid: its attempts all fit in it
SIGNED_SECONDS = 300
#: a refused connection, a 5xx or a 429 is tried again, after 0.1 s then 0.2 s
ATTEMPTS = 3
TIMEOUT = 30.0

#: ``deleted``; ``gone`` (404: nothing there); ``changed`` (412: the condition failed,
#: or the object is gone and the server answers so, as Azure may)
Outcome = Literal["deleted", "gone", "changed"]


def _send(url: str, headers: Mapping[str, str]) -> int:
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.netloc, timeout=TIMEOUT
        )
    else:
        connection = http.client.HTTPConnection(parts.netloc, timeout=TIMEOUT)
    try:
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        connection.request("DELETE", target, headers=dict(headers))
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


async def send_delete(url: str, headers: Mapping[str, str], kind: str) -> Outcome:
    """Send the signed DELETE ``url`` with ``headers`` (its condition); say what it did.

    Raises StoragePermissionError (401, 403), StorageUnavailableError (no answer, 408,
    429, 5xx after :data:`ATTEMPTS`), StorageError (any other status)."""
    error: StorageError = StorageUnavailableError(f"{kind} unavailable (no answer)")
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(0.1 * 2 ** (attempt - 1))
        try:
            status = await asyncio.to_thread(_send, url, headers)
        except (OSError, http.client.HTTPException):
            # the message of a connection error names the host at most; not chained, as
            # http.client's exceptions may carry the request line
            error = StorageUnavailableError(f"{kind} unavailable (no answer)")
            continue
        if status in (200, 202, 204):
            return "deleted"
        if status == 404:
            return "gone"
        if status == 412:
            return "changed"
        if status in (401, 403):
            raise StoragePermissionError(f"{kind}: access denied ({status})")
        if status >= 500 or status in (408, 429):
            error = StorageUnavailableError(f"{kind} unavailable ({status})")
            continue
        raise StorageError(f"{kind} request failed ({status})")
    raise error
