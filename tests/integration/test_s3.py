"""S3 only: presigned URLs for a public endpoint, the example's bucket CORS rule, S3 errors."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from fastapi import FastAPI, Request, Response

from file_storage import S3StorageBackend, StorageBackend, StorageSettings
from file_storage.fastapi import StorageDep, storage_lifespan, storage_response
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.integration.conftest import Serve, build_example_app

pytestmark = pytest.mark.s3


def make_backend(endpoint: str, bucket: str, public_endpoint: str) -> S3StorageBackend:
    return S3StorageBackend(
        bucket,
        prefix="storage",
        region="us-east-1",
        access_key_id=FAKE_KEY_ID,
        secret_access_key=FAKE_SECRET,
        endpoint_url=endpoint,
        public_endpoint_url=public_endpoint,
        addressing_style="path",
    )


def public_twin(moto_endpoint: str) -> str:
    """The same moto server under another host name, as a browser behind a proxy would see it."""
    port = urlsplit(moto_endpoint).port
    return f"http://localhost:{port}"


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A listening socket nobody accepts on: any connection attempt makes it readable."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock
    finally:
        sock.close()


async def test_presigned_urls_point_at_the_public_endpoint_and_work(
    moto_endpoint: str, s3_bucket: str
) -> None:
    public = public_twin(moto_endpoint)
    async with make_backend(moto_endpoint, s3_bucket, public) as backend:
        await backend.save("a/b.txt", b"hello")
        get_url = await backend.get_presigned_url("a/b.txt")
        put_url = await backend.get_presigned_url("a/c.txt", method="PUT")
        assert urlsplit(get_url).netloc == urlsplit(public).netloc
        assert urlsplit(put_url).netloc == urlsplit(public).netloc
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            got = await http.get(get_url)
            put = await http.put(put_url, content=b"from the browser")
        assert got.status_code == 200
        assert got.content == b"hello"
        assert put.status_code == 200
        assert await backend.load("a/c.txt") == b"from the browser"


async def test_signing_for_a_public_endpoint_makes_no_request_to_it(
    moto_endpoint: str, s3_bucket: str, silent_listener: socket.socket
) -> None:
    host, port = silent_listener.getsockname()
    public = f"http://{host}:{port}"
    async with make_backend(moto_endpoint, s3_bucket, public) as backend:
        url = await asyncio.wait_for(backend.get_presigned_url("k.txt", method="PUT"), 10)
    assert url.startswith(f"{public}/{s3_bucket}/storage/k.txt?")
    readable, _, _ = select.select([silent_listener], [], [], 0)
    assert readable == [], "signing connected to the public endpoint"


async def test_example_service_hands_out_public_endpoint_urls(
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    client: httpx.AsyncClient,
    s3_storage: StorageBackend,
    moto_endpoint: str,
) -> None:
    public = public_twin(moto_endpoint)
    monkeypatch.setenv("STORAGE_S3_PUBLIC_ENDPOINT_URL", public)
    monkeypatch.setenv("EXAMPLE_USER_QUOTA_BYTES", "0")  # under a quota S3 signs no PUT
    serve(build_example_app())
    presigned = (await client.post("/api/presign", json={"filename": "a.txt"})).json()
    assert presigned["url"].startswith(public + "/")
    put = await client.put(presigned["url"], content=b"via localhost")
    assert put.status_code == 200
    assert await s3_storage.load(presigned["key"]) == b"via localhost"


def bucket_cors(endpoint: str, bucket: str) -> list[dict[str, object]]:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
    )
    try:
        rules: list[dict[str, object]] = client.get_bucket_cors(Bucket=bucket)["CORSRules"]
        return rules
    finally:
        client.close()


async def test_example_sets_the_bucket_cors_rule_once(
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    client: httpx.AsyncClient,
    s3_storage: StorageBackend,
    moto_endpoint: str,
    s3_bucket: str,
) -> None:
    monkeypatch.setenv("EXAMPLE_SET_BUCKET_CORS", "1")
    monkeypatch.setenv("EXAMPLE_CORS_ORIGINS", "http://127.0.0.1:8000")
    serve(build_example_app())
    rules = bucket_cors(moto_endpoint, s3_bucket)
    assert len(rules) == 1
    assert rules[0]["AllowedOrigins"] == ["http://127.0.0.1:8000"]
    assert sorted(rules[0]["AllowedMethods"]) == ["GET", "HEAD", "POST", "PUT"]  # type: ignore[call-overload]

    from examples.app import add_bucket_cors

    await add_bucket_cors(StorageSettings(), ["http://127.0.0.1:8000"])
    assert len(bucket_cors(moto_endpoint, s3_bucket)) == 1  # not added twice


async def test_example_knows_its_cors_rule_in_another_shape(
    s3_storage: StorageBackend, moto_endpoint: str, s3_bucket: str
) -> None:
    # the rule as a server may hand it back: methods reordered, header case, an ID added
    client = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=FAKE_SECRET,
    )
    rule = {
        "ID": "from-the-console",
        "AllowedOrigins": ["http://127.0.0.1:8000"],
        "AllowedMethods": ["PUT", "POST", "HEAD", "GET"],
        "AllowedHeaders": ["*"],
    }
    try:
        client.put_bucket_cors(Bucket=s3_bucket, CORSConfiguration={"CORSRules": [rule]})
    finally:
        client.close()

    from examples.app import add_bucket_cors

    await add_bucket_cors(StorageSettings(), ["http://127.0.0.1:8000"])
    assert len(bucket_cors(moto_endpoint, s3_bucket)) == 1


async def test_bucket_gone_after_start_is_a_500_that_names_no_secret(
    serve: Serve,
    client: httpx.AsyncClient,
    s3_storage: StorageBackend,
    s3_bucket: str,
    raw: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a bucket missing at start-up fails the start (tests/integration/test_startup_check.py)
    serve(build_example_app())
    raw.delete_bucket(Bucket=s3_bucket)
    response = await client.get("/api/files")
    assert response.status_code == 500
    assert response.json() == {"detail": "storage error"}
    presign = await client.post("/api/presign", json={"filename": "a.txt"})
    assert FAKE_SECRET not in presign.text
    assert FAKE_SECRET not in caplog.text
    assert FAKE_KEY_ID not in caplog.text


def plain_download_app() -> FastAPI:
    """``storage_response`` with no options, on the shared backend of the server's loop."""
    app = FastAPI(lifespan=storage_lifespan)

    @app.get("/dl/{key:path}")
    async def download(key: str, request: Request, storage: StorageDep) -> Response:
        return await storage_response(storage, key, request)

    return app


async def test_stored_headers_that_are_no_header_values_are_not_sent_as_they_are(
    serve: Serve,
    client: httpx.AsyncClient,
    s3_storage: StorageBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a presigned PUT signed without a type lets the client send any Content-Type (and
    # other object headers), and S3 keeps their bytes as sent: here UTF-8, which a
    # response cannot carry (Starlette sends Latin-1). The object must still download.
    serve(plain_download_app())
    url = await s3_storage.get_presigned_url("odd.bin", method="PUT")
    sent = {
        "Content-Type": "text/plain; name=Отпуск".encode(),
        "Content-Disposition": 'attachment; filename="Отпуск.txt"'.encode(),
        "Cache-Control": "max-age=60, расширение".encode(),
    }
    async with httpx.AsyncClient(trust_env=False) as direct:
        assert (await direct.put(url, content=b"data", headers=sent)).status_code == 200
    response = await client.get("/dl/odd.bin")
    assert response.status_code == 200
    assert response.content == b"data"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == "attachment"
    assert "cache-control" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
