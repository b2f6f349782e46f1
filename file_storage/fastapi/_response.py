"""storage_response(): a streamed download with Range, ETag and conditional requests.

HTTP semantics follow RFC 9110: section 14 (Range, 206, 416), section 13 (If-None-Match,
If-Modified-Since, If-Range) and RFC 6266 / RFC 8187 for Content-Disposition.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal

import anyio
import anyio.lowlevel
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from file_storage._http import (
    MEDIA_TYPE,
    SCRIPT_TYPES,
    Disposition,
    check_header_value,
    with_charset,
)
from file_storage._http import content_disposition as content_disposition
from file_storage._keys import KeyLike
from file_storage.backends.base import StorageBackend
from file_storage.errors import PreconditionFailedError, StorageUnavailableError
from file_storage.fastapi._errors import error_response
from file_storage.models import ObjectInfo

logger = logging.getLogger("file_storage.fastapi")

# stat, then open that version: replaced in between, the answer is planned again
_PIN_ATTEMPTS = 3

# a byte range is served whole or refused; digits are capped so int() stays cheap
_RANGE_SPEC = re.compile(r"([0-9]{0,30})[ \t]*-[ \t]*([0-9]{0,30})")
_UNSATISFIABLE: Literal["unsatisfiable"] = "unsatisfiable"
# what a stored header may hold to be sent unchanged: visible ASCII and spaces
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
# headers a 304 repeats (RFC 9110, 15.4.5)
_NOT_MODIFIED_HEADERS = ("etag", "last-modified", "cache-control", "vary")
# stored objects are user data: never sniff a type, never run script on the app's origin
SAFETY_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "sandbox",
}


async def storage_response(
    backend: StorageBackend,
    key: KeyLike,
    request: Request,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    disposition: Disposition = "attachment",
) -> Response:
    """Answer ``request`` with the object at ``key``, streamed, never loaded whole.

    Sends ``Content-Type`` (``text/*`` and JSON with ``; charset=utf-8`` when the type
    names no charset), ``Content-Length``, ``ETag``, ``Last-Modified``,
    ``Accept-Ranges: bytes``, the ``Cache-Control`` and ``Content-Disposition`` stored
    with the object (``filename`` overrides the latter; a stored value that is not
    visible ASCII, which only another tool can store, is not sent: the type is then
    ``application/octet-stream`` and the disposition ``attachment``; so is a stored type
    that is not one media type, such as ``image/png, text/html``, or a script's, such
    as ``text/javascript``: pass ``content_type=`` to serve a script you trust), plus
    ``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox`` (an
    uploaded HTML or SVG file must not run script on your origin; delete the header from
    the response for content you trust).

    - ``Range: bytes=a-b``, ``bytes=a-`` or ``bytes=-n``: 206 with ``Content-Range``; a
      range starting past the end: 416 with ``Content-Range: bytes */<size>``. A request
      for several ranges, a malformed one, or ``bytes=-n`` of an empty object, gets the
      whole object (200), as RFC 9110 allows. ``If-Range`` is honoured with the current
      strong ``ETag``; with anything else (another tag, a date: whole seconds cannot
      tell two versions apart), or with ``If-Unmodified-Since`` as the only condition,
      the whole object is sent, 200.
    - ``If-Match`` naming no current version (strong comparison; ``*`` matches any), or
      else ``If-Unmodified-Since`` older than ``Last-Modified``: 412 with a JSON
      ``detail``, no body of another version (a resumed download stays one version).
    - ``If-None-Match`` (or, without it, ``If-Modified-Since``) matching: 304.
    - ``HEAD``: the same status and headers, no body, and the object is not read.
    - The body is the version the headers describe: the stream is opened with
      ``if_match`` set to the stat-ed ETag before the status line goes out, and when the
      object was replaced in between, the answer is planned again from a new stat (up
      to 3 times, then 503). Once sent, every byte comes from that version.

    Args:
        backend: where the object is.
        key: the object's key.
        request: the request being answered (method and headers are read).
        filename: when given, ``Content-Disposition`` names it (RFC 6266: an ASCII
            ``filename`` and the full UTF-8 ``filename*``); path parts are dropped, and
            a name over 255 UTF-8 bytes is cut to that, keeping its extension.
        content_type: overrides the stored content type; visible ASCII, else
            :class:`InvalidMetadataError` (400) before anything is read or sent.
        disposition: ``"attachment"`` (download) or ``"inline"``; used with ``filename``.

    Returns:
        A response whose body is streamed from the backend in chunks.

    Raises:
        ObjectNotFoundError: no object at ``key`` (404 with ``install_error_handlers``).
        InvalidKeyError: a bad key (400).
        InvalidMetadataError: a ``content_type`` that is not a header value (400).
        StorageUnavailableError: the object was replaced between the stat and the read
            on every attempt (503).
    """
    # a type the application was handed (a query parameter) would split the response, or
    # fail it half-sent: refused as save() refuses it (InvalidMetadataError, 400)
    content_type = check_header_value("content_type", content_type, "storage_response", str(key))
    for attempt in range(1, _PIN_ATTEMPTS + 1):
        try:
            return await _respond(backend, key, request, filename, content_type, disposition)
        except PreconditionFailedError as exc:
            logger.debug("%r replaced while a download started (attempt %d)", key, attempt)
            if attempt == _PIN_ATTEMPTS:
                raise StorageUnavailableError(
                    f"the object was replaced during each of {_PIN_ATTEMPTS} attempts to send it",
                    operation=exc.operation,
                    key=exc.key,
                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def _respond(
    backend: StorageBackend,
    key: KeyLike,
    request: Request,
    filename: str | None,
    content_type: str | None,
    disposition: Disposition,
) -> Response:
    """One attempt: stat, plan the answer, open that version's stream."""
    info = await backend.stat(key)
    size = info.size
    etag = quote_etag(info.etag)
    headers = {"last-modified": _http_date(info.last_modified), "accept-ranges": "bytes"}
    if etag is not None:
        headers["etag"] = etag
    headers.update(SAFETY_HEADERS)
    cache_control = _sendable(info, "Cache-Control", info.cache_control)
    if cache_control is not None:
        headers["cache-control"] = cache_control
    if filename is not None:
        headers["content-disposition"] = content_disposition(filename, disposition)
    elif info.content_disposition is not None:
        # unusable, it still said the file is not for showing: a download then
        stored = _sendable(info, "Content-Disposition", info.content_disposition)
        headers["content-disposition"] = stored or "attachment"

    unmet = failed_precondition(request.headers, etag, info.last_modified)
    if unmet is not None:
        # the client's copy is another version: never send it this one's bytes
        return error_response(PreconditionFailedError(unmet, operation="stream", key=info.key))
    conditional = request.method in ("GET", "HEAD")
    if conditional and _not_modified(request.headers, etag, info.last_modified):
        return Response(
            status_code=304,
            headers={k: v for k, v in headers.items() if k in _NOT_MODIFIED_HEADERS},
        )

    start, end, status = 0, size, 200
    range_header = request.headers.get("range")
    if conditional and range_header is not None and _range_pinned(request.headers, etag):
        parsed = parse_range(range_header, size)
        if parsed == _UNSATISFIABLE:
            headers["content-range"] = f"bytes */{size}"
            headers["content-length"] = "0"
            return Response(status_code=416, headers=headers)
        if isinstance(parsed, tuple):
            start, end = parsed
            status = 206
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"

    headers["content-type"] = with_charset(
        content_type or _stored_type(info) or "application/octet-stream"
    )
    headers["content-length"] = str(end - start)
    if request.method == "HEAD" or end == start:
        return Response(status_code=status, headers=headers)
    body = await _open_body(backend, info.key, start, end, info.etag)
    return _ObjectResponse(body, status_code=status, headers=headers)


def _sendable(info: ObjectInfo, name: str, value: str | None) -> str | None:
    """A stored header ``value`` when it can be sent as it is, else ``None``.

    ``save`` stores visible ASCII only, but another tool (or a client's presigned PUT to
    S3) may have stored any bytes: UTF-8 text cannot be sent (Starlette encodes headers as
    Latin-1, and a browser would read it so), and would fail the response half-built.
    """
    if value is None or (value.strip() and _HEADER_VALUE.fullmatch(value)):
        return value
    logger.info("%r: its stored %s is not a header value; not sent", info.key, name)
    return None


def _stored_type(info: ObjectInfo) -> str | None:
    """The stored ``Content-Type`` when it is one media type and no script's, else ``None``.

    An uploader chooses it (``save_upload`` keeps the client's, a presigned PUT stores
    what it sends): a list such as ``image/png, text/html`` is an image to an app that
    reads it, a page to a browser. A script served from the app's origin is a script of
    that origin: any page of it with an HTML injection could load it past its own
    ``script-src 'self'``, and no header of this response would stop it running there.
    """
    stored = _sendable(info, "Content-Type", info.content_type)
    if stored is None:
        return None
    if not MEDIA_TYPE.fullmatch(stored):
        logger.info("%r: its stored Content-Type is not one media type; not sent", info.key)
        return None
    if stored.partition(";")[0].strip().lower() in SCRIPT_TYPES:
        logger.info("%r: its stored Content-Type is a script's; not sent", info.key)
        return None
    return stored


def parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """``[start, end)`` for a single byte range, ``"unsatisfiable"``, or ``None`` (serve all).

    ``None`` covers a header to ignore: another unit, bad syntax, or several ranges.
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [part.strip() for part in spec.split(",") if part.strip()]
    if len(specs) != 1:
        return None  # several ranges: the whole object is a valid answer (RFC 9110, 14.2)
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0:
            return _UNSATISFIABLE
        if size == 0:
            # satisfiable (RFC 9110, 14.1.2), yet no Content-Range spells "no bytes": the
            # Range is ignored, as 14.2 allows for an empty representation
            return None
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None  # "bytes=5-2" is invalid syntax: ignore the header
    if start >= size:
        return _UNSATISFIABLE
    end = size if not last else min(int(last) + 1, size)
    return start, end


def quote_etag(etag: str | None) -> str | None:
    if not etag:
        return None
    if etag.startswith(('"', 'W/"')):
        return etag
    return f'"{etag}"'


def _http_date(when: datetime) -> str:
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return format_datetime(aware.astimezone(UTC).replace(microsecond=0), usegmt=True)


def _parse_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def failed_precondition(
    headers: Headers, etag: str | None, last_modified: datetime | None
) -> str | None:
    """Why ``If-Match`` or ``If-Unmodified-Since`` refuses the request, or ``None``
    (RFC 9110, 13.2.2). ``last_modified`` is ``None`` when there is no object."""
    if_match = headers.get("if-match")
    if if_match is not None:
        tags = _tags(if_match)
        if last_modified is not None and "*" in tags:
            return None
        # strong comparison: a weak tag on either side never matches (RFC 9110, 13.1.1)
        if etag is not None and not etag.startswith("W/") and etag in tags:
            return None
        return "If-Match names no current version of the object"
    if_unmodified_since = headers.get("if-unmodified-since")
    if if_unmodified_since is None or last_modified is None:
        return None
    since = _parse_date(if_unmodified_since)
    if since is not None and int(last_modified.timestamp()) > int(since.timestamp()):
        return "the object was modified after If-Unmodified-Since"
    return None


def none_match(headers: Headers, etag: str | None, exists: bool) -> bool:
    """True when ``If-None-Match`` names the object as it is (``*``: any object)."""
    value = headers.get("if-none-match")
    if value is None or not exists:
        return False
    tags = _tags(value)
    # weak comparison (RFC 9110, 13.1.2)
    return "*" in tags or (etag is not None and _opaque(etag) in {_opaque(t) for t in tags})


def _tags(value: str) -> list[str]:
    return [tag.strip() for tag in value.split(",")]


def _not_modified(headers: Headers, etag: str | None, last_modified: datetime) -> bool:
    if "if-none-match" in headers:  # If-Modified-Since is then ignored
        return none_match(headers, etag, exists=True)
    if_modified_since = headers.get("if-modified-since")
    if if_modified_since is None:
        return False
    since = _parse_date(if_modified_since)
    return since is not None and int(last_modified.timestamp()) <= int(since.timestamp())


def _range_pinned(headers: Headers, etag: str | None) -> bool:
    """False unless the range is sure to continue the client's version: then send it whole.

    ``If-Range`` with the current strong ETag pins it; a date never does, in ``If-Range``
    or as the only condition (``If-Unmodified-Since`` without ``If-Match``, which resuming
    clients also send): ``Last-Modified`` counts whole seconds, so an object replaced
    within the second the client's copy was sent has the same one, and its range would
    be spliced onto the old bytes. RFC 9110, 13.1.5 makes an If-Range date that is not a
    strong validator false, and this server cannot know it is one (8.8.2.2: it would have
    to know the object did not change twice in that second); any Range may be ignored.
    """
    if_range = headers.get("if-range")
    if if_range is not None:
        # strong comparison: a weak tag never validates a range (RFC 9110, 13.1.5)
        return etag is not None and not etag.startswith("W/") and if_range.strip() == etag
    return "if-unmodified-since" not in headers or "if-match" in headers


class _ObjectResponse(Response):
    """Streams an object's chunks; a client that leaves stops it between two chunks.

    Starlette's StreamingResponse cancels its send loop when the client disconnects,
    which can land inside the backend's read or close (a file close queued on a thread
    and cancelled never runs: a leaked descriptor). Here a watcher only raises a flag,
    the loop stops at the next chunk, and the stream is always closed.
    """

    def __init__(
        self, body: AsyncIterator[bytes], status_code: int, headers: Mapping[str, str]
    ) -> None:
        self.body_iterator = body
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = anyio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        error: Exception | None = None
        try:
            async with anyio.create_task_group() as watcher:
                watcher.start_soon(watch)
                try:
                    await self._send_all(send, gone)
                except OSError:
                    pass  # the client went away while we were sending (ASGI 2.4 servers)
                except Exception as exc:  # re-raised below, outside the task group's grouping
                    error = exc
                watcher.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await _aclose(self.body_iterator)
        if error is not None:
            raise error

    async def _send_all(self, send: Send, gone: anyio.Event) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            # a backend that never waits (memory) must still let the loop notice a disconnect
            await anyio.lowlevel.checkpoint()
            if gone.is_set():
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _open_body(
    backend: StorageBackend, key: str, start: int, end: int, etag: str | None
) -> AsyncIterator[bytes]:
    """Start the stream of the stat-ed version before the status line goes out, so a
    vanished object is a 404 and a replaced one a PreconditionFailedError to retry on."""
    chunks = backend.stream(key, start=start, end=end, if_match=etag)
    try:
        first = await anext(chunks, b"")
    except BaseException:
        await _aclose(chunks)
        raise
    return _body(first, chunks)


async def _body(first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk
    finally:
        await _aclose(chunks)


async def _aclose(chunks: AsyncIterable[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
