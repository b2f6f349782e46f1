"""The single key grammar every backend shares (see docs/concepts.md, "Keys")."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from file_storage.errors import InvalidKeyError

KeyLike = str | PurePosixPath

MAX_KEY_BYTES = 1024  # S3's limit on an object key, in UTF-8 bytes
MAX_SEGMENT_BYTES = 255  # NAME_MAX of local file systems (ext4, APFS, NTFS)


# C0 controls, DEL and C1 controls; a backslash is a separator on Windows; U+FFFE and
# U+FFFF are not characters in XML 1.0, so S3 and Azure could not list such a key (nor
# S3 delete it in a DeleteObjects batch), and GCS leaves it out of its listings
_BAD_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\\\ufffe\uffff]")


def _as_text(path: object, operation: str) -> str:
    if isinstance(path, PurePosixPath):
        text = path.as_posix()
        return "" if text == "." else text
    if isinstance(path, str):
        # a str subclass (an enum member) would be stored and listed as itself on some
        # backends: every backend keeps and returns the plain text
        return path if type(path) is str else str.__str__(path)
    raise InvalidKeyError(
        f"a key must be a str or PurePosixPath, not {type(path).__name__}", operation=operation
    )


def _check(text: str, operation: str, *, reserved_bytes: int, what: str) -> None:
    def fail(reason: str) -> InvalidKeyError:
        return InvalidKeyError(f"invalid {what}: {reason}", operation=operation, key=text)

    if not text:
        raise fail("empty")
    bad = _BAD_CHAR.search(text)
    if bad is not None:
        ch = bad.group()
        if ch == "\\":
            reason = "backslash"
        elif ch in "\ufffe\uffff":
            reason = f"noncharacter U+{ord(ch):04X}"
        else:
            reason = f"control character U+{ord(ch):04X}"
        raise fail(f"contains a {reason}")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise fail("not valid unicode") from exc
    if len(encoded) + reserved_bytes > MAX_KEY_BYTES:
        limit = MAX_KEY_BYTES - reserved_bytes
        raise fail(f"longer than {limit} UTF-8 bytes")
    if text.startswith("/"):
        raise fail("starts with '/'")
    for segment in text.split("/"):
        if segment == "":
            raise fail("empty segment")
        if segment in (".", ".."):
            raise fail(f"'{segment}' segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise fail(f"a segment is longer than {MAX_SEGMENT_BYTES} UTF-8 bytes")


def validate_key(path: object, operation: str = "", *, reserved_bytes: int = 0) -> str:
    """Return the normalized key for ``path`` or raise ``InvalidKeyError``.

    ``reserved_bytes`` is what the backend adds in front (the S3 prefix and its ``/``).
    """
    text = _as_text(path, operation)
    _check(text, operation, reserved_bytes=reserved_bytes, what="key")
    return text


def validate_prefix(prefix: object, operation: str = "", *, reserved_bytes: int = 0) -> str:
    """Return ``""`` or a folder prefix ending in exactly one ``/``."""
    text = _as_text(prefix, operation)
    if text == "":
        return ""
    body = text[:-1] if text.endswith("/") else text
    _check(body, operation, reserved_bytes=reserved_bytes + 1, what="prefix")
    return body + "/"


def is_valid_segment(name: str) -> bool:
    """True when ``name`` can be one segment of a key (used to skip foreign files)."""
    try:
        _check(name, "", reserved_bytes=0, what="key")
    except InvalidKeyError:
        return False
    return "/" not in name
