"""Versioning on S3: bucket versioning, read and managed through the backend's hooks.

``PutBucketVersioning``/``GetBucketVersioning`` for the state, ``ListObjectVersions``
(prefix = the key, filtered to that exact key) for the versions, ``VersionId`` on
``HeadObject``/``GetObject`` for reads, ``CopyObject`` of a ``VersionId`` for a restore
(multipart above 5 GiB), ``DeleteObjects`` with version ids for a purge. The state is
asked once per backend and then kept (``set_versioning`` updates it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from file_storage._quota.ledger import VERSION_SEP
from file_storage.backends._core import DELETE_BATCH
from file_storage.backends._version_hooks import NULL_VERSION, Versioning
from file_storage.backends.base import StorageBackend
from file_storage.backends.s3._errors import batch_delete_error, error_code
from file_storage.backends.s3._info import head_info, utc
from file_storage.errors import ObjectNotFoundError
from file_storage.models import ObjectInfo, ObjectVersion

if TYPE_CHECKING:
    from pathlib import Path

    from file_storage._spool import Entry
    from file_storage.backends.s3 import _multipart as mp
    from file_storage.backends.s3._config import S3Options
    from file_storage.backends.s3._fallback import Fallback

logger = logging.getLogger("file_storage")

# what S3 answers for a version id it does not know: 404 (NoSuchVersion), 400 for an id
# that is not one (InvalidArgument), 405 for a delete marker's id (MethodNotAllowed)
_NO_VERSION = frozenset({"NoSuchVersion", "InvalidArgument", "400", "MethodNotAllowed", "405"})
# a server or policy that does not let us read the versioning state: treated as off
_NO_STATE = frozenset({"AccessDenied", "403", "NotImplemented", "501"})
LIST_PAGE = 1000  # ListObjectVersions' most versions a page (MaxKeys)


@contextmanager
def _version_lookup() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if error_code(exc) in _NO_VERSION:
            raise ObjectNotFoundError("no such version") from exc
        raise


class S3Versions(StorageBackend):
    """The versioning hooks of :class:`~file_storage.S3StorageBackend`."""

    _bucket: str
    _options: S3Options
    _versioning_state: Versioning | None = None  # asked once, then kept
    _fallback: Fallback

    if TYPE_CHECKING:
        _copy_threshold: int
        _copy_part_size: int

        async def _client(self) -> Any: ...

        def _full(self, key: str) -> str: ...

        def _user_key(self, full: str) -> str | None: ...

        async def _transfer(self) -> mp.Transfer: ...

        async def _flush_spooled(self, entry: Entry, path: Path) -> bool: ...

    async def _versioning(self) -> Versioning:
        if self._versioning_state is not None:
            return self._versioning_state
        client = await self._client()
        try:
            response = await client.get_bucket_versioning(Bucket=self._bucket)
        except Exception as exc:
            if error_code(exc) not in _NO_STATE:
                raise
            # quotas ask this on their first scan: a policy without
            # s3:GetBucketVersioning must not break them
            logger.warning("cannot read the bucket's versioning state (%s)", error_code(exc))
            return "off"
        status = response.get("Status")
        state: Versioning = (
            "enabled" if status == "Enabled" else "suspended" if status == "Suspended" else "off"
        )
        self._versioning_state = state
        return state

    async def _never_versioned(self) -> bool:
        # "off" after a refused GetBucketVersioning is a guess (kept so that quotas work):
        # set_versioning(False) then sends its PutBucketVersioning, whose answer decides,
        # instead of skipping the suspend of a bucket that may well version
        return await self._versioning() == "off" and self._versioning_state == "off"

    async def _set_versioning(self, enabled: bool) -> None:
        client = await self._client()
        await client.put_bucket_versioning(
            Bucket=self._bucket,
            VersioningConfiguration={"Status": "Enabled" if enabled else "Suspended"},
        )
        self._versioning_state = "enabled" if enabled else "suspended"

    async def _object_versions(
        self, prefix: str, *, key: bool = False
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``("version" or "marker", item)`` for every version under the full ``prefix``;
        ``key``: of the key ``prefix`` only (and maybe some of the keys after it)."""
        client = await self._client()
        pages = client.get_paginator("list_object_versions").paginate(
            Bucket=self._bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE}
        )
        async for page in pages:
            items = [("version", item) for item in page.get("Versions") or ()]
            items += [("marker", item) for item in page.get("DeleteMarkers") or ()]
            for item in items:
                yield item
            # versions come by key, and the key sorts before every longer key it is a
            # prefix of: past its last version, the pages hold only those ("logs/...",
            # "logs.1"), any number of them
            if key and any(item["Key"] != prefix for _, item in items):
                return

    async def _deleted_at(self, key: str, missing: Exception) -> datetime | None:
        """When S3 answered ``missing`` (not found) for ``key`` because its current version
        is a delete marker: the marker's time; ``None`` when nothing says it was deleted."""
        response = getattr(missing, "response", None)  # botocore's ClientError has one
        headers = {}
        if isinstance(response, dict):
            headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        # HeadObject names a delete marker in a header (not obstore's answer, nor every
        # server's): a bucket that versions, or once did, is asked in any case
        if headers.get("x-amz-delete-marker") != "true" and await self._versioning() == "off":
            return None  # a bucket that never versioned keeps no trace of a delete
        full = self._full(key)
        client = await self._client()
        # versions are listed by key, newest first, and the key sorts before every longer
        # key it is a prefix of: the first item is its current version, if it has any
        page = await client.list_object_versions(Bucket=self._bucket, Prefix=full, MaxKeys=1)
        for item in page.get("DeleteMarkers") or ():
            if item["Key"] == full and item.get("IsLatest"):
                return utc(item["LastModified"])
        return None

    async def _list_versions(self, key: str) -> list[ObjectVersion]:
        # a write spooled while S3 was down is the key's newest version (what load reads):
        # sent first, so that the listing shows it and a purge of everything reaches it
        # (else its flush would bring the purged key back)
        await self._fallback.flush_key(key, self._flush_spooled)
        full = self._full(key)
        return [
            ObjectVersion(
                version_id=str(item["VersionId"]),
                size=item["Size"],
                last_modified=utc(item["LastModified"]),
                is_latest=bool(item["IsLatest"]),
            )
            async for kind, item in self._object_versions(full, key=True)
            if kind == "version" and item["Key"] == full
        ]

    async def _stat_version(self, key: str, version_id: str) -> ObjectInfo:
        with _version_lookup():
            return await self._stat_head(key, VersionId=version_id)

    async def _stat_head(self, key: str, **extra: str) -> ObjectInfo:
        client = await self._client()
        head = await client.head_object(Bucket=self._bucket, Key=self._full(key), **extra)
        return head_info(key, head)

    async def _stream_version(
        self, key: str, version_id: str, start: int, end: int | None, chunk_size: int
    ) -> AsyncIterator[bytes]:
        client = await self._client()
        extra = {"VersionId": version_id}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            with _version_lookup():
                response = await client.get_object(
                    Bucket=self._bucket, Key=self._full(key), **extra
                )
        except Exception as exc:
            if error_code(exc) == "InvalidRange":  # past the end: an empty slice
                return
            raise
        body = response["Body"]
        async with body:
            async for chunk in body.iter_chunks(chunk_size):
                yield chunk

    async def _restore_version(self, key: str, version_id: str) -> str | None:
        full = self._full(key)
        transfer = await self._transfer()

        async def restore() -> str | None:
            with _version_lookup():
                return await transfer.copy(
                    full,
                    full,
                    self._options.sse,
                    self._copy_threshold,
                    self._copy_part_size,
                    version_id,
                )

        # newer than the key's spooled version
        return await self._fallback.direct(key, restore)

    async def _still_listed(self, key: str, listed: ObjectVersion) -> bool:
        """Whether the ``"null"`` version of ``key`` is still the one the purge listed: a
        write or delete made since with versioning suspended replaced it (the write is
        then that version, the delete a ``"null"`` delete marker), and S3 deletes by id
        whatever holds it, with no condition on the version (``If-Match`` on DeleteObject
        is checked against the current version, not the one named, and only by some
        servers). Same size and second as listed: the listed one, or a write of that size
        within the same second (the one case this cannot tell)."""
        try:
            with _version_lookup():
                head = await self._stat_head(key, VersionId=NULL_VERSION)
        except ObjectNotFoundError:
            return False  # a delete marker now, or purged by another caller meanwhile
        except Exception as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                return False
            raise
        seconds = (head.last_modified.replace(microsecond=0), head.size)
        return seconds == (listed.last_modified.replace(microsecond=0), listed.size)

    async def _purge_versions(
        self, key: str, versions: list[ObjectVersion], everything: bool
    ) -> None:
        full = self._full(key)
        ids = [
            v.version_id
            for v in versions
            # a "null" version is asked again just before its delete (one HeadObject)
            if everything or v.version_id != NULL_VERSION or await self._still_listed(key, v)
        ]
        doomed = [{"Key": full, "VersionId": vid} for vid in ids]
        if everything:  # the delete markers go too: nothing of the key is left
            doomed += [
                {"Key": full, "VersionId": str(item["VersionId"])}
                async for kind, item in self._object_versions(full, key=True)
                if kind == "marker" and item["Key"] == full
            ]
        client = await self._client()
        for start in range(0, len(doomed), DELETE_BATCH):
            batch = doomed[start : start + DELETE_BATCH]
            response = await client.delete_objects(
                Bucket=self._bucket, Delete={"Objects": batch, "Quiet": True}
            )
            if errors := response.get("Errors") or []:
                raise batch_delete_error(errors, len(batch))[0]

    async def _usage_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in self._iter_files(prefix):
            yield info
        if await self._versioning() == "off":
            return  # one listing, as before versioning
        async for kind, item in self._object_versions(self._full(prefix)):
            if kind == "version" and not item["IsLatest"]:
                key = self._user_key(item["Key"])
                if key is not None:
                    name = f"{key}{VERSION_SEP}{item['VersionId']}"
                    yield ObjectInfo(name, item["Size"], utc(item["LastModified"]))
