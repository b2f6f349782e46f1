"""The S3 server the tests run on, what it can prove, and helpers to look at it directly.

moto by default. ``FILE_STORAGE_TEST_S3_ENDPOINT`` (with ``..._ACCESS_KEY_ID`` and
``..._SECRET_ACCESS_KEY``) points the S3 tests at another server, and
``FILE_STORAGE_TEST_S3_SERVER`` names it, which picks its features from ``FEATURES``
(``FILE_STORAGE_TEST_S3_FEATURES``, comma-separated, overrides them). A second user
(``FILE_STORAGE_TEST_S3_OTHER_ACCESS_KEY_ID`` / ``..._OTHER_SECRET_ACCESS_KEY``) enables the
tests across users. ``scripts/ceph-rgw.sh start`` writes all of these for its cluster.

Features are declared, never probed: a probe that tried the very behaviour a test checks
would turn the server's regression into a skip.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from file_storage import S3StorageBackend

MakeBackend = Callable[..., "S3StorageBackend"]

_ENV = "FILE_STORAGE_TEST_S3_"

#: What a test can need from the server, and how a server lacking it is described.
REASONS = {
    "checks_signatures": "accepts any credentials and signature",
    "checks_content_md5": "stores a body that does not match its Content-MD5",
    "checks_crc32": "stores a body that does not match its x-amz-checksum-crc32",
    "presign_expiry": "does not check the expiry of presigned URLs",
    "second_user": "has no second test user (FILE_STORAGE_TEST_S3_OTHER_*)",
    "stores_checksums": "neither checks nor stores flexible checksums (x-amz-checksum-*)",
    "sse_over_http": "refuses SSE over plain HTTP (InvalidRequest) unless configured for it",
    "suspended_versioning": "drops every version of a key written while versioning is suspended",
    "underscore_metadata_names": "turns '_' into '-' in metadata names",
    # the library sends Ceph the bare ETag instead (backends/s3/_conditions.py)
    "if_match_on_put": "compares If-Match on PutObject with the ETag without its quotes",
    "conditional_completion": "ignores If-None-Match on CompleteMultipartUpload",
    "if_match_completion": "ignores If-Match on CompleteMultipartUpload",
    "enforces_post_policy": "stores a form POST without checking its policy (size, type, expiry)",
    "cors_on_post": "sends no CORS headers on its answer to a form POST",
    "marks_missing_deletes": "keeps no delete marker for a delete of a key it does not hold",
    # the library then deletes plainly, as before (backends/s3/_conditions.py)
    "if_match_on_delete": "ignores If-Match on DeleteObject (deletes whatever the key holds)",
}

#: What each known server does; a second user comes from the environment.
FEATURES: dict[str, frozenset[str]] = {
    # moto 5 echoes a CRC32 back without checking it, and checks no Content-MD5 either
    "moto": frozenset(
        {
            "stores_checksums",
            "sse_over_http",
            "underscore_metadata_names",
            "if_match_on_put",
            "conditional_completion",
            "if_match_on_delete",
        }
    ),
    # Ceph RGW 16.2 as scripts/ceph-rgw.sh configures it (docs/compatibility.md)
    "ceph": frozenset(
        {
            "checks_signatures",
            "presign_expiry",
            "checks_content_md5",
            "enforces_post_policy",
            "cors_on_post",
            # verified: keeps the versions with ids of a key written while suspended
            "suspended_versioning",
        }
    ),
}


@dataclass(frozen=True)
class S3Server:
    name: str
    endpoint: str | None  # None: a moto server started for the session
    access_key_id: str
    secret_access_key: str
    other_user: tuple[str, str] | None
    features: frozenset[str]


def _server() -> S3Server:
    endpoint = os.environ.get(f"{_ENV}ENDPOINT") or None
    name = os.environ.get(f"{_ENV}SERVER") or ("moto" if endpoint is None else "S3 server")
    features = set(FEATURES.get(name, frozenset()))
    if listed := os.environ.get(f"{_ENV}FEATURES"):
        features = {feature.strip() for feature in listed.split(",") if feature.strip()}
    other_key = os.environ.get(f"{_ENV}OTHER_ACCESS_KEY_ID")
    other_secret = os.environ.get(f"{_ENV}OTHER_SECRET_ACCESS_KEY")
    other = (other_key, other_secret) if other_key and other_secret else None
    if other is not None:
        features.add("second_user")
    unknown = features - REASONS.keys()
    if unknown:
        raise RuntimeError(f"unknown S3 test features: {sorted(unknown)}")
    return S3Server(
        name=name,
        endpoint=None if endpoint is None else endpoint.rstrip("/"),
        # moto takes any keys: these are fake, and tests check they never leak
        access_key_id=os.environ.get(f"{_ENV}ACCESS_KEY_ID", "AKIAFAKEFAKEFAKEFAKE"),
        secret_access_key=os.environ.get(
            f"{_ENV}SECRET_ACCESS_KEY", "fake-secret-key-that-must-never-be-printed"
        ),
        other_user=other,
        features=frozenset(features),
    )


SERVER = _server()


def missing_feature(needed: Iterable[str]) -> str | None:
    """Why the server cannot run a test that needs ``needed``; None when it can."""
    for feature in needed:
        if feature not in REASONS:
            raise ValueError(f"unknown S3 test feature {feature!r}")
        if feature not in SERVER.features:
            return f"{SERVER.name} {REASONS[feature]} (needs {feature})"
    return None


def remove_bucket(raw: Any, bucket: str) -> None:
    """Delete every object version, delete marker and open upload, then the bucket itself
    (a test that removed the bucket already leaves nothing to do)."""
    try:
        uploads = open_uploads(raw, bucket)
    except raw.exceptions.NoSuchBucket:
        return
    for upload in uploads:
        raw.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    pages = raw.get_paginator("list_object_versions").paginate(Bucket=bucket)
    for page in pages:
        doomed = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        ]
        if doomed:
            raw.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
    raw.delete_bucket(Bucket=bucket)


def stored_keys(raw: Any, bucket: str) -> list[str]:
    """Every key the server holds in ``bucket``, prefix included."""
    return [item["Key"] for item in raw.list_objects_v2(Bucket=bucket).get("Contents", [])]


def open_uploads(raw: Any, bucket: str) -> list[Any]:
    """Multipart uploads started and neither completed nor aborted."""
    uploads: list[Any] = raw.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


def closed_port() -> int:
    """A loopback port nothing listens on (a server that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def s3_backends(endpoint: str, bucket: str, **defaults: Any) -> AsyncIterator[MakeBackend]:
    """A maker of S3 backends on ``bucket`` at ``endpoint``, with the test server's
    credentials and path-style addressing; ``defaults`` and then each call's keyword
    arguments (``bucket=`` included) override them. Every backend made is closed on exit."""
    from file_storage import S3StorageBackend

    made: list[S3StorageBackend] = []

    def make(**overrides: Any) -> S3StorageBackend:
        options: dict[str, Any] = {
            "endpoint_url": endpoint,
            "access_key_id": SERVER.access_key_id,
            "secret_access_key": SERVER.secret_access_key,
            "addressing_style": "path",
            **defaults,
            **overrides,
        }
        backend = S3StorageBackend(options.pop("bucket", bucket), **options)
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            await backend.aclose()


async def blocks(*sizes: int) -> AsyncIterator[bytes]:
    """A streamed body of blocks of these sizes, each of one byte value (0, 1, 2, ...)."""
    for number, size in enumerate(sizes):
        yield bytes([number % 256]) * size
