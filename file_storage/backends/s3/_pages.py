"""The S3 backend's listing pages (``StartAfter``, ``MaxKeys``, ``Delimiter``) and form uploads.

S3 starts a listing after any key (not only after one it returned) and rolls the keys
of a folder up into one common prefix with ``Delimiter="/"``; within a response the
objects and the common prefixes are merged by where they sort (a folder as ``name/``).
Objects spooled while S3 was unreachable are merged in, as in every listing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from typing import TYPE_CHECKING, Any

from file_storage._streams import closing
from file_storage.backends._pages import Entry, entries_of, merged, sort_key
from file_storage.models import ObjectInfo, PresignedPost

if TYPE_CHECKING:
    from file_storage.backends.s3 import S3StorageBackend

MAX_KEYS = 1000  # ListObjectsV2 returns at most 1000 keys a request


async def s3_entries(
    backend: S3StorageBackend,
    prefix: str,
    start_after: str | None,
    recursive: bool,
    page_size: int,
) -> AsyncIterator[Entry]:
    """``_iter_entries`` of the S3 backend (see ``_pages`` for the rule)."""
    source = _listed(backend, prefix, start_after, recursive, page_size)
    spool = backend._fallback.spool
    if spool is not None:
        spooled = [entry.info() for entry in await spool.entries(prefix)]
        source = merged(source, entries_of(spooled, prefix, start_after, recursive))
    async with closing(source):
        async for entry in source:
            yield entry


async def _listed(
    backend: S3StorageBackend,
    prefix: str,
    start_after: str | None,
    recursive: bool,
    page_size: int,
) -> AsyncIterator[Entry]:
    client = await backend._client()
    params: dict[str, Any] = {"Bucket": backend._bucket, "Prefix": backend._full(prefix)}
    if start_after is not None:
        params["StartAfter"] = backend._full(start_after)
    if not recursive:
        params["Delimiter"] = "/"
    if page_size > 0:
        # one request for a page (the cursor's own folder may come back once: skipped)
        params["PaginationConfig"] = {"PageSize": min(page_size + 1, MAX_KEYS)}
    async for page in client.get_paginator("list_objects_v2").paginate(**params):
        found: list[Entry] = []
        for item in page.get("Contents") or ():
            key = backend._user_key(item["Key"])
            if key is not None:
                found.append(
                    ObjectInfo(
                        key=key,
                        size=item["Size"],
                        last_modified=item["LastModified"].astimezone(UTC),
                        etag=item.get("ETag"),
                    )
                )
        for common in page.get("CommonPrefixes") or ():
            folder = backend._user_key(common["Prefix"][:-1])
            # a folder holding keys after StartAfter may come back though its place
            # (name/) is not after it: the cursor's own folder, or one the cursor is in
            if folder is not None and (start_after is None or folder + "/" > start_after):
                found.append(folder)
        found.sort(key=sort_key)
        for entry in found:
            yield entry


async def presign_post(
    client: Any,
    bucket: str,
    full_key: str,
    expires_in: int,
    max_bytes: int | None,
    content_type: str,
) -> PresignedPost:
    """A browser form upload: a POST policy with the size cap and the content type.

    Without a cap, S3's own limit on a POST upload (5 GiB) applies.
    """
    conditions: list[Any] = [{"Content-Type": content_type}]
    if max_bytes is not None:
        conditions.append(["content-length-range", 0, max_bytes])
    post = await client.generate_presigned_post(
        Bucket=bucket,
        Key=full_key,
        Fields={"Content-Type": content_type},
        Conditions=conditions,
        ExpiresIn=expires_in,
    )
    return PresignedPost(post["url"], dict(post["fields"]))
