"""The router that answers the local and memory backends' presigned URLs (GET, HEAD, PUT)
and form uploads (POST, see ``_post``).

Presign options travel signed in the query: ``content_type`` and ``filename`` set the
response's type and ``Content-Disposition`` on GET; on PUT ``content_type`` is a condition
(the upload must send that ``Content-Type``, else 403) and is stored. A GET without them
serves a type a browser would run as a download, as the cloud backends' URLs do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypedDict

from fastapi import APIRouter, Depends
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from file_storage._events import landing
from file_storage._http import as_download, shown_inline
from file_storage._keys import validate_key
from file_storage._signing import check
from file_storage.backends._router_signed import RouterSigned, refused_hint
from file_storage.backends.base import StorageBackend
from file_storage.errors import (
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
    StorageQuotaExceededError,
)
from file_storage.fastapi._errors import error_response
from file_storage.fastapi._post import landed_etag, receive_post
from file_storage.fastapi._response import (
    failed_precondition,
    none_match,
    quote_etag,
    storage_response,
)
from file_storage.models import ObjectInfo

logger = logging.getLogger("file_storage.fastapi")

BackendProvider = Callable[..., StorageBackend | Awaitable[StorageBackend]]

_METHODS = ("GET", "HEAD", "PUT", "POST")
_EXPOSED = "ETag, Content-Length, Content-Range, Accept-Ranges, Last-Modified, Content-Disposition"


class _Pin(TypedDict, total=False):
    """The condition ``save`` is given for a conditional PUT."""

    overwrite: bool
    if_match: str


async def _signing(backend: StorageBackend) -> tuple[str, str] | None:
    """The backend's signing key and binding, or None when it signs nothing."""
    if not isinstance(backend, RouterSigned):
        return None
    key = backend._signing_key  # the router is the other half of the backend's _presign
    if key is None:
        return None
    # the binding of the backend this request is served from, never one the URL names:
    # a URL another backend signed with the same key (another mount, another root) fails
    return key.get_secret_value(), await backend._signing_binding()


def _deny(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def _authorize(
    request: Request, backend: StorageBackend, key: str, method: str
) -> Response | None:
    """None when the URL is a valid, unexpired signature of ``method`` on ``key``, issued
    by this backend (its mount path and store)."""
    signing = await _signing(backend)
    if signing is None:
        logger.warning("a signed URL was requested but the storage backend cannot sign URLs")
        return _deny(404, "signed URLs are not enabled on this server")
    try:
        # named like the backend call the request leads to, as the backend would name it
        validate_key(key, "save" if method == "PUT" else "stat")
    except StorageError as exc:
        return error_response(exc)
    secret, bound = signing
    verdict = check(
        key,
        method,
        request.query_params.get("expires"),
        request.query_params.get("signature"),
        secret,
        bound=bound,
        content_type=request.query_params.get("content_type"),
        filename=request.query_params.get("filename"),
    )
    if verdict == "expired":
        return _deny(403, "the signed URL has expired")
    if verdict == "late":
        return _deny(403, "the signed URL expires later than any URL may")
    if verdict != "valid":
        return _deny(403, "invalid signature for this URL and method" + refused_hint(backend))
    return None


def _as_download_unless_inert(response: Response) -> None:
    """A type a browser would run (HTML, SVG, XML...) made a download, as S3, GCS and
    Azure serve their presigned GETs: a link works alike on every backend."""
    served = response.headers.get("content-type")
    if response.status_code in (200, 206) and served is not None and not shown_inline(served):
        response.headers["content-disposition"] = as_download(
            response.headers.get("content-disposition")
        )


def _same_type(sent: str | None, signed: str) -> bool:
    """The upload's Content-Type is the signed one (case and spaces around ``;`` aside)."""

    def norm(value: str) -> list[str]:
        return [part.strip().lower() for part in value.split(";")]

    return sent is not None and norm(sent) == norm(signed)


async def _save_body(backend: StorageBackend, key: str, request: Request) -> Response:
    # On an error the rest of the body is left unread: uvicorn reads and drops it after
    # the response, so the client still gets the status instead of a reset connection.
    if "content-range" in request.headers:
        # a piece of a file sent as the whole would replace the object with the piece
        # (RFC 9110, 14.5: a PUT with Content-Range MUST be answered 400)
        return _deny(400, "a PUT with Content-Range is refused: send the whole object")
    content_type = request.headers.get("content-type") or None
    signed_type = request.query_params.get("content_type")
    if signed_type is not None:
        if not _same_type(content_type, signed_type):
            return _deny(403, "the upload's Content-Type is not the one the URL was signed for")
        content_type = signed_type
    try:
        expected_md5 = _content_md5(request)
        await _check_declared_length(backend, key, request)
        pinned = await _pin_conditions(backend, key, request)
        body: AsyncIterator[bytes] = request.stream()
        if expected_md5 is not None:
            body = _md5_checked(body, expected_md5)
        with landing() as landed:
            key = await backend.save(key, body, content_type=content_type, **pinned)
    except StorageError as exc:
        return error_response(exc)
    except _BadDigest as exc:
        logger.info("PUT %r refused: %s", key, exc)
        return _deny(400, str(exc))
    return Response(status_code=200, headers=await landed_etag(backend, key, landed))


class _BadDigest(Exception):
    """The body is not the one its ``Content-MD5`` names (raised from the body: nothing stored)."""


def _content_md5(request: Request) -> bytes | None:
    """The digest a PUT's ``Content-MD5`` names (RFC 1864), which S3 checks too."""
    value = request.headers.get("content-md5")
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise _BadDigest("Content-MD5 is not a base64-encoded MD5 digest")
    return digest


async def _md5_checked(chunks: AsyncIterator[bytes], expected: bytes) -> AsyncIterator[bytes]:
    """The body, raising after its last chunk when its MD5 is not ``expected``: ``save``
    then discards what it wrote, as for any error its stream raises."""
    md5 = hashlib.md5(usedforsecurity=False)
    async for chunk in chunks:
        md5.update(chunk)
        yield chunk
    if md5.digest() != expected:
        raise _BadDigest("the body does not match its Content-MD5")


_CONDITIONS = ("if-match", "if-none-match", "if-unmodified-since")


async def _pin_conditions(backend: StorageBackend, key: str, request: Request) -> _Pin:
    """``save``'s condition for a PUT sent with ``If-Match``, ``If-None-Match`` or
    ``If-Unmodified-Since``, as S3 honours them on a presigned PUT.

    The headers are evaluated against the object as it is now (RFC 9110, 13.2.2), and
    the write is pinned to that state (``if_match`` its ETag, or ``overwrite=False``
    when there is none): a concurrent change in between is a 412 too, never a write
    over a version the client did not name.

    Raises:
        PreconditionFailedError: a condition does not hold (412).
    """
    headers = request.headers
    if not any(name in headers for name in _CONDITIONS):
        return {}
    try:
        info: ObjectInfo | None = await backend.stat(key)
    except ObjectNotFoundError:
        info = None
    etag = None if info is None else quote_etag(info.etag)
    unmet = failed_precondition(headers, etag, None if info is None else info.last_modified)
    if unmet is None and none_match(headers, etag, exists=info is not None):
        unmet = "If-None-Match names the object as it is"
    if unmet is not None:
        raise PreconditionFailedError(unmet, operation="save", key=key)
    if info is None:
        return {"overwrite": False}
    if info.etag is None:  # pragma: no cover - the local and memory backends give one
        raise PreconditionFailedError("the object has no ETag to pin the write to")
    return {"if_match": info.etag}


async def _check_declared_length(backend: StorageBackend, key: str, request: Request) -> None:
    """Refuse over quota before reading a body whose Content-Length already says so."""
    declared = request.headers.get("content-length", "")
    if not (declared.isascii() and declared.isdigit()) or len(declared) > 20:
        return
    if backend.max_size_bytes is None:  # no quota here (the ledger's limit is read below)
        return
    length = int(declared)
    usage = await backend.get_usage("")
    # the ledger's limit: a shared one may have been changed (or removed) by another process
    limit = usage.limit
    if limit is None or usage.used + length <= limit:
        return
    try:
        existing = await backend.get_size(key)  # overwriting counts only the difference
    except ObjectNotFoundError:
        existing = 0
    if usage.used - existing + length > limit:
        raise StorageQuotaExceededError(
            used=usage.used, limit=limit, requested=length, operation="save", key=key
        )


def build_signed_url_router(
    get_backend: BackendProvider, allow_origins: Sequence[str] = ()
) -> APIRouter:
    """The router behind ``make_signed_url_router`` (see its docstring)."""
    origins = frozenset(allow_origins)
    any_origin = "*" in origins
    # a Depends() default, not an Annotated alias: with postponed annotations FastAPI
    # resolves annotation strings in module globals, where this closure's names are not
    backend_dep: StorageBackend = Depends(get_backend)
    router = APIRouter()

    def cors(request: Request, response: Response) -> Response:
        origin = request.headers.get("origin")
        if origins and not any_origin:
            # every answer, also one without CORS headers (no Origin, another origin): a
            # browser that cached an <img>'s answer must not reuse it for a fetch() from
            # an allowed origin, which it would then refuse for lacking them
            response.headers["vary"] = "Origin"
        if origins and origin is not None and (any_origin or origin in origins):
            response.headers["access-control-allow-origin"] = "*" if any_origin else origin
            response.headers["access-control-expose-headers"] = _EXPOSED
        return response

    @router.api_route("/{key:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def get_object(
        key: str, request: Request, backend: StorageBackend = backend_dep
    ) -> Response:
        denied = await _authorize(request, backend, key, "GET")  # HEAD rides on a GET URL
        if denied is not None:
            return cors(request, denied)
        filename = request.query_params.get("filename")
        content_type = request.query_params.get("content_type")
        try:
            response = await storage_response(
                backend, key, request, filename=filename, content_type=content_type
            )
        except StorageError as exc:
            response = error_response(exc)
        if filename is None and content_type is None:
            _as_download_unless_inert(response)
        return cors(request, response)

    @router.put("/{key:path}", include_in_schema=False)
    async def put_object(
        key: str, request: Request, backend: StorageBackend = backend_dep
    ) -> Response:
        denied = await _authorize(request, backend, key, "PUT")
        if denied is not None:
            return cors(request, denied)
        try:
            response = await _save_body(backend, key, request)
        except ClientDisconnect:
            logger.info("PUT %r: the client left before sending the whole body", key)
            return Response(status_code=400)
        return cors(request, response)

    @router.post("/{key:path}", include_in_schema=False)
    async def post_object(
        key: str, request: Request, backend: StorageBackend = backend_dep
    ) -> Response:
        response = await receive_post(backend, key, request, await _signing(backend))
        return cors(request, response)

    if origins:

        @router.options("/{key:path}", include_in_schema=False)
        async def preflight(key: str, request: Request) -> Response:
            origin = request.headers.get("origin")
            wanted = request.headers.get("access-control-request-method", "").upper()
            if origin is None or not (any_origin or origin in origins) or wanted not in _METHODS:
                denied = _deny(403, "CORS request not allowed")
                if not any_origin:
                    denied.headers["vary"] = "Origin"
                return denied
            headers = {
                "access-control-allow-origin": "*" if any_origin else origin,
                "access-control-allow-methods": ", ".join(_METHODS),
                "access-control-max-age": "600",
                **({} if any_origin else {"vary": "Origin"}),
            }
            requested = request.headers.get("access-control-request-headers")
            if requested:
                headers["access-control-allow-headers"] = requested
            return Response(status_code=204, headers=headers)

    return router
