"""Form uploads to the signed router: the POST side of ``get_presigned_post``.

The body is parsed as it arrives: the fields come first and are checked (signature in
constant time, expiry), then the file's bytes are streamed into ``save`` and counted, and
reading stops as soon as they pass the signed cap. A refused upload stores nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from file_storage._events import landing
from file_storage._keys import validate_key
from file_storage._post_policy import check_post
from file_storage._streams import closing
from file_storage.backends._router_signed import refused_hint
from file_storage.backends.base import StorageBackend
from file_storage.errors import StorageError
from file_storage.fastapi._errors import error_response
from file_storage.fastapi._response import quote_etag

logger = logging.getLogger("file_storage.fastapi")

FILE_FIELD = "file"  # as on S3: the file is the last field, named "file"
MAX_FIELD_BYTES = 8192
MAX_FIELDS = 32
# a part's headers: python-multipart bounds them from 0.0.27 on (8 lines of 4 KiB), earlier
# versions not at all (header bytes kept as they come, each piece copying all before it)
MAX_PART_HEADERS = 8
MAX_HEADER_BYTES = 8192

# ("field", (name, value)), then ("file", b""), ("data", bytes)..., ("end", b"")
_Part = tuple[str, tuple[str, str] | bytes]


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _deny(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


async def landed_etag(
    backend: StorageBackend, key: str, landed: Mapping[str, str | None]
) -> dict[str, str]:
    """The ``ETag`` header of an upload that landed at ``key``: the one its write stored
    (``landed``, from :func:`~file_storage._events.landing`), else one stat's, or none
    when that stat fails.

    Never a stat when the write said: another upload of the key landing in between would
    hand this client that upload's ETag, and an ``If-Match`` with it would then replace
    an object the client never saw. The write is done by then: an object deleted since,
    or a store that stopped answering, must not turn the answer into a failure the client
    would act on (retry, give up).
    """
    etag = landed.get(key)
    if etag is None:
        try:
            etag = (await backend.stat(key)).etag
        except StorageError as exc:
            logger.info("%r stored, but no ETag for the answer: %s", key, type(exc).__name__)
            return {}
    quoted = quote_etag(etag)
    return {"etag": quoted} if quoted else {}


async def _parts(request: Request, boundary: bytes) -> AsyncIterator[_Part]:
    """The form's parts as they arrive; nothing after the file is read."""
    events: list[tuple[str, bytes]] = []

    def on(kind: str) -> Callable[[], None]:
        return lambda: events.append((kind, b""))

    def on_data(kind: str) -> Callable[[bytes, int, int], None]:
        return lambda data, start, end: events.append((kind, data[start:end]))

    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on("begin"),
                "on_header_field": on_data("header_field"),
                "on_header_value": on_data("header_value"),
                "on_header_end": on("header_end"),
                "on_headers_finished": on("headers"),
                "on_part_data": on_data("data"),
                "on_part_end": on("end"),
            },
        )
    except Exception as exc:  # a boundary over 256 bytes (RFC 2046: 70 at most)
        raise _Refused(400, "malformed multipart/form-data body") from exc
    headers: dict[bytes, bytes] = {}
    field, value = bytearray(), bytearray()
    count = 0
    name, is_file, content = "", False, bytearray()
    async for chunk in request.stream():
        try:
            parser.write(chunk)
        except Exception as exc:  # python_multipart's parse errors
            raise _Refused(400, "malformed multipart/form-data body") from exc
        happened, events = events, []
        for kind, data in happened:
            if kind == "begin":
                headers, content, count = {}, bytearray(), 0
            elif kind in ("header_field", "header_value"):
                (field if kind == "header_field" else value).extend(data)
                if len(field) + len(value) > MAX_HEADER_BYTES:
                    raise _Refused(400, "a form part has a header line over 8 KiB")
            elif kind == "header_end":
                count += 1
                if count > MAX_PART_HEADERS:
                    raise _Refused(400, "a form part has too many headers")
                headers[bytes(field).lower()] = bytes(value)
                field, value = bytearray(), bytearray()
            elif kind == "headers":
                _, params = parse_options_header(headers.get(b"content-disposition"))
                name = params.get(b"name", b"").decode("utf-8", "replace")
                is_file = name == FILE_FIELD
                if is_file:
                    yield ("file", b"")
            elif kind == "data" and is_file:
                yield ("data", data)
            elif kind == "data":
                content += data
                if len(content) > MAX_FIELD_BYTES:
                    raise _Refused(400, f"form field {name!r} is too long")
            elif is_file:  # the end of the file part: the upload is complete
                yield ("end", b"")
                return
            else:
                yield ("field", (name, content.decode("utf-8", "replace")))
    raise _Refused(400, "the form ended before the file did")


async def _capped(parts: AsyncIterator[_Part], cap: int | None) -> AsyncIterator[bytes]:
    """The file's bytes; raises as soon as they pass ``cap`` (nothing more is read)."""
    total = 0
    async for kind, data in parts:
        if kind == "end":
            return
        assert isinstance(data, bytes)
        total += len(data)
        if cap is not None and total > cap:
            raise _Refused(413, f"the file is larger than the {cap} bytes this form allows")
        yield data
    raise _Refused(400, "the form ended before the file did")


async def receive_post(
    backend: StorageBackend, key: str, request: Request, signing: tuple[str, str] | None
) -> Response:
    """Store the file of a signed form upload to ``key``, or refuse it (nothing stored).

    ``signing``: the backend's signing key and binding (``_signing.binding``); None when
    it signs nothing.
    """
    if signing is None:
        logger.warning("a form upload was posted but the storage backend cannot sign URLs")
        return _deny(404, "signed URLs are not enabled on this server")
    try:
        validate_key(key, "save")
    except StorageError as exc:
        return error_response(exc)
    mime, params = parse_options_header(request.headers.get("content-type"))
    if mime != b"multipart/form-data" or not params.get(b"boundary"):
        return _deny(400, "a form upload is multipart/form-data")
    parts = _parts(request, params[b"boundary"])
    fields: dict[str, str] = {}
    seen = 0
    try:
        async with closing(parts):
            async for kind, data in parts:
                if kind == "file":
                    break
                assert isinstance(data, tuple)
                # parts, not names: repeating one name must not make the form endless
                seen += 1
                if seen > MAX_FIELDS:
                    raise _Refused(400, "too many form fields")
                fields.setdefault(*data)
            else:
                raise _Refused(400, f"the form has no {FILE_FIELD!r} field")
            secret, bound = signing
            verdict = check_post(key, fields, secret, bound=bound)
            if verdict == "expired":
                return _deny(403, "the signed form has expired")
            if verdict == "late":
                return _deny(403, "the signed form expires later than any form may")
            if verdict != "valid":
                return _deny(403, "invalid signature for this form and key" + refused_hint(backend))
            # a field left out signs as an empty one (check_post): no cap, a guessed type
            cap = fields.get("max_bytes", "")
            body = _capped(parts, int(cap) if cap else None)
            with landing() as landed:
                key = await backend.save(key, body, content_type=fields.get("content_type") or None)
    except _Refused as exc:
        logger.info("form upload to %r refused: %s", key, exc.detail)
        return _deny(exc.status, exc.detail)
    except StorageError as exc:
        return error_response(exc)
    except ClientDisconnect:
        logger.info("POST %r: the client left before sending the whole form", key)
        return Response(status_code=400)
    return Response(status_code=204, headers=await landed_etag(backend, key, landed))
