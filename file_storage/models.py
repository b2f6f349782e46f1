"""Value types returned by backends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["ObjectInfo", "Usage"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a backend knows about one stored object.

    Attributes:
        key: the normalized key.
        size: size in bytes.
        last_modified: time of the last write, an aware UTC datetime.
        etag: an opaque version tag (S3's ETag; size and mtime on local), or ``None``.
        content_type: the MIME type, or ``None`` where a listing does not carry it.
        metadata: user metadata, keys lower-cased.
        cache_control: the ``Cache-Control`` stored with the object, or ``None``.
        content_disposition: the ``Content-Disposition`` stored with the object, or ``None``.
    """

    key: str
    size: int
    last_modified: datetime
    etag: str | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    cache_control: str | None = None
    content_disposition: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Bytes stored under a quota's prefix and its limit (``None``: no limit)."""

    prefix: str
    used: int
    limit: int | None
