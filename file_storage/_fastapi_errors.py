"""StorageError -> HTTP status and JSON body, shared by the handler and the signed-URL router."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from file_storage.errors import (
    InvalidKeyError,
    InvalidMetadataError,
    ObjectConflictError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageQuotaExceededError,
    StorageUnavailableError,
    format_bytes,
)

logger = logging.getLogger("file_storage.fastapi")


class UploadTooLargeError(StorageError):
    """An upload is longer than the ``max_bytes`` the application allows; nothing was stored.

    Answered with 413, like :class:`StorageQuotaExceededError`, but it is about one upload,
    not the space left in the store.

    Attributes:
        limit: the most bytes the upload may have.
    """

    def __init__(self, *, limit: int, operation: str = "", key: str | None = None):
        self.limit = limit
        super().__init__(
            f"the upload is larger than the {format_bytes(limit)} allowed",
            operation=operation,
            key=key,
        )


# first match wins; StorageError itself (unexpected I/O) is a 500
_STATUS: tuple[tuple[type[StorageError], int], ...] = (
    (ObjectNotFoundError, 404),
    (InvalidKeyError, 400),
    (InvalidMetadataError, 400),
    (ObjectConflictError, 409),
    (PreconditionFailedError, 412),
    (StorageQuotaExceededError, 413),
    (UploadTooLargeError, 413),
    # the store refused the *application's* credentials: the server's fault, not the
    # client's, and 403 stays reserved for a bad signed URL
    (StoragePermissionError, 502),
    (StorageUnavailableError, 503),
    (StorageConfigError, 500),
)

# 5xx bodies say only this: the details (bucket, endpoint, paths) are for the server's log
_SERVER_DETAIL = {
    500: "storage error",
    502: "storage refused the request",
    503: "storage unavailable, try again later",
}


def status_for(exc: StorageError) -> int:
    """The HTTP status a StorageError is answered with."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: StorageError) -> JSONResponse:
    """``{"detail": ...}`` with the error's own message for 4xx, a generic one for 5xx."""
    status = status_for(exc)
    if status >= 500:
        # the backend already logged the failure at WARNING with its operation and key
        logger.debug("storage error answered with %d: %s", status, exc)
        detail = _SERVER_DETAIL.get(status, "storage error")
    else:
        detail = str(exc)
    return JSONResponse({"detail": detail}, status_code=status)


async def storage_error_handler(request: Request, exc: Exception) -> Response:
    """An exception handler answering a :class:`StorageError` with its HTTP status.

    404 not found, 400 invalid key or metadata, 409 object/folder clash, 412 precondition
    failed, 413 over quota or upload too large, 502 permission denied by the store, 503
    unavailable, 500 misconfigured or anything else. 4xx bodies
    carry the error's message (operation, key, reason); 5xx bodies a generic one.
    """
    if not isinstance(exc, StorageError):  # registered for StorageError only
        raise exc
    return error_response(exc)
