"""Backend constructors check their arguments as the settings check the variables.

Code that builds a backend itself (tests, scripts, a plugin) must get the same answer as
``StorageSettings``: a ``StorageConfigError`` naming the argument when the backend is
built, never a backend that fails later with an ``AttributeError`` or a broken URL.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from file_storage import (
    AzureStorageBackend,
    GCSStorageBackend,
    LocalStorageBackend,
    MemoryStorageBackend,
    S3StorageBackend,
    StorageBackend,
    StorageConfigError,
)

SIGNING_KEY = "k" * 40
PASSWORD = "pAsSwOrD-never-printed"

Build = Callable[[Path], StorageBackend]


def _local(**kwargs: Any) -> Build:
    return lambda root: LocalStorageBackend(root, **kwargs)


def _memory(**kwargs: Any) -> Build:
    return lambda root: MemoryStorageBackend(**kwargs)


def _s3(**kwargs: Any) -> Build:
    return lambda root: S3StorageBackend(kwargs.pop("bucket", "media"), **kwargs)


def _gcs(**kwargs: Any) -> Build:
    return lambda root: GCSStorageBackend(kwargs.pop("bucket", "media"), **kwargs)


def _azure(**kwargs: Any) -> Build:
    container = kwargs.pop("container", "media")
    return lambda root: AzureStorageBackend(container, **{"account": "acct", **kwargs})


CASES: list[tuple[str, Build, str]] = [
    # base URLs of signed and public URLs: an http(s) URL or an absolute path, as the settings
    (
        "local-base-creds",
        _local(base_url=f"http://u:{PASSWORD}@h/f", signing_key=SIGNING_KEY),
        "base_url",
    ),
    (
        "local-base-query",
        _local(base_url="http://h/files?x=1", signing_key=SIGNING_KEY),
        "base_url",
    ),
    ("local-base-ftp", _local(base_url="ftp://h/files", signing_key=SIGNING_KEY), "base_url"),
    ("local-base-int", _local(base_url=5, signing_key=SIGNING_KEY), "base_url"),
    ("local-public-int", _local(public_base_url=5), "public_base_url"),
    ("local-public-relative", _local(public_base_url="files"), "public_base_url"),
    ("memory-base-query", _memory(base_url="/files?x", signing_key=SIGNING_KEY), "base_url"),
    ("memory-public-int", _memory(public_base_url=5), "public_base_url"),
    ("s3-public-int", _s3(public_base_url=5), "public_base_url"),
    ("s3-public-creds", _s3(public_base_url=f"https://u:{PASSWORD}@cdn"), "public_base_url"),
    ("gcs-public-scheme", _gcs(public_base_url="ftp://cdn/public"), "public_base_url"),
    ("azure-public-int", _azure(public_base_url=5), "public_base_url"),
    # one half of signed URLs: a backend whose every presign failed later
    ("local-base-alone", _local(base_url="/files"), "signing_key"),
    ("local-key-alone", _local(signing_key=SIGNING_KEY), "base_url"),
    ("memory-base-alone", _memory(base_url="/files"), "signing_key"),
    ("memory-key-alone", _memory(signing_key=SIGNING_KEY), "base_url"),
    # names the settings check
    ("s3-region", _s3(region="us east 1"), "region"),
    ("gcs-bucket", _gcs(bucket="B A D"), "bucket"),
    ("gcs-bucket-int", _gcs(bucket=5), "bucket"),
    ("azure-container", _azure(container="Bad_Name"), "container"),
    ("azure-account", _azure(account="Bad Account"), "account"),
    ("gcs-prefix-int", _gcs(prefix=5), "prefix"),
    # quota arguments of every backend
    ("local-max-negative", _local(max_size_bytes=-1), "max_size_bytes"),
    ("memory-max-float", _memory(max_size_bytes=1.5), "max_size_bytes"),
    ("gcs-max-negative", _gcs(max_size_bytes=-1), "max_size_bytes"),
    ("local-refresh-negative", _local(quota_refresh_seconds=-1), "quota_refresh_seconds"),
    ("memory-refresh-str", _memory(quota_refresh_seconds="5"), "quota_refresh_seconds"),
    ("memory-redis-url-int", _memory(quota_redis_url=5), "quota_redis_url"),
    # a lease shorter than a Redis round trip and a loop stall runs out under every write
    (
        "memory-lease-sub-second",
        _memory(quota_redis_url="redis://127.0.0.1:1", quota_lease_seconds=0.5),
        "quota_lease_seconds",
    ),
    (
        "local-lease-over-a-day",
        _local(quota_redis_url="redis://127.0.0.1:1", quota_lease_seconds=86401),
        "quota_lease_seconds",
    ),
    # refused with Redis or without, as the settings refuse them: turning Redis on later
    # must not be what reveals a bad value
    ("memory-lease-zero-no-redis", _memory(quota_lease_seconds=0), "quota_lease_seconds"),
    ("local-lease-over-a-day-no-redis", _local(quota_lease_seconds=86401), "quota_lease_seconds"),
    ("s3-lease-str-no-redis", _s3(quota_lease_seconds="60"), "quota_lease_seconds"),
    ("gcs-lease-nan-no-redis", _gcs(quota_lease_seconds=float("nan")), "quota_lease_seconds"),
    ("azure-lease-bool-no-redis", _azure(quota_lease_seconds=True), "quota_lease_seconds"),
    (
        "memory-namespace-blank-no-redis",
        _memory(quota_redis_namespace=" "),
        "quota_redis_namespace",
    ),
    (
        "local-namespace-long-no-redis",
        _local(quota_redis_namespace="n" * 201),
        "quota_redis_namespace",
    ),
    ("s3-namespace-int-no-redis", _s3(quota_redis_namespace=5), "quota_redis_namespace"),
    # "{app}:lk:{app}:q:" is both this ledger's count and the lock of key "{app}:q:" in
    # the ledger "app"; "}" alone makes an empty Cluster hash tag (CROSSSLOT everywhere)
    (
        "local-namespace-naming-another-ledgers-keys",
        _local(quota_redis_url="redis://127.0.0.1:1", quota_redis_namespace="app}:lk:{app"),
        "quota_redis_namespace",
    ),
    (
        "memory-namespace-empty-hash-tag-no-redis",
        _memory(quota_redis_namespace="}"),
        "quota_redis_namespace",
    ),
    (
        "s3-namespace-brace-colon-no-redis",
        _s3(quota_redis_namespace="a}:b"),
        "quota_redis_namespace",
    ),
    # a NUL in a folder: a bare ValueError ("embedded null byte") at the first operation
    ("local-root-nul", lambda root: LocalStorageBackend(f"{root}/a\x00b"), "root"),
    ("s3-fallback-nul", _s3(fallback_path="spool\x00"), "fallback_path"),
    # credentials with a line break or a space: a secret file read whole, a pasting accident
    ("s3-key-id-newline", _s3(access_key_id="AKIA\n", secret_access_key=PASSWORD), "access_key_id"),
    (
        "s3-secret-newline",
        _s3(access_key_id="AKIA", secret_access_key=SecretStr(f"{PASSWORD}\n")),
        "secret_access_key",
    ),
    (
        "s3-token-space",
        _s3(access_key_id="AKIA", secret_access_key="s", session_token=f"{PASSWORD} x"),
        "session_token",
    ),
]


@pytest.mark.parametrize(
    ("build", "named"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_a_bad_argument_fails_when_the_backend_is_built_naming_it(
    build: Build, named: str, tmp_path: Path
) -> None:
    with pytest.raises(StorageConfigError, match=rf"\b{named}\b") as info:
        build(tmp_path)
    assert PASSWORD not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize(
    "build",
    [
        _local(base_url="/files", signing_key=SIGNING_KEY, public_base_url="/public"),
        _local(base_url="https://cdn.example/files/", signing_key=SIGNING_KEY),
        _memory(base_url="http://127.0.0.1:8000/files", signing_key=SIGNING_KEY),
        _local(max_size_bytes=0, quota_refresh_seconds=0.0),
        _local(quota_lease_seconds=1, quota_redis_namespace="n" * 200),
        _memory(quota_lease_seconds=86400.0, quota_redis_namespace="app"),
        _memory(quota_redis_namespace="{app}"),  # a hash tag of its own: still one slot
        _s3(public_base_url="https://cdn.example/media", region="eu-west-3"),
        _gcs(bucket="my-bucket.example", public_base_url="https://storage.googleapis.com/b/p"),
        _azure(container="media-2", account="acct01"),
    ],
)
def test_good_arguments_build(build: Build, tmp_path: Path) -> None:
    assert isinstance(build(tmp_path), StorageBackend)
