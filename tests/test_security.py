"""Hostile input and secrets: keys never escape the S3 prefix, presigned URLs stay within
their expiry bounds, and credentials never reach a log line, repr, error or traceback.

Key validation itself runs on every backend in file_storage/testing/suite/key_properties.py,
and symlink escapes on local disk in tests/backends/test_local.py.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from file_storage import (
    InvalidKeyError,
    LocalStorageBackend,
    S3StorageBackend,
    StorageBackend,
    StorageError,
)
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.faults.proxy import FaultProxy

SESSION_TOKEN = "FwoGZXIvYXdzEFAKE-session-token-never-printed"

SEGMENTS = st.one_of(
    st.sampled_from(
        ["", ".", "..", "...", "\\", "%2e%2e", "%2F", "?", "#", "+", " ", "~", "\x00", "*"]
    ),
    st.text(min_size=0, max_size=12),
)
KEYS = st.one_of(
    st.text(max_size=30),
    st.lists(SEGMENTS, min_size=1, max_size=5).map("/".join),
    st.lists(SEGMENTS, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    st.lists(SEGMENTS, min_size=1, max_size=3).map(lambda parts: "../" + "/".join(parts)),
)
CHECKS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def bucket_keys(raw: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in raw.list_objects_v2(Bucket=bucket).get("Contents", [])]


# ---------------------------------------------------------------- keys on S3


@pytest.mark.s3
@CHECKS
@given(key=KEYS)
async def test_s3_object_lands_exactly_under_the_prefix_or_nowhere(
    s3_backend: StorageBackend, raw: Any, s3_bucket: str, key: str
) -> None:
    try:
        stored = await s3_backend.save(key, b"v")
    except InvalidKeyError:
        assert bucket_keys(raw, s3_bucket) == []
        return
    try:
        assert bucket_keys(raw, s3_bucket) == [f"storage/{stored}"]
        assert stored == key
    finally:
        raw.delete_object(Bucket=s3_bucket, Key=f"storage/{stored}")


@pytest.mark.s3
async def test_s3_neighbours_of_the_prefix_are_never_seen_nor_deleted(
    s3_backend: StorageBackend, raw: Any, s3_bucket: str
) -> None:
    for name in ("storage2/x", "storagex", "other/storage/y", "storage"):
        raw.put_object(Bucket=s3_bucket, Key=name, Body=b"neighbour")
    await s3_backend.save("mine.txt", b"x")
    assert await s3_backend.list_files() == ["mine.txt"]
    assert await s3_backend.delete_prefix("") == 1
    assert sorted(bucket_keys(raw, s3_bucket)) == [
        "other/storage/y",
        "storage",
        "storage2/x",
        "storagex",
    ]


# ---------------------------------------------------------------- presigned URL expiry


@pytest.mark.s3
@pytest.mark.parametrize("expires_in", [1, 3600, 604_800])
async def test_s3_presigned_url_expires_as_asked(
    s3_backend: StorageBackend, expires_in: int
) -> None:
    url = await s3_backend.get_presigned_url("a.txt", expires_in=expires_in)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == [str(expires_in)]
    signed_at = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
    assert abs(signed_at - time.mktime(time.gmtime())) < 60


@pytest.mark.s3
@pytest.mark.parametrize("expires_in", [0, -1, 604_801, 10**12])
async def test_s3_expiry_out_of_bounds_is_refused_before_signing(
    s3_backend: StorageBackend, expires_in: int
) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        await s3_backend.get_presigned_url("a.txt", expires_in=expires_in)


async def test_local_presigned_url_expires_as_asked(tmp_path: Any) -> None:
    backend = LocalStorageBackend(tmp_path / "storage", base_url="/files", signing_key="k" * 32)
    url = await backend.get_presigned_url("a.txt", expires_in=60)
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert abs(expires - (time.time() + 60)) < 5
    with pytest.raises(ValueError, match="expires_in"):
        await backend.get_presigned_url("a.txt", expires_in=604_801)


# ---------------------------------------------------------------- credentials


@pytest.fixture
async def proxied(
    moto_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[S3StorageBackend, FaultProxy]]:
    """A backend with temporary credentials, through a fault proxy, retrying at once."""
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    proxy = FaultProxy(moto_endpoint)
    proxy.start()
    backend = S3StorageBackend(
        s3_bucket,
        endpoint_url=proxy.endpoint,
        access_key_id=FAKE_KEY_ID,
        secret_access_key=FAKE_SECRET,
        session_token=SESSION_TOKEN,
        addressing_style="path",
        max_attempts=2,
        connect_timeout=1,
        read_timeout=1,
    )
    try:
        yield backend, proxy
    finally:
        await backend.aclose()
        proxy.stop()


def texts_of(error: BaseException) -> list[str]:
    """What an error tracker would record: str, repr and the whole chained traceback."""
    return [str(error), repr(error), "".join(traceback.format_exception(error))]


@pytest.mark.s3
async def test_credentials_never_appear_in_logs_reprs_errors_or_tracebacks(
    proxied: tuple[S3StorageBackend, FaultProxy], caplog: pytest.LogCaptureFixture
) -> None:
    backend, proxy = proxied
    caplog.set_level(logging.DEBUG)  # every logger: botocore's SigV4 dumps included
    errors: list[StorageError] = []
    await backend.save("a.txt", b"x")  # signed requests: canonical requests are logged
    await backend.get_presigned_url("a.txt")
    for status, code in [(503, "SlowDown"), (403, "SignatureDoesNotMatch")]:
        proxy.fail_next(2, status=status, code=code)
        with pytest.raises(StorageError) as info:
            await backend.load("a.txt")
        errors.append(info.value)
    proxy.refuse()
    with pytest.raises(StorageError) as refused:
        await backend.save("b.txt", b"y")
    errors.append(refused.value)

    assert any(r.name.startswith("botocore") for r in caplog.records)
    outputs = [caplog.text, repr(backend), *[t for e in errors for t in texts_of(e)]]
    outputs += [record.getMessage() for record in caplog.records]
    for secret in (FAKE_SECRET, SESSION_TOKEN):
        assert not [text for text in outputs if secret in text]
    # the access key id is an identifier, not a secret: SigV4 sends it in every
    # Authorization header (and botocore's DEBUG logs show it); ours never do
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("file_storage")]
    ours += [repr(backend), *[t for e in errors for t in texts_of(e)[:2]]]
    assert not [text for text in ours if FAKE_KEY_ID in text]


REDIS_PASSWORD = "hunter2-never-logged"


def _build(kind: str, url: str) -> StorageBackend:
    from file_storage import AzureStorageBackend, GCSStorageBackend, MemoryStorageBackend

    if kind == "redis":
        return MemoryStorageBackend(quota_redis_url=url)
    if kind == "s3":
        return S3StorageBackend(
            "bucket", endpoint_url=url, access_key_id=FAKE_KEY_ID, secret_access_key=FAKE_SECRET
        )
    if kind == "s3-public":  # presigned URLs: what users' browsers send
        return S3StorageBackend(
            "bucket",
            endpoint_url="http://127.0.0.1:9000",
            public_endpoint_url=url,
            access_key_id=FAKE_KEY_ID,
            secret_access_key=FAKE_SECRET,
        )
    if kind == "gcs":
        return GCSStorageBackend("bucket", endpoint_url=url)
    return AzureStorageBackend("container", account="acct", endpoint_url=url)


CLEAR = [
    ("redis", f"redis://:{REDIS_PASSWORD}@redis.example.com:6379/0", "STORAGE_QUOTA_REDIS_URL"),
    ("redis", f"redis://app:{REDIS_PASSWORD}@10.0.0.5/0", "STORAGE_QUOTA_REDIS_URL"),
    ("s3", "http://minio.internal:9000", "STORAGE_S3_ENDPOINT_URL"),
    ("s3-public", "http://files.example.com", "STORAGE_S3_PUBLIC_ENDPOINT_URL"),
    ("gcs", "http://gcs.example.com", "STORAGE_GCS_ENDPOINT_URL"),
    ("azure", "http://10.1.2.3:10000/acct", "STORAGE_AZURE_ENDPOINT_URL"),
]
QUIET = [
    ("redis", f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"),
    ("redis", f"redis://:{REDIS_PASSWORD}@localhost/0"),
    ("redis", f"rediss://:{REDIS_PASSWORD}@redis.example.com/0"),
    ("redis", "redis://redis.example.com/0"),  # no password to send
    ("s3", "http://127.0.0.1:9000"),
    ("s3", "http://minio.localhost:9000"),  # RFC 6761: *.localhost is loopback
    ("s3", "http://[::ffff:127.0.0.1]:9000"),  # IPv4-mapped loopback
    ("s3", "https://s3.example.com"),
    ("s3-public", "https://files.example.com"),
    ("s3-public", "http://localhost:9000"),
    ("gcs", "http://[::1]:4443"),
    ("azure", "http://localhost:10000/acct"),
]


@pytest.mark.parametrize(("kind", "url", "setting"), CLEAR, ids=[c[0] for c in CLEAR])
def test_credentials_sent_in_clear_to_another_host_log_one_warning(
    caplog: pytest.LogCaptureFixture, kind: str, url: str, setting: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="file_storage"):
        _build(kind, url)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert setting in message
    assert REDIS_PASSWORD not in message
    assert FAKE_SECRET not in message


@pytest.mark.parametrize(("kind", "url"), QUIET, ids=[q[0] for q in QUIET])
def test_loopback_or_encrypted_endpoints_log_no_warning(
    caplog: pytest.LogCaptureFixture, kind: str, url: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="file_storage"):
        _build(kind, url)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
