"""What only the Azure backend has: SAS URLs checked by Azurite, metadata names, settings."""

from __future__ import annotations

import time
import traceback
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from file_storage import (
    AzureStorageBackend,
    StorageConfigError,
    StoragePermissionError,
    StorageSettings,
    StorageUnavailableError,
    create_storage_backend,
)
from file_storage.backends.azure import EMULATOR_ACCOUNT, EMULATOR_KEY
from file_storage.backends.azure._sas import service_sas_url

pytestmark = pytest.mark.azure

# the same length and alphabet as a real account key, but not the emulator's
WRONG_KEY = "A" * 86 + "=="


@pytest.fixture
def container(azurite: Any) -> Any:
    name = f"test-{uuid.uuid4().hex[:20]}"
    azurite.create_container(name)
    yield name
    azurite.delete_container(name)


@pytest.fixture
def backend(azure_backend: AzureStorageBackend) -> AzureStorageBackend:
    return azure_backend


@pytest.mark.parametrize("key", ["doc.txt", "a b/é ü.txt", "x[1]+y=z&w.txt"])
async def test_presigned_get_is_accepted_by_azurite_for_any_key(
    backend: AzureStorageBackend, key: str
) -> None:
    await backend.save(key, b"signed body")
    url = await backend.get_presigned_url(key, expires_in=60)
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == b"signed body"


async def test_presigned_put_uploads_a_block_blob(backend: AzureStorageBackend) -> None:
    url = await backend.get_presigned_url("up/new é.txt", method="PUT")
    async with httpx.AsyncClient() as http:
        response = await http.put(url, content=b"uploaded", headers={"x-ms-blob-type": "BlockBlob"})
    assert response.status_code == 201
    assert await backend.load("up/new é.txt") == b"uploaded"


async def test_presigned_get_url_cannot_write(backend: AzureStorageBackend) -> None:
    url = await backend.get_presigned_url("r.txt")
    async with httpx.AsyncClient() as http:
        response = await http.put(url, content=b"x", headers={"x-ms-blob-type": "BlockBlob"})
    assert response.status_code == 403
    assert not await backend.exists("r.txt")


async def test_expired_sas_is_refused(backend: AzureStorageBackend, azurite: Any) -> None:
    await backend.save("old.txt", b"x")
    url = service_sas_url(
        endpoint=azurite.endpoint,
        account=EMULATOR_ACCOUNT,
        account_key=EMULATOR_KEY,
        container=backend._container,
        name="storage/old.txt",
        method="GET",
        expires_in=60,
        now=datetime.now(UTC) - timedelta(hours=1),
    )
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 403


async def test_metadata_names_that_are_no_identifiers_round_trip(
    backend: AzureStorageBackend,
) -> None:
    metadata = {"my-name": "a", "fs_looks_encoded": "b", "x.y~z": "c", "_ok": "d", "1st": "e"}
    await backend.save("m.txt", b"x", metadata=metadata)
    assert (await backend.stat("m.txt")).metadata == metadata


async def test_connection_string_reaches_the_emulator(azurite: Any, container: str) -> None:
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName={EMULATOR_ACCOUNT};"
        f"AccountKey={EMULATOR_KEY};BlobEndpoint={azurite.endpoint};"
    )
    settings = StorageSettings(
        type="azure", azure={"container": container, "connection_string": connection}
    )
    backend = create_storage_backend(settings)
    assert isinstance(backend, AzureStorageBackend)
    await backend.save("c.txt", b"via connection string")
    assert await backend.load("c.txt") == b"via connection string"
    await backend.aclose()


PASSWORD = "pAsSwOrD-in-an-endpoint-never-printed"


@pytest.mark.parametrize(
    ("connection", "named"),
    [
        (
            f"BlobEndpoint=http://user:{PASSWORD}@127.0.0.1:10000/;AccountName=acct;"
            f"AccountKey={EMULATOR_KEY}",
            "BlobEndpoint",
        ),
        (
            f"BlobEndpoint=https://acct.blob.core.windows.net/?sig={PASSWORD};"
            f"AccountName=acct;AccountKey={EMULATOR_KEY}",
            "BlobEndpoint",
        ),
        (
            f"BlobEndpoint=ftp://127.0.0.1/{PASSWORD};AccountName=acct;AccountKey={EMULATOR_KEY}",
            "BlobEndpoint",
        ),
        (
            f"BlobEndpoint=http://127.0.0.1:99999/{PASSWORD};AccountName=acct;"
            f"AccountKey={EMULATOR_KEY}",
            "BlobEndpoint",
        ),
        (
            f"DefaultEndpointsProtocol=gopher;AccountName=acct;AccountKey={EMULATOR_KEY};"
            f"EndpointSuffix={PASSWORD}.example",
            "EndpointSuffix",
        ),
    ],
    ids=["credentials", "query", "scheme", "port", "suffix"],
)
def test_a_connection_string_endpoint_is_checked_like_the_endpoint_setting(
    connection: str, named: str
) -> None:
    # a BlobEndpoint with credentials was kept, shown by repr() and by the chained errors
    # of every request; a bad one failed only at the first request
    settings = StorageSettings(
        type="azure", azure={"container": "media", "connection_string": connection}
    )
    with pytest.raises(StorageConfigError, match=named) as info:
        create_storage_backend(settings)
    assert PASSWORD not in "".join(traceback.format_exception(info.value))
    with pytest.raises(StorageConfigError, match=named):
        AzureStorageBackend("media", connection_string=connection)


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{PASSWORD}@127.0.0.1:10000/acct",
        f"http://127.0.0.1:10000/acct?sig={PASSWORD}",
        f"ftp://127.0.0.1/{PASSWORD}",
        f"http://127.0.0.1:{PASSWORD}/acct",
        "http://127.0.0.1:99999/acct",
        f"http://127.0.0.1:10000/{PASSWORD}\n",
    ],
    ids=["credentials", "query", "scheme", "port", "port-range", "newline"],
)
def test_gcs_and_azure_constructors_check_the_endpoint_url(url: str) -> None:
    # as the settings do: code that builds a backend itself gets the same checks
    from file_storage import GCSStorageBackend

    for build in (
        lambda: AzureStorageBackend("media", account="acct", endpoint_url=url),
        lambda: GCSStorageBackend("media", endpoint_url=url),
    ):
        with pytest.raises(StorageConfigError, match="endpoint_url") as info:
            build()
        assert PASSWORD not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize(
    "build",
    [
        lambda key: create_storage_backend(
            StorageSettings(
                type="azure", azure={"account": "acct", "container": "media", "access_key": key}
            )
        ),
        lambda key: AzureStorageBackend("media", account="acct", access_key=key),
        lambda key: AzureStorageBackend(
            "media", connection_string=f"AccountName=acct;AccountKey={key}"
        ),
    ],
    ids=["settings", "constructor", "connection-string"],
)
def test_an_account_key_that_is_not_base64_fails_when_the_backend_is_built(build: Any) -> None:
    # it failed every request as a bare StorageError ("Azure request failed")
    key = f"{PASSWORD}!not base64"
    with pytest.raises(StorageConfigError, match="base64") as info:
        build(key)
    assert "STORAGE_AZURE_ACCESS_KEY" in str(info.value) or "AccountKey" in str(info.value)
    assert PASSWORD not in "".join(traceback.format_exception(info.value))


async def test_missing_container_raises_config_error(azurite: Any) -> None:
    backend = AzureStorageBackend(
        "no-such-container",
        account=EMULATOR_ACCOUNT,
        access_key=EMULATOR_KEY,
        endpoint_url=azurite.endpoint,
    )
    with pytest.raises(StorageConfigError) as info:
        await backend.save("a.txt", b"x")
    assert (info.value.operation, info.value.key) == ("save", "a.txt")
    assert "does not exist" in str(info.value)


async def test_wrong_key_raises_permission_error_without_secrets(
    azurite: Any, container: str
) -> None:
    backend = AzureStorageBackend(
        container, account=EMULATOR_ACCOUNT, access_key=WRONG_KEY, endpoint_url=azurite.endpoint
    )
    with pytest.raises(StoragePermissionError) as info:
        await backend.load("a.txt")
    assert info.value.__cause__ is not None
    for text in (str(info.value), repr(info.value), repr(backend)):
        assert WRONG_KEY not in text
        assert "http" not in str(info.value)  # no URL (a SAS would carry its signature)


def test_settings_build_the_backend_with_quota() -> None:
    settings = StorageSettings(
        type="AZURE",
        azure={
            "account": "acct",
            "container": "media",
            "prefix": "app",
            "access_key": EMULATOR_KEY,
            "max_size_gb": 0.5,
        },
    )
    backend = create_storage_backend(settings)
    assert isinstance(backend, AzureStorageBackend)
    assert backend.max_size_bytes == 500_000_000
    assert EMULATOR_KEY not in repr(backend)
    assert "media" in repr(backend)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STORAGE_TYPE": "AZURE", "STORAGE_AZURE_ACCOUNT": "acct"}, "STORAGE_AZURE_CONTAINER"),
        ({"STORAGE_TYPE": "AZURE", "STORAGE_AZURE_CONTAINER": "media"}, "STORAGE_AZURE_ACCOUNT"),
        ({"STORAGE_AZURE_CONTAINER": "Bad_Name"}, "STORAGE_AZURE_CONTAINER"),
        ({"STORAGE_AZURE_ACCOUNT": "no-dashes"}, "STORAGE_AZURE_ACCOUNT"),
        ({"STORAGE_AZURE_ENDPOINT_URL": "ftp://x"}, "STORAGE_AZURE_ENDPOINT_URL"),
        (
            {"STORAGE_AZURE_ACCESS_KEY": "k", "STORAGE_AZURE_CONNECTION_STRING": "AccountName=a"},
            "STORAGE_AZURE_ACCESS_KEY and STORAGE_AZURE_CONNECTION_STRING",
        ),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StorageConfigError, match=named):
        StorageSettings()


async def test_unreachable_server_raises_unavailable_quickly() -> None:
    from tests.gcs_emulator import free_port

    backend = AzureStorageBackend(
        "media",
        account=EMULATOR_ACCOUNT,
        access_key=EMULATOR_KEY,
        endpoint_url=f"http://127.0.0.1:{free_port()}/{EMULATOR_ACCOUNT}",  # nothing listens
    )
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError) as info:
        await backend.load("a.txt")
    assert time.monotonic() - started < 30
    assert (info.value.operation, info.value.key) == ("load", "a.txt")


async def test_presigned_get_sets_the_response_type_and_file_name(
    backend: AzureStorageBackend,
) -> None:
    await backend.save("r/report.bin", b"%PDF", content_type="application/octet-stream")
    url = await backend.get_presigned_url(
        "r/report.bin", content_type="application/pdf", filename="Отчёт 1.pdf"
    )
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82%201.pdf" in disposition
    # the overrides are signed: changing one voids the URL
    tampered = url.replace("rsct=application%2Fpdf", "rsct=text%2Fhtml")
    async with httpx.AsyncClient() as http:
        assert (await http.get(tampered)).status_code == 403


async def test_presigned_put_stores_the_content_type_the_uploader_sends(
    backend: AzureStorageBackend,
) -> None:
    url = await backend.get_presigned_url("up/a.csv", method="PUT", content_type="text/csv")
    async with httpx.AsyncClient() as http:
        response = await http.put(
            url,
            content=b"a,b",
            headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "text/csv"},
        )
    assert response.status_code == 201
    assert (await backend.stat("up/a.csv")).content_type == "text/csv"


async def test_public_url_joins_the_base_and_the_key(azurite: Any, container: str) -> None:
    backend = AzureStorageBackend(
        container,
        account=EMULATOR_ACCOUNT,
        access_key=EMULATOR_KEY,
        endpoint_url=azurite.endpoint,
        public_base_url="https://cdn.example.com/files",
    )
    assert backend.get_public_url("a b/é.txt") == "https://cdn.example.com/files/a%20b/%C3%A9.txt"


def test_public_base_url_setting_reaches_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "azure")
    monkeypatch.setenv("STORAGE_AZURE_ACCOUNT", "media")
    monkeypatch.setenv("STORAGE_AZURE_CONTAINER", "files")
    monkeypatch.setenv("STORAGE_AZURE_PUBLIC_BASE_URL", "https://cdn.example.com/")
    backend = create_storage_backend()
    assert backend.get_public_url("x.txt") == "https://cdn.example.com/x.txt"


async def test_blobs_of_other_tools_too_long_for_a_key_under_the_prefix_are_not_listed(
    backend: AzureStorageBackend,
) -> None:
    # Azure counts a blob name's 1024 in characters: another tool can store
    # "storage/" + 1019 bytes of "é", which is no key of this backend (1027 bytes)
    obs, store = backend._store()
    too_long = "/".join(["\u00e9" * 127] * 4)
    await obs.put_async(store, too_long, b"x")
    await backend.save("ok.txt", b"y")
    assert await backend.list_files() == ["ok.txt"]
    assert [info.key async for info in backend.iter_files()] == ["ok.txt"]
    for key in await backend.list_files():
        assert await backend.load(key) == b"y"  # every listed key is a key


async def test_a_key_over_azures_254_path_segments_with_the_prefix_is_an_invalid_key(
    backend: AzureStorageBackend,
) -> None:
    # Azure: "The number of path segments comprising the blob name cannot exceed 254"
    # (Azurite does not check): with the prefix "storage", a key holds at most 253
    from file_storage import InvalidKeyError

    fits = "/".join(["s"] * 253)
    too_deep = "/".join(["s"] * 254)
    with pytest.raises(InvalidKeyError) as info:
        await backend.save(too_deep, b"x")
    assert (info.value.operation, info.value.key) == ("save", too_deep)
    assert await backend.save(fits, b"x") == fits
    assert await backend.list_files() == [fits]


@pytest.mark.parametrize("key", ["u1.", "twins/u1..", "dots/...", "a/b.", "u1./x", ".../x"])
async def test_a_key_with_a_segment_ending_in_a_dot_is_an_invalid_key(
    backend: AzureStorageBackend, key: str
) -> None:
    # Azure's naming rules: "Avoid blob names that end with a dot"; the service and its
    # SDKs drop the dot, so "u1." would be the blob "u1" (Azurite keeps it); a folder's
    # trailing dot is refused as well
    from file_storage import InvalidKeyError

    await backend.save("u1", b"neighbour")
    with pytest.raises(InvalidKeyError) as info:
        await backend.save(key, b"x")
    assert (info.value.operation, info.value.key) == ("save", key)
    with pytest.raises(InvalidKeyError) as info:
        await backend.copy("u1", key)
    assert (info.value.operation, info.value.key) == ("copy", key)
    assert await backend.load("u1") == b"neighbour"
    assert await backend.list_files() == ["u1"]
