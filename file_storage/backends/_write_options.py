"""What a write asks of a backend besides bytes, type and metadata: its condition and the
object headers stored with it. Checked once by the public methods, handed to the hooks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from file_storage._http import check_header_value


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """The condition and headers of one ``_save``, ``_upload_file`` or ``_copy``.

    ``overwrite=False``: store only when no object is at the key (atomically: of racing
    writers exactly one wins); ``if_match``: only when the current object has that ETag.
    Either failing raises :class:`PreconditionFailedError` and stores nothing.
    ``cache_control``/``content_disposition``: headers stored with the object; on a copy
    ``None`` keeps the source's (a copy never carries a condition).
    """

    overwrite: bool = True
    if_match: str | None = None
    cache_control: str | None = None
    content_disposition: str | None = None

    @property
    def conditional(self) -> bool:
        return not self.overwrite or self.if_match is not None

    @property
    def plain(self) -> bool:
        """Nothing asked: no condition and no header."""
        return self == PLAIN


PLAIN = WriteOptions()


def passed(options: WriteOptions) -> tuple[WriteOptions, ...]:
    """The hook's extra argument: none for a plain write, so a hook (or a test double)
    written before options existed keeps working for every plain write."""
    return () if options.plain else (options,)


#: what an ``if_match`` no request can carry stands for: an ETag no object has
NO_ETAG = '"file-storage:no-object-has-this-etag"'
# a control character (no header can hold it) or a lone surrogate (no UTF-8 for it)
_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def as_etag(value: str) -> str:
    """``value`` as ``stat`` returns ETags: quoted. S3 takes an ETag without its quotes as
    the same one, so every backend does (a weak ``W/"..."`` or ``*`` stays as it is).

    No store issues an ETag with a control character or a lone surrogate, and no request
    could carry one (the SDK raised, or retried a request it could not send as an
    outage): such a value is :data:`NO_ETAG`, so the condition fails as for a stale ETag,
    the same on every backend."""
    if _UNSENDABLE.search(value):
        return NO_ETAG
    if value == "*" or value.startswith(('"', "W/")):
        return value
    return f'"{value}"'


def write_options(
    operation: str,
    key: str,
    *,
    overwrite: bool = True,
    if_match: str | None = None,
    cache_control: str | None = None,
    content_disposition: str | None = None,
) -> WriteOptions:
    """Check a public write's keyword arguments (before any I/O)."""
    if not isinstance(overwrite, bool):
        raise TypeError("overwrite must be a bool")
    if if_match is not None and (not isinstance(if_match, str) or not if_match):
        raise TypeError("if_match must be a non-empty str (an ETag) or None")
    if if_match is not None and not overwrite:
        raise ValueError("overwrite=False and if_match exclude each other: pick one condition")
    return WriteOptions(
        overwrite=overwrite,
        if_match=None if if_match is None else as_etag(if_match),
        cache_control=check_header_value("cache_control", cache_control, operation, key),
        content_disposition=check_header_value(
            "content_disposition", content_disposition, operation, key
        ),
    )
