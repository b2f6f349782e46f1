"""Value types returned by backends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["ListPage", "ObjectEvent", "ObjectInfo", "ObjectVersion", "PresignedPost", "Usage"]


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


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One stored version of a key, as :meth:`StorageBackend.list_versions` returns it.

    Attributes:
        version_id: the id to pass as ``version_id=`` (S3's VersionId; ``"null"`` for a
            version written while versioning was off or suspended).
        size: size in bytes.
        last_modified: when this version was written, an aware UTC datetime.
        is_latest: True for the version :meth:`StorageBackend.load` returns; no version is
            the latest after a ``delete`` on a versioned backend.
    """

    version_id: str
    size: int
    last_modified: datetime
    is_latest: bool


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """A change to one object: delivered by ``subscribe``, parsed by ``parse_s3_event``.

    Attributes:
        type: ``"created"`` (a write, copy or move landed at ``key``) or ``"deleted"``.
        key: the normalized key.
        size: the object's size in bytes for ``"created"`` (``None`` when unknown: a
            copy's object replaced by another writer before its size was read);
            ``None`` for ``"deleted"`` (S3's notifications of a delete carry no size
            either).
        etag: the new version's ETag for ``"created"`` when known, as ``stat`` returns
            it; ``None`` for ``"deleted"``.
    """

    type: Literal["created", "deleted"]
    key: str
    size: int | None = None
    etag: str | None = None


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
