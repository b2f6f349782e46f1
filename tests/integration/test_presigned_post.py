"""get_presigned_post over real HTTP: a browser-style form upload, capped in size.

S3 runs on moto, which stores a form upload but does not check its POST policy (no
signature, no content-length-range: moto/s3/responses.py, _bucket_response_post), so the
refusals are proven on the local backend's signed router; tests/backends/
test_presigned_post.py proves that the S3 policy carries the cap.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from file_storage import LocalStorageBackend, MemoryStorageBackend, StorageBackend
from file_storage._post_policy import sign_post
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve


@pytest.fixture
def server(serve: Serve, example_app: FastAPI) -> str:
    return serve(example_app)


@pytest.fixture
def local_server(serve: Serve, local_example_app: FastAPI) -> str:
    return serve(local_example_app)


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def _post(
    client: httpx.AsyncClient, url: str, fields: dict[str, str], data: bytes
) -> httpx.Response:
    return await client.post(
        url, data=fields, files={"file": ("upload.bin", data, "application/octet-stream")}
    )


async def test_form_upload_lands_with_the_signed_content_type(
    server: str, client: httpx.AsyncClient, storage: StorageBackend
) -> None:
    post = await storage.get_presigned_post("in/report.csv", max_bytes=1000, expires_in=60)
    response = await _post(client, post.url, post.fields, b"a,b\n1,2\n")
    assert response.status_code == 204, response.text
    assert await storage.load("in/report.csv") == b"a,b\n1,2\n"
    assert (await storage.stat("in/report.csv")).content_type == "text/csv"


async def test_form_upload_over_the_cap_is_refused_and_stores_nothing(
    local_server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend
) -> None:
    post = await local_storage.get_presigned_post("in/big.bin", max_bytes=100_000)
    response = await _post(client, post.url, post.fields, os.urandom(100_001))
    assert response.status_code == 413
    assert "100000 bytes" in response.json()["detail"]
    assert not await local_storage.exists("in/big.bin")
    assert _leftovers(local_storage.root) == []
    exact = await _post(client, post.url, post.fields, b"x" * 100_000)
    assert exact.status_code == 204
    assert await local_storage.get_size("in/big.bin") == 100_000


async def test_form_upload_over_the_quota_left_when_signed_is_refused(
    local_server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend
) -> None:
    await local_storage.save("old.bin", b"x" * 600)
    local_storage.set_quota("", 1000)  # this view signs; the cap travels in the form
    post = await local_storage.get_presigned_post("in/new.bin")
    assert post.fields["max_bytes"] == "400"
    refused = await _post(client, post.url, post.fields, b"y" * 401)
    assert refused.status_code == 413
    assert not await local_storage.exists("in/new.bin")
    assert (await _post(client, post.url, post.fields, b"y" * 400)).status_code == 204


@pytest.mark.parametrize(
    "change",
    [
        {"max_bytes": "999999"},
        {"max_bytes": ""},
        {"content_type": "text/html"},
        {"signature": "0" * 64},
        {"expires": "99999999999"},
    ],
)
async def test_tampered_form_is_forbidden(
    local_server: str,
    client: httpx.AsyncClient,
    local_storage: LocalStorageBackend,
    change: dict[str, str],
) -> None:
    post = await local_storage.get_presigned_post("in/a.txt", max_bytes=10)
    response = await _post(client, post.url, {**post.fields, **change}, b"hello")
    assert response.status_code == 403
    assert not await local_storage.exists("in/a.txt")


async def test_form_for_another_key_is_forbidden(
    local_server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend
) -> None:
    post = await local_storage.get_presigned_post("in/a.txt")
    other = post.url.replace("in/a.txt", "in/b.txt")
    assert (await _post(client, other, post.fields, b"hello")).status_code == 403
    assert not await local_storage.exists("in/b.txt")


async def test_expired_form_is_forbidden(
    local_server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend
) -> None:
    base = f"{local_server}/files"
    bound = await local_storage._signing_binding()
    post = sign_post(
        base, "in/a.txt", 1, None, "text/plain", SIGNING_KEY, bound=bound, now=time.time() - 60
    )
    response = await _post(client, post.url, post.fields, b"hello")
    assert response.status_code == 403
    assert response.json() == {"detail": "the signed form has expired"}


async def test_form_valid_for_longer_than_any_presign_is_forbidden(
    local_server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend
) -> None:
    # signed by a clock 30 days ahead: valid for a month, past the 7 days a form may live
    base = f"{local_server}/files"
    ahead = time.time() + 30 * 86400
    bound = await local_storage._signing_binding()
    post = sign_post(
        base, "in/a.txt", 3600, None, "text/plain", SIGNING_KEY, bound=bound, now=ahead
    )
    response = await _post(client, post.url, post.fields, b"hello")
    assert response.status_code == 403
    assert response.json() == {"detail": "the signed form expires later than any form may"}
    assert not await local_storage.exists("in/a.txt")


async def test_form_without_a_file_is_a_bad_request(
    local_server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend
) -> None:
    post = await local_storage.get_presigned_post("in/a.txt")
    response = await client.post(post.url, data=post.fields, files={"other": ("x", b"1")})
    assert response.status_code == 400
    not_a_form = await client.post(post.url, content=b"hello")
    assert not_a_form.status_code == 400
    assert not await local_storage.exists("in/a.txt")


async def test_router_stops_reading_the_body_past_the_cap(tmp_path: Path) -> None:
    backend = LocalStorageBackend(
        tmp_path / "s", base_url="http://test/files", signing_key=SIGNING_KEY
    )
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    post = await backend.get_presigned_post("in/a.bin", max_bytes=64 * 1024)
    boundary = "form-boundary-1234"
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in post.fields.items()
    )
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head.encode()
        for _ in range(10_000):  # 640 MiB if it were all read
            sent += 1
            yield b"z" * 65536

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as asgi:
        response = await asgi.post(
            "/files/in/a.bin",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 413
    assert sent <= 3
    assert not await backend.exists("in/a.bin")
    await backend.aclose()


@pytest.fixture
def memory_server(serve: Serve, base_url: str) -> MemoryStorageBackend:
    """A memory backend that signs for the signed router of a real uvicorn."""
    backend = MemoryStorageBackend(base_url=f"{base_url}/files", signing_key=SIGNING_KEY)
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    serve(app)
    return backend


async def test_memory_form_upload_lands_through_the_signed_router(
    memory_server: MemoryStorageBackend, client: httpx.AsyncClient
) -> None:
    post = await memory_server.get_presigned_post("in/report.csv", max_bytes=1000)
    response = await _post(client, post.url, post.fields, b"a,b\n1,2\n")
    assert response.status_code == 204, response.text
    assert await memory_server.load("in/report.csv") == b"a,b\n1,2\n"
    assert (await memory_server.stat("in/report.csv")).content_type == "text/csv"


async def test_memory_form_upload_over_the_quota_left_is_refused(
    memory_server: MemoryStorageBackend, client: httpx.AsyncClient
) -> None:
    await memory_server.save("u/old.bin", b"x" * 600)
    memory_server.set_quota("u", 1000)
    post = await memory_server.get_presigned_post("u/new.bin", max_bytes=5000)
    assert post.fields["max_bytes"] == "400"
    refused = await _post(client, post.url, post.fields, b"y" * 401)
    assert refused.status_code == 413
    assert await memory_server.list_files() == ["u/old.bin"]
    assert (await _post(client, post.url, post.fields, b"y" * 400)).status_code == 204
    assert (await memory_server.get_usage("u")).used == 1000


def _asgi_form_app(tmp_path: Path) -> tuple[LocalStorageBackend, FastAPI]:
    backend = LocalStorageBackend(
        tmp_path / "s", base_url="http://test/files", signing_key=SIGNING_KEY
    )
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    return backend, app


@pytest.mark.parametrize(
    ("head", "filler"),
    [
        # one endless header value, then endless header lines: no signature checked yet
        ('--b\r\nContent-Disposition: form-data; name="x"; filename="', b"z" * 65536),
        ('--b\r\nContent-Disposition: form-data; name="x"\r\n', b"X: " + b"z" * 65531 + b"\r\n"),
        # endless small fields of one name: MAX_FIELDS counts parts, not distinct names
        ("", b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n' + b"z" * 8000 + b"\r\n"),
    ],
)
async def test_router_stops_reading_endless_form_headers_and_fields_before_the_signature(
    tmp_path: Path, head: str, filler: bytes
) -> None:
    backend, app = _asgi_form_app(tmp_path)
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head.encode()
        for _ in range(10_000):  # hundreds of MiB if it were all read
            sent += 1
            yield filler

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as asgi:
        response = await asgi.post(
            "/files/in/a.bin",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 400
    assert sent <= 64
    assert not await backend.exists("in/a.bin")
    await backend.aclose()


async def test_form_with_an_overlong_boundary_is_400_not_a_server_error(
    local_server: str,
    client: httpx.AsyncClient,
    local_storage: LocalStorageBackend,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # RFC 2046 caps a boundary at 70 characters; the multipart parser refuses one over 256
    post = await local_storage.get_presigned_post("in/a.txt", max_bytes=1000)
    boundary = "b" * 300
    body = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in post.fields.items()
    )
    body += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
    body += f"hi\r\n--{boundary}--\r\n"
    response = await client.post(
        post.url,
        content=body.encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "malformed multipart/form-data body"}
    assert not await local_storage.exists("in/a.txt")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
