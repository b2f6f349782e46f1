"""Value types returned by backends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["ListPage", "ObjectInfo", "PresignedPost", "Usage"]


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
    """

    key: str
    size: int
    last_modified: datetime
    etag: str | None = None
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """Bytes stored under a quota's prefix and its limit (``None``: no limit)."""

    prefix: str
    used: int
    limit: int | None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing, for a web API (see :meth:`StorageBackend.list_page`).

    Attributes:
        files: the objects of the page, sorted by key.
        dirs: with ``recursive=False``, the immediate sub-folders of the page as keys (no
            trailing ``/``), sorted; empty with ``recursive=True``.
        next_start_after: the cursor of the next page: the last key of this one, or when
            it ends on a folder, the folder's key plus ``/`` (where a folder sorts);
            ``None`` on the last page.
    """

    files: list[ObjectInfo]
    dirs: list[str]
    next_start_after: str | None


@dataclass(frozen=True, slots=True)
class PresignedPost:
    """A browser form upload (see :meth:`StorageBackend.get_presigned_post`).

    Attributes:
        url: where the form posts (``multipart/form-data``).
        fields: the form fields to send, in this order, before the file field ``file``.
    """

    url: str
    fields: dict[str, str]
