"""FastAPI integration (extra ``file_storage[fastapi]``).

```python
from fastapi import FastAPI, Request, Response
from file_storage.fastapi import (
    StorageDep, install_error_handlers, signed_url_router, storage_lifespan, storage_response,
)

app = FastAPI(lifespan=storage_lifespan)        # builds the backend at start-up, closes it at exit
install_error_handlers(app)                     # StorageError -> 4xx/5xx (docs/fastapi.md)
app.include_router(signed_url_router, prefix="/files")  # the path of STORAGE_LOCAL_BASE_URL

@app.api_route("/download/{key:path}", methods=["GET", "HEAD"])
async def download(key: str, request: Request, storage: StorageDep) -> Response:
    return await storage_response(storage, key, request, filename=key.rsplit("/", 1)[-1])
```

This module imports FastAPI; ``import file_storage`` never imports this module.
See docs/fastapi.md for the upload, presigned-PUT and S3 recipes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, UploadFile
from starlette.applications import Starlette

from file_storage._keys import KeyLike
from file_storage._streams import CHUNK_SIZE
from file_storage.backends.base import StorageBackend
from file_storage.errors import StorageError
from file_storage.factory import close_storage_backend, get_storage_backend
from file_storage.fastapi._errors import UploadTooLargeError, storage_error_handler
from file_storage.fastapi._response import content_disposition, storage_response
from file_storage.fastapi._signed import BackendProvider, build_signed_url_router

__all__ = [
    "StorageDep",
    "UploadTooLargeError",
    "content_disposition",
    "get_storage",
    "install_error_handlers",
    "make_signed_url_router",
    "save_upload",
    "signed_url_router",
    "storage_error_handler",
    "storage_lifespan",
    "storage_response",
]

# the client's "I don't know" type: let the backend guess from the key's extension instead
_UNKNOWN_TYPES = frozenset({"", "application/octet-stream"})


async def get_storage() -> StorageBackend:
    """FastAPI dependency: the process-wide backend (:func:`get_storage_backend`).

    Tests swap it with ``app.dependency_overrides[get_storage] = lambda: backend``; the
    signed-URL router uses it too.

    Raises:
        StorageConfigError: the ``STORAGE_*`` settings are missing or invalid.
    """
    return get_storage_backend()


StorageDep = Annotated[StorageBackend, Depends(get_storage)]
"""A route parameter ``storage: StorageDep`` receives the backend."""


@contextlib.asynccontextmanager
async def storage_lifespan(app: object = None) -> AsyncIterator[None]:
    """Lifespan that builds the shared backend at start-up and closes it at shutdown.

    Use it as ``FastAPI(lifespan=storage_lifespan)``, or inside your own lifespan::

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with storage_lifespan(app):
                yield

    Building the backend and checking the store at start-up makes bad settings fail the
    start, not the first request: on S3 one ``HeadBucket`` request, on local disk a test
    write in the root folder (created when missing). Shutdown, or a failed start, runs
    :func:`close_storage_backend`.

    Raises:
        StorageConfigError: the ``STORAGE_*`` settings are missing or invalid, the bucket
            does not exist, or the local root is not a folder.
        StoragePermissionError: the store refused the credentials, or the local root is
            not writable.
        StorageUnavailableError: S3 could not be reached (after the configured retries;
            with ``STORAGE_S3_FALLBACK_PATH`` set, this only logs a warning).
    """
    backend = get_storage_backend()
    try:
        with backend._translate("check", None):
            await backend._check()
        yield
    finally:
        await close_storage_backend()


async def save_upload(
    backend: StorageBackend,
    key: KeyLike,
    upload: UploadFile,
    *,
    max_bytes: int | None = None,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    cache_control: str | None = None,
    content_disposition: str | None = None,
) -> str:
    """Store an uploaded file at ``key``, streamed in 1 MiB chunks, never read whole.

    Starlette has already spooled a multipart upload to a temp file (on disk above
    1 MiB) by the time a route runs; this reads it from the start and streams it into
    :meth:`StorageBackend.save`.

    Args:
        backend: where to store it.
        key: the key, e.g. ``StoragePathBuilder().unique("uploads", upload.filename)``.
        upload: the file of a multipart form field.
        max_bytes: refuse an upload longer than this (checked before any write when the
            size is known, else while streaming, then the partial write is discarded).
        content_type: the MIME type to store; ``None`` keeps the type the client sent,
            or guesses from the key's extension when the client sent none or
            ``application/octet-stream``.
        metadata: user metadata, as for ``save``.
        cache_control: the object's ``Cache-Control``, as for ``save``.
        content_disposition: the object's ``Content-Disposition``, as for ``save``: for
            instance ``content_disposition(upload.filename)``, so the file keeps the
            user's name (any Unicode) under a key such as ``paths.unique(...)``.

    Returns:
        The normalized key.

    Raises:
        UploadTooLargeError: longer than ``max_bytes``; nothing stored (answered 413).
        StorageQuotaExceededError: over the backend's quota; nothing stored (413).
        InvalidKeyError: a bad key (400).
    """
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
    ):
        raise ValueError("max_bytes must be an int >= 0 or None")
    if max_bytes is not None and upload.size is not None and upload.size > max_bytes:
        raise UploadTooLargeError(limit=max_bytes, operation="save_upload", key=str(key))
    if content_type is None and (upload.content_type or "") not in _UNKNOWN_TYPES:
        content_type = upload.content_type

    async def chunks() -> AsyncIterator[bytes]:
        received = 0
        while chunk := await upload.read(CHUNK_SIZE):
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                # save() discards what it wrote and fills in the key
                raise UploadTooLargeError(limit=max_bytes, operation="save_upload")
            yield chunk

    await upload.seek(0)
    return await backend.save(
        key,
        chunks(),
        content_type=content_type,
        metadata=metadata,
        cache_control=cache_control,
        content_disposition=content_disposition,
    )


def install_error_handlers(app: Starlette) -> None:
    """Answer every :class:`StorageError` a route raises with its HTTP status.

    ``ObjectNotFoundError`` 404, ``InvalidKeyError`` and ``InvalidMetadataError`` 400,
    ``ObjectConflictError`` 409, ``PreconditionFailedError`` 412,
    ``StorageQuotaExceededError`` and ``UploadTooLargeError`` 413,
    ``StoragePermissionError`` 502 (the store refused the server's own credentials),
    ``StorageUnavailableError`` 503, ``StorageConfigError`` and any other
    ``StorageError`` 500. The body is ``{"detail": ...}``: the error's
    message for 4xx (operation, key, reason), a generic sentence for 5xx. No message
    ever holds a secret.
    """
    app.add_exception_handler(StorageError, storage_error_handler)


def make_signed_url_router(
    *,
    get_backend: BackendProvider = get_storage,
    allow_origins: Sequence[str] = (),
) -> APIRouter:
    """Build a router that answers the local backend's presigned URLs.

    Mount it at the path of ``STORAGE_LOCAL_BASE_URL``:
    ``app.include_router(make_signed_url_router(), prefix="/files")``. It serves
    ``GET``/``HEAD`` (with ``Range``, through :func:`storage_response`) for GET URLs
    and ``PUT`` (the body streamed into ``save``, its ``Content-Type`` kept, quota
    enforced) for PUT URLs. A URL is accepted only when the backend serving the request
    signed it, or one over the same store with the same base URL path: the signature
    binds the path of ``STORAGE_LOCAL_BASE_URL`` and the root folder (memory: the
    instance), so backends sharing a signing key never answer each other's URLs. It
    answers 403 for a bad or expired signature, a URL signed for another method or
    another backend, 400 for an invalid key, 404 for a missing object,
    413 over quota (nothing stored), and 404 when the backend is not a local or memory
    backend with a signing key (S3 URLs point at S3 itself). The URL's signed options
    are honoured: ``content_type`` and ``filename`` shape a GET's response; on PUT the
    upload must send the signed ``content_type`` (else 403). A PUT's ``If-None-Match:
    *``, ``If-Match`` and ``If-Unmodified-Since`` are honoured as on S3 (412, nothing
    stored, when the condition does not hold), and so is ``Content-MD5`` (400, nothing
    stored, for a body that does not match it). A PUT with ``Content-Range`` is a 400,
    nothing stored (RFC 9110, 14.5: a piece is never stored as the whole object).

    Args:
        get_backend: the dependency giving the backend and, from it, the signing key;
            :func:`get_storage` by default, so ``app.dependency_overrides`` works.
        allow_origins: origins allowed to use the URLs from another origin (CORS),
            or ``["*"]``. Empty: same origin only, no CORS headers. The signature is
            the credential, so ``"*"`` exposes nothing a URL holder could not reach.

    Returns:
        A new :class:`fastapi.APIRouter`.
    """
    return build_signed_url_router(get_backend, allow_origins)


signed_url_router = make_signed_url_router()
"""The default signed-URL router: the shared backend, same-origin use."""
