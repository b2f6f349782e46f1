"""What S3 answers, as the library's types: times in UTC, a HeadObject as an ObjectInfo."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from file_storage._metadata import decode_value
from file_storage.models import ObjectInfo

__all__ = ["head_info", "utc"]


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def head_info(key: str, head: dict[str, Any]) -> ObjectInfo:
    """The ObjectInfo of ``key`` from a HeadObject answer (metadata values decoded)."""
    return ObjectInfo(
        key=key,
        size=head["ContentLength"],
        last_modified=utc(head["LastModified"]),
        etag=head.get("ETag"),
        content_type=head.get("ContentType"),
        metadata={
            name.lower(): decode_value(value)
            for name, value in (head.get("Metadata") or {}).items()
        },
        cache_control=head.get("CacheControl"),
        content_disposition=head.get("ContentDisposition"),
    )
