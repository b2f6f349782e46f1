"""What only the GCS backend has: V4 signed URLs, the service account setting, settings."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from file_storage import (
    GCSStorageBackend,
    StorageBackend,
    StorageConfigError,
    StorageSettings,
    create_storage_backend,
)
from file_storage.backends.gcs._signing import signed_url

pytestmark = pytest.mark.gcs


@pytest.fixture
def backend(gcs_backend: StorageBackend) -> StorageBackend:
    return gcs_backend


async def test_presigned_get_downloads_over_http(backend: StorageBackend) -> None:
    await backend.save("a b/é.txt", b"signed body")
    url = await backend.get_presigned_url("a b/é.txt", expires_in=60)
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == b"signed body"


async def test_presigned_put_uploads_over_http(backend: StorageBackend) -> None:
    url = await backend.get_presigned_url("up/new.txt", method="PUT")
    async with httpx.AsyncClient() as http:
        response = await http.put(url, content=b"uploaded")
    assert response.status_code == 200
    assert await backend.load("up/new.txt") == b"uploaded"


async def test_presigned_url_is_a_v4_signature_for_the_key_under_the_prefix(
    backend: StorageBackend,
) -> None:
    url = await backend.get_presigned_url("doc.txt", expires_in=900)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path.endswith("/storage/doc.txt")
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["900"]
    assert query["X-Goog-SignedHeaders"] == ["host"]
    assert query["X-Goog-Credential"][0].startswith("tests@file-storage.iam.gserviceaccount.com/")
    assert len(query["X-Goog-Signature"][0]) == 512  # 2048-bit RSA, hex


def test_v4_signature_matches_googles_algorithm() -> None:
    # recompute the signature with the public key: the string to sign must be Google's
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    url = signed_url(
        endpoint="https://storage.googleapis.com",
        bucket="media",
        name="a b/é.txt",
        method="GET",
        expires_in=60,
        client_email="svc@p.iam.gserviceaccount.com",
        private_key=pem,
        now=now,
    )
    base, _, signature = url.partition("&X-Goog-Signature=")
    parts = urlsplit(base)
    assert parts.path == "/media/a%20b/%C3%A9.txt"
    canonical = "\n".join(
        [
            "GET",
            parts.path,
            parts.query,
            "host:storage.googleapis.com\n",
            "host",
            "UNSIGNED-PAYLOAD",
        ]
    )

    to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            "20260102T030405Z",
            "20260102/auto/storage/goog4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key.public_key().verify(
        bytes.fromhex(signature), to_sign.encode(), padding.PKCS1v15(), hashes.SHA256()
    )


async def test_service_account_from_a_file_path(
    gcs_server: tuple[str, str], tmp_path: Path
) -> None:
    from tests.gcs_emulator import create_bucket

    endpoint, account = gcs_server
    create_bucket(endpoint, "file-key-bucket")
    key_file = tmp_path / "key.json"
    key_file.write_text(account)
    settings = StorageSettings(
        type="gcs",
        gcs={"bucket": "file-key-bucket", "service_account": str(key_file), "prefix": ""},
    )
    backend = create_storage_backend(settings)
    assert isinstance(backend, GCSStorageBackend)
    await backend.save("k.txt", b"via key file")
    url = await backend.get_presigned_url("k.txt")
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == b"via key file"
    await backend.aclose()


def test_settings_build_the_backend_with_quota() -> None:
    account = json.dumps({"client_email": "x@y", "private_key": "SECRET-KEY-TEXT"})
    settings = StorageSettings(
        type="GCS",
        gcs={"bucket": "media", "prefix": "app", "service_account": account, "max_size_gb": 2},
    )
    backend = create_storage_backend(settings)
    assert isinstance(backend, GCSStorageBackend)
    assert backend.max_size_bytes == 2_000_000_000
    assert "SECRET-KEY-TEXT" not in repr(backend)
    assert "SECRET-KEY-TEXT" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STORAGE_TYPE": "GCS"}, "STORAGE_GCS_BUCKET"),
        ({"STORAGE_GCS_BUCKET": "Bad/Name"}, "STORAGE_GCS_BUCKET"),
        ({"STORAGE_GCS_PREFIX": "/abs"}, "STORAGE_GCS_PREFIX"),
        ({"STORAGE_GCS_ENDPOINT_URL": "http://u:p@host"}, "STORAGE_GCS_ENDPOINT_URL"),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StorageConfigError, match=named):
        StorageSettings()


@pytest.mark.parametrize(
    "account", ['{"private_key": "SeCrEt-never-printed"', '["SeCrEt-never-printed"]']
)
def test_service_account_json_that_is_not_a_json_object_fails_when_built(account: str) -> None:
    # inline JSON is checked by the constructor (no I/O needed), not at the first request
    with pytest.raises(StorageConfigError, match=r"service_account.*JSON") as info:
        GCSStorageBackend("media", service_account=account, endpoint_url="http://127.0.0.1:9")
    assert "SeCrEt" not in "".join(traceback.format_exception(info.value))
    settings = StorageSettings(type="gcs", gcs={"bucket": "media", "service_account": account})
    with pytest.raises(StorageConfigError, match="STORAGE_GCS_SERVICE_ACCOUNT") as info:
        create_storage_backend(settings)
    assert "SeCrEt" not in "".join(traceback.format_exception(info.value))


def _key_file_error(value: str) -> StorageConfigError:
    """The error building a GCS backend with ``value``, checked to name the setting and
    quote nothing from the key or the file, in code and from the settings."""
    with pytest.raises(StorageConfigError, match=r"service_account") as info:
        GCSStorageBackend("media", service_account=value, endpoint_url="http://127.0.0.1:9")
    settings = StorageSettings(type="gcs", gcs={"bucket": "media", "service_account": value})
    with pytest.raises(StorageConfigError, match="STORAGE_GCS_SERVICE_ACCOUNT") as named:
        create_storage_backend(settings)
    for error in (info.value, named.value):
        shown = "".join(traceback.format_exception(error)) + repr(error)
        assert "SeCrEt" not in shown
    return info.value


def test_a_missing_key_file_fails_when_built(tmp_path: Path) -> None:
    # it was read at the first request only: a typo in the path surfaced in production
    error = _key_file_error(str(tmp_path / "SeCrEt-key.json"))
    assert "cannot be read" in str(error)


def test_a_key_file_path_with_a_nul_fails_when_built(tmp_path: Path) -> None:
    # open() raised a bare ValueError ("embedded null byte")
    _key_file_error(f"{tmp_path}/SeCrEt\x00key.json")


def test_a_key_file_that_is_a_folder_fails_when_built(tmp_path: Path) -> None:
    (tmp_path / "SeCrEt").mkdir()
    _key_file_error(str(tmp_path / "SeCrEt"))


def test_a_key_file_that_is_a_fifo_fails_when_built_without_waiting(tmp_path: Path) -> None:
    # reading a FIFO (or /dev/stdin) waited for a writer: building the backend hung
    os.mkfifo(tmp_path / "SeCrEt")
    error = _key_file_error(str(tmp_path / "SeCrEt"))
    assert "not a regular file" in str(error)


@pytest.mark.parametrize(
    "content",
    [
        b"SeCrEt-never-printed",
        b'{"private_key": "SeCrEt-never-printed"',
        b'["SeCrEt-never-printed"]',
        b"\xff\xfeSeCrEt-never-printed",  # not UTF-8
        b"-----BEGIN PRIVATE KEY-----\nSeCrEt-never-printed\n-----END PRIVATE KEY-----\n",
    ],
    ids=["text", "broken-json", "array", "not-utf8", "pem"],
)
def test_a_key_file_that_is_not_json_fails_when_built(content: bytes, tmp_path: Path) -> None:
    (tmp_path / "key.json").write_bytes(content)
    _key_file_error(str(tmp_path / "key.json"))


@pytest.mark.parametrize("in_file", [False, True], ids=["json", "file"])
@pytest.mark.parametrize(
    "account",
    [
        {"client_email": "a@p.iam.gserviceaccount.com", "note": "SeCrEt"},  # no private_key
        {"private_key": "SeCrEt-never-printed"},  # no client_email
        # gcloud's user credential (application_default_credentials.json), not a key
        {
            "type": "authorized_user",
            "client_id": "1.apps.googleusercontent.com",
            "client_secret": "SeCrEt-never-printed",
            "refresh_token": "SeCrEt-never-printed",
        },
    ],
    ids=["no-private-key", "no-client-email", "user-credential"],
)
def test_json_that_is_not_a_service_account_key_fails_when_built(
    account: dict[str, str], in_file: bool, tmp_path: Path
) -> None:
    value = json.dumps(account)
    if in_file:
        (tmp_path / "key.json").write_text(value)
        value = str(tmp_path / "key.json")
    assert "not a service-account key" in str(_key_file_error(value))


@pytest.mark.parametrize("in_file", [False, True], ids=["json", "file"])
async def test_a_service_account_key_that_cannot_be_used_is_a_config_error(
    in_file: bool, tmp_path: Path
) -> None:
    # it was a bare StorageError ("GCS request failed"), as if the request had failed;
    # a key whose PEM is broken passes the build-time check (it parses the JSON only)
    account = {
        "type": "service_account",
        "client_email": "a@p.iam.gserviceaccount.com",
        "private_key_id": "1",
        "private_key": "-----BEGIN PRIVATE KEY-----\nSeCrEt-never-printed\n"
        "-----END PRIVATE KEY-----\n",
    }
    value = json.dumps(account)
    if in_file:
        (tmp_path / "key.json").write_text(value)
        value = str(tmp_path / "key.json")
    backend = GCSStorageBackend("media", service_account=value, endpoint_url="http://127.0.0.1:9")
    async with backend:
        with pytest.raises(StorageConfigError, match="service account") as info:
            await backend.save("a.txt", b"x")
    assert "SeCrEt" not in "".join(traceback.format_exception(info.value))


def test_building_gcs_and_azure_backends_imports_no_sdk_in_a_fresh_interpreter() -> None:
    # constructors do no I/O and open no client: obstore loads on the first request
    code = (
        "from file_storage import StorageSettings, create_storage_backend\n"
        "create_storage_backend(StorageSettings(type='gcs', gcs={'bucket': 'media'}))\n"
        "create_storage_backend(StorageSettings(type='azure', azure={'account': 'acct', "
        "'container': 'media'}))\n"
        "import sys; print(*sys.modules)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {"obstore", "aioboto3", "botocore", "cryptography"} & set(loaded)


async def test_missing_bucket_raises_config_error(gcs_server: tuple[str, str]) -> None:
    endpoint, account = gcs_server
    backend = GCSStorageBackend("no-such-bucket", service_account=account, endpoint_url=endpoint)
    with pytest.raises(StorageConfigError) as info:
        await backend.save("a.txt", b"x")
    assert (info.value.operation, info.value.key) == ("save", "a.txt")


async def test_presigned_get_signs_the_response_type_and_file_name(
    backend: StorageBackend,
) -> None:
    url = await backend.get_presigned_url(
        "doc.bin", content_type="application/pdf", filename="Отчёт 1.pdf"
    )
    query = parse_qs(urlsplit(url).query)
    assert query["response-content-type"] == ["application/pdf"]
    [disposition] = query["response-content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82%201.pdf" in disposition
    assert query["X-Goog-SignedHeaders"] == ["host"]


async def test_presigned_put_with_a_content_type_signs_it_as_a_header(
    backend: StorageBackend,
) -> None:
    url = await backend.get_presigned_url("up/a.csv", method="PUT", content_type="text/csv")
    assert parse_qs(urlsplit(url).query)["X-Goog-SignedHeaders"] == ["content-type;host"]
    async with httpx.AsyncClient() as http:
        response = await http.put(url, content=b"a,b", headers={"Content-Type": "text/csv"})
    assert response.status_code == 200
    assert await backend.load("up/a.csv") == b"a,b"
    assert (await backend.stat("up/a.csv")).content_type == "text/csv"


def test_public_url_joins_the_base_and_the_key() -> None:
    backend = GCSStorageBackend("bucket", public_base_url="https://cdn.example.com")
    assert backend.get_public_url("a/b.txt") == "https://cdn.example.com/a/b.txt"


def test_public_base_url_setting_reaches_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "gcs")
    monkeypatch.setenv("STORAGE_GCS_BUCKET", "media")
    monkeypatch.setenv("STORAGE_GCS_PUBLIC_BASE_URL", "https://cdn.example.com/")
    backend = create_storage_backend()
    assert backend.get_public_url("x.txt") == "https://cdn.example.com/x.txt"


async def test_a_cancelled_long_save_leaves_no_multipart_upload_open(
    backend: GCSStorageBackend, gcs_emulator: tuple[Any, str]
) -> None:
    gateway = gcs_emulator[0]
    sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(20):  # 20 MiB: parts of 8 MiB, so a multipart upload is open
            yield b"a" * 2**20
        sent.set()
        await asyncio.Event().wait()  # a client that stalls before its last byte

    def open_uploads() -> list[object]:
        mine = f"/{backend._bucket}/"
        return [u for u in gateway.uploads.values() if unquote(u["path"]).startswith(mine)]

    task = asyncio.create_task(backend.save("big.bin", body()))
    await sent.wait()
    assert len(open_uploads()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # told cancelled: the upload is aborted, nothing is stored, and nothing lands later
    assert open_uploads() == []
    assert not await backend.exists("big.bin")


async def test_a_migration_to_the_same_bucket_name_on_another_server_is_allowed(
    gcs_emulator: tuple[Any, str],
) -> None:
    # an emulator's bucket to a bucket of the same name elsewhere (another server, GCS
    # itself): two stores, not one place
    from file_storage import migrate
    from tests.gcs_emulator import FakeGCS, Gateway, create_bucket

    gateway, account = gcs_emulator
    other_fake = FakeGCS()
    other = Gateway(other_fake)
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    create_bucket(gateway.url, bucket)
    create_bucket(other.url, bucket)
    other_account = json.dumps({**json.loads(account), "gcs_base_url": other.url})
    source = GCSStorageBackend(bucket, service_account=account, endpoint_url=gateway.url)
    dest = GCSStorageBackend(bucket, service_account=other_account, endpoint_url=other.url)
    try:
        await source.save("a/one.txt", b"one")
        report = await migrate(source, dest)
        assert (report.copied, report.failed) == (1, {})
        assert await dest.load("a/one.txt") == b"one"
    finally:
        await source.aclose()
        await dest.aclose()
        other.stop()
        other_fake.stop()


async def test_metadata_names_the_escape_would_take_round_trip(backend: StorageBackend) -> None:
    metadata = {"fs_looks_encoded": "a", "fs_6162": "b", "content-type": "c"}
    await backend.save("m.txt", b"x", metadata=metadata)
    assert (await backend.stat("m.txt")).metadata == metadata


async def test_metadata_stored_before_its_name_was_escaped_reads_back_as_stored(
    backend: StorageBackend,
) -> None:
    # names starting like the escape were stored as given before it existed (and by other
    # tools): only a name the backend itself would have escaped is decoded
    assert isinstance(backend, GCSStorageBackend)
    obs, store = backend._store()
    attributes = {"Content-Type": "text/plain", "fs_6162": "b", "fs_636f6e74656e742d74797065": "c"}
    await obs.put_async(store, "old.txt", b"x", attributes=attributes)
    assert (await backend.stat("old.txt")).metadata == {"fs_6162": "b", "content-type": "c"}


async def test_a_page_from_a_cursor_is_listed_from_the_cursor(
    backend: StorageBackend, gcs_emulator: tuple[Any, str]
) -> None:
    # a page deep in a big folder: the store is asked to start after the cursor (GCS's
    # start-after), not to list the folder from its start for every page
    gateway = gcs_emulator[0]
    await asyncio.gather(*(backend.save(f"flat/{i:03d}", b"x") for i in range(30)))
    first = await backend.list_page("flat", limit=10)
    gateway.listings.clear()
    second = await backend.list_page("flat", limit=10, start_after=first.next_start_after)
    assert [f.key for f in second.files] == [f"flat/{i:03d}" for i in range(10, 20)]
    assert [q.get("start-after") for q in gateway.listings] == [["storage/flat/009"]]


@pytest.mark.parametrize(
    ("prefix", "key"),
    [("", ".well-known/acme-challenge/token"), (".well-known", "acme-challenge/token")],
)
async def test_a_name_gcs_reserves_for_domain_checks_is_an_invalid_key(
    gcs_server: tuple[str, str], prefix: str, key: str
) -> None:
    # GCS refuses object names starting with ".well-known/acme-challenge/" ("Object naming
    # requirements"): such a key is refused before any I/O, like one too long for the prefix
    from file_storage import InvalidKeyError
    from tests.gcs_emulator import create_bucket

    endpoint, account = gcs_server
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    create_bucket(endpoint, bucket)
    backend = GCSStorageBackend(
        bucket, prefix=prefix, service_account=account, endpoint_url=endpoint
    )
    try:
        with pytest.raises(InvalidKeyError) as info:
            await backend.save(key, b"x")
        assert (info.value.operation, info.value.key) == ("save", key)
        with pytest.raises(InvalidKeyError) as info:
            await backend.load(key)
        assert (info.value.operation, info.value.key) == ("load", key)
        assert await backend.save(".well-known/other", b"y") == ".well-known/other"
        assert await backend.list_files() == [".well-known/other"]
    finally:
        await backend.aclose()


async def test_a_key_under_well_known_is_kept_under_a_prefix(backend: StorageBackend) -> None:
    key = ".well-known/acme-challenge/token"  # stored as storage/.well-known/...
    assert await backend.save(key, b"x") == key
    assert await backend.load(key) == b"x"


def test_a_conditional_delete_url_signs_its_generation_header() -> None:
    # GCS checks a signed URL's x-goog-* headers: the condition must be a signed header
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    url = signed_url(
        endpoint="https://storage.googleapis.com",
        bucket="media",
        name="a.txt",
        method="DELETE",
        expires_in=300,
        client_email="svc@p.iam.gserviceaccount.com",
        private_key=pem,
        headers={"x-goog-if-generation-match": "1767323045000000"},
        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    base, _, signature = url.partition("&X-Goog-Signature=")
    parts = urlsplit(base)
    assert parse_qs(parts.query)["X-Goog-SignedHeaders"] == ["host;x-goog-if-generation-match"]
    canonical = "\n".join(
        [
            "DELETE",
            "/media/a.txt",
            parts.query,
            "host:storage.googleapis.com\nx-goog-if-generation-match:1767323045000000\n",
            "host;x-goog-if-generation-match",
            "UNSIGNED-PAYLOAD",
        ]
    )
    to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            "20260102T030405Z",
            "20260102/auto/storage/goog4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key.public_key().verify(
        bytes.fromhex(signature), to_sign.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
