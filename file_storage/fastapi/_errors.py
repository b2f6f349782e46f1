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

# A 5xx answered here is an exception the server never sees, so it is reported where the
# server reports an application's exceptions: uvicorn's (and gunicorn's uvicorn workers')
# configured error log. Under a server that configures no logging it reaches Python's
# last-resort handler, so it is printed to stderr there too. The library's own loggers
# ("file_storage") keep their NullHandler: a library stays silent until configured.
server_logger = logging.getLogger("uvicorn.error")


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
        log_server_error(status, exc)
        detail = _SERVER_DETAIL.get(status, "storage error")
    else:
        detail = str(exc)
    return JSONResponse({"detail": detail}, status_code=status)


def log_server_error(status: int, exc: StorageError) -> None:
    """One ERROR line: the status, the operation, the key, the reason and the cause's type.

    ``str(exc)`` never holds a secret or a signed URL; the cause is named by its type only,
    as SDK messages may carry endpoint URLs.
    """
    cause = exc.__cause__
    server_logger.error(
        "storage error answered with %d: %s%s",
        status,
        exc,
        "" if cause is None else f" (cause: {type(cause).__name__})",
        extra={"operation": exc.operation, "key": exc.key, "error": type(exc).__name__},
    )


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
