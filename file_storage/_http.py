"""HTTP header values the library builds without a web framework: Content-Disposition
(RFC 6266 / RFC 8187), charset on text types, object header checks, the types a browser
may be told and shown in place, public URLs."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal
from urllib.parse import quote

from file_storage._metadata import MAX_HEADER_VALUE_BYTES
from file_storage.errors import InvalidMetadataError

Disposition = Literal["attachment", "inline"]

# what the ASCII filename= fallback keeps; the full name travels in filename*
_ASCII_SAFE = re.compile(r"[^A-Za-z0-9 !#$&'()+,.;=@\[\]^_`{}~-]")
# visible ASCII and space: what every server (S3 included) stores and returns unchanged
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
# NAME_MAX of common file systems (ext4, APFS, NTFS count 255 bytes or units)
MAX_NAME_BYTES = 255
_MAX_EXTENSION_BYTES = 16
_JSON_TYPES = frozenset({"application/json", "application/x-ndjson"})
# one media type (RFC 9110, 8.3.1): a list ("image/png, text/html") is read by browsers as
# its last type (Fetch, "extract a MIME type"), not the one an app checks
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
# each run of spaces has one place to match: "[ \t]*;[ \t]*(param)?" repeated gave the
# spaces between two ";" two places, and a failing match tried every split (a stored type
# of 60 characters took 40 s of CPU)
MEDIA_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}[ \t]*(?:;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED})[ \t]*)?)*"
)
# the JavaScript MIME types (WHATWG MIME Sniffing, 4.6): the one kind a page runs when it
# loads the object, whatever the object's own headers say (a script runs as the page's)
SCRIPT_TYPES = frozenset(
    {
        "application/ecmascript",
        "application/javascript",
        "application/x-ecmascript",
        "application/x-javascript",
        "text/ecmascript",
        "text/javascript",
        "text/javascript1.0",
        "text/javascript1.1",
        "text/javascript1.2",
        "text/javascript1.3",
        "text/javascript1.4",
        "text/javascript1.5",
        "text/jscript",
        "text/livescript",
        "text/x-ecmascript",
        "text/x-javascript",
    }
)
# types a browser shows in place without running anything of the file's (Rails'
# ActiveStorage content_types_allowed_inline, plus audio, video, text and JSON, which no
# browser runs): a presigned GET serves every other type as a download, since a page or
# an SVG shown from the store's origin would run the uploader's script there
_INLINE_TYPES = frozenset(
    {
        "application/json",
        "application/pdf",
        "image/apng",
        "image/avif",
        "image/bmp",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/tiff",
        "image/vnd.microsoft.icon",
        "image/webp",
        "image/x-icon",
        "text/csv",
        "text/plain",
    }
)


def content_disposition(filename: str, disposition: Disposition = "attachment") -> str:
    """``attachment; filename="<ascii>"; filename*=UTF-8''<percent-encoded>`` (RFC 6266).

    The name loses path parts and control characters, and is cut to 255 UTF-8 bytes
    (keeping a short extension)."""
    if disposition not in ("attachment", "inline"):
        raise ValueError("disposition must be 'attachment' or 'inline'")
    name = re.split(r"[/\\]", filename)[-1]
    # controls (CR, LF, NUL...) and format characters (bidi overrides) never reach a header
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in "CZ" or ch == " ")
    name = _shorten(name.strip().strip(".")) or "download"
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_name = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    ascii_name = _ASCII_SAFE.sub("_", ascii_name.encode("ascii", "replace").decode())
    # a decomposed letter may be up to 18 (U+FDFA): the fallback stays a file name's length
    ascii_name = _shorten(ascii_name)
    encoded = quote(name, safe="")
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


def _shorten(name: str) -> str:
    """``name`` cut to what a file system stores, keeping a short extension: a longer
    name is cut by the browser anyway, and its header (up to 9 bytes a character once
    encoded) would outgrow proxies' 4-8 KiB header buffers and S3's 8 KiB of headers."""
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = dot + extension if stem and len(extension.encode()) <= _MAX_EXTENSION_BYTES else ""
    base = stem if suffix else name
    room = MAX_NAME_BYTES - len(suffix.encode())
    # cut at a character boundary: a partial UTF-8 sequence is dropped
    return base.encode()[:room].decode("utf-8", "ignore").rstrip() + suffix


def with_charset(content_type: str) -> str:
    """``content_type`` with ``; charset=utf-8`` when it is text or JSON and names none.

    Browsers otherwise guess the encoding of ``text/*`` (often windows-1252), which
    garbles UTF-8 text; JSON is UTF-8 by definition (RFC 8259) but some clients ask.
    """
    essence, _, params = content_type.partition(";")
    mime = essence.strip().lower()
    textual = mime.startswith("text/") or mime in _JSON_TYPES or mime.endswith("+json")
    if not textual or "charset=" in params.lower():
        return content_type
    return f"{content_type.rstrip().rstrip(';')}; charset=utf-8"


def check_header_value(name: str, value: object, operation: str, key: str) -> str | None:
    """``value`` when it can be stored as the object header ``name``; else raise.

    Raises:
        TypeError: not a str (a bug). InvalidMetadataError: not visible ASCII (a CR or LF
            would split the header; build a Unicode file name with ``content_disposition``),
            or over 2 KiB (one line of the store's answers).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None")
    if (
        not value.strip()
        or not _HEADER_VALUE.fullmatch(value)
        or len(value) > MAX_HEADER_VALUE_BYTES
    ):
        raise InvalidMetadataError(
            f"{name} must be non-empty visible ASCII of at most {MAX_HEADER_VALUE_BYTES} "
            "characters (for a Unicode file name use content_disposition(filename), which "
            "encodes it per RFC 6266)",
            operation=operation,
            key=key,
        )
    return value if type(value) is str else str.__str__(value)  # an enum member: its text


def public_url(base_url: str, key: str) -> str:
    """``<base_url>/<key>`` with each segment percent-encoded but RFC 3986's unreserved
    characters (``+`` too: S3 and some CDNs read a literal ``+`` in a path as a space)."""
    path = "/".join(quote(segment, safe="") for segment in key.split("/"))
    return f"{base_url.rstrip('/')}/{path}"


def served_type(value: str | None) -> str | None:
    """A stored ``Content-Type`` when a browser may be told it: visible ASCII, one media
    type, no script's; else ``None`` (serve ``application/octet-stream``)."""
    if value is None or not value.strip() or not _HEADER_VALUE.fullmatch(value):
        return None
    if not MEDIA_TYPE.fullmatch(value) or _essence(value) in SCRIPT_TYPES:
        return None
    return value


def shown_inline(content_type: str) -> bool:
    """Whether a browser shows ``content_type`` without running script of the file's."""
    essence = _essence(content_type)
    return essence in _INLINE_TYPES or essence.startswith(("audio/", "video/"))


def as_download(disposition: str | None) -> str:
    """``disposition`` (``inline; filename=...``) as ``attachment``, its parameters kept."""
    if disposition is None or not disposition.strip() or not _HEADER_VALUE.fullmatch(disposition):
        return "attachment"
    _, sep, params = disposition.partition(";")
    return f"attachment{sep}{params}"


def _essence(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()
