"""The signed router (local and memory, under quotas) against hostile uploads over a
real uvicorn: an upload past a prefix quota stops being read and stores nothing, and a
malformed request (sent raw, as no client would normalize it) is a clear 4xx that
stores and counts nothing and leaves no file in the local root."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from file_storage import LocalStorageBackend, MemoryStorageBackend, StorageBackend
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve

QUOTA = 10_000
WAIT = 10.0  # seconds: bounds every wait, none is a sleep


@pytest.fixture(params=["local", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, base_url: str) -> StorageBackend:
    signing = {"base_url": f"{base_url}/files", "signing_key": SIGNING_KEY}
    if request.param == "local":
        return LocalStorageBackend(tmp_path / "storage", max_size_bytes=QUOTA, **signing)
    return MemoryStorageBackend(max_size_bytes=QUOTA, **signing)


@pytest.fixture
def server(serve: Serve, backend: StorageBackend) -> str:
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    return serve(app)


def _form_head(fields: dict[str, str]) -> bytes:
    """The form's fields, then the head of its file part."""
    form = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (name.encode(), value.encode())
        for name, value in fields.items()
    )
    return form + b'--b\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 100):
        yield b"c" * 100


@pytest.mark.parametrize("upload", ["put", "form"])
@pytest.mark.parametrize("kind", ["local", "memory"])
async def test_router_stops_reading_an_upload_past_a_prefix_quota(
    tmp_path: Path, kind: str, upload: str
) -> None:
    signing = {"base_url": "http://test/files", "signing_key": SIGNING_KEY}
    backend: StorageBackend = (
        LocalStorageBackend(tmp_path / "storage", **signing)
        if kind == "local"
        else MemoryStorageBackend(**signing)
    )
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    put_url = await backend.get_presigned_url("in/k.bin", method="PUT")
    post = await backend.get_presigned_post("in/k.bin")  # signed before the quota: no cap
    backend.set_quota("in/", 64 * 1024)
    head, headers = b"", {}
    if upload == "form":
        head = _form_head(post.fields)
        headers = {"content-type": "multipart/form-data; boundary=b"}
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head
        for _ in range(10_000):  # 640 MiB if it were all read (and held back)
            sent += 1
            yield b"z" * 65536

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as asgi:
        path = urlsplit(put_url if upload == "put" else post.url)
        target = f"{path.path}?{path.query}" if upload == "put" else path.path
        method = "PUT" if upload == "put" else "POST"
        response = await asgi.request(method, target, content=body(), headers=headers)
    assert response.status_code == 413
    assert sent <= 3
    assert await backend.list_files() == []
    assert (await backend.get_usage("in/")).used == 0
    if isinstance(backend, LocalStorageBackend):  # no temp file in the root either
        assert [p for p in backend.root.rglob("*") if p.is_file()] == []
    await backend.aclose()


def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as is (no client normalizes its path) and read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=WAIT) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


HOSTILE = {
    "nul": (b"PUT", b"/files/a%00b?expires=1&signature=x", b""),
    "dot-dot": (b"PUT", b"/files/in/../k.bin?expires=1&signature=x", b""),
    "encoded-dot-dot": (b"PUT", b"/files/in/%2e%2e/k.bin?expires=1&signature=x", b""),
    "not-utf-8": (b"PUT", b"/files/%FF%FE?expires=1&signature=x", b""),
    "lone-surrogate": (b"PUT", b"/files/%ED%A0%80?expires=1&signature=x", b""),
    "long-key": (b"PUT", b"/files/" + b"a" * 5000 + b"?expires=1&signature=x", b""),
    "long-segment": (b"PUT", b"/files/" + b"a" * 300 + b"?expires=1&signature=x", b""),
    "huge-expiry": (b"PUT", b"/files/in/k.bin?expires=" + b"9" * 40 + b"&signature=ab", b""),
    "odd-query": (b"PUT", b"/files/in/k.bin?expires&signature&&=&%FF=%00", b""),
    "form-no-boundary": (b"POST", b"/files/in/k.bin", b"multipart/form-data"),
    "form-bad-boundary": (b"POST", b"/files/in/k.bin", b"multipart/form-data; boundary=\xff"),
    "form-not-a-form": (b"POST", b"/files/in/k.bin", b"multipart/form-data; boundary=b"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
async def test_malformed_upload_is_a_clear_4xx_and_stores_nothing(
    server: str, base_url: str, backend: StorageBackend, case: str
) -> None:
    method, target, content_type = HOSTILE[case]
    body = b"\xff" * 64
    request = b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (method, target, len(body))
    if content_type:
        request += b"Content-Type: %s\r\n" % content_type
    request += b"Connection: close\r\n\r\n" + body
    status, answer = await asyncio.to_thread(_raw, base_url, request)
    assert status in {400, 403}, answer
    assert await backend.list_files() == []
    assert (await backend.get_usage("")).used == 0
    if isinstance(backend, LocalStorageBackend):
        assert [p for p in backend.root.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    ("opening", "filler"),
    [
        # a header line that never ends, and header after header: python-multipart
        # refuses both from 0.0.27 on, the router itself whatever the version
        (b"--b\r\nX-Long: ", b"v" * 65536),
        (b"--b\r\n", b"X-Many: v\r\n" * 6000),
    ],
    ids=["endless_header", "endless_headers"],
)
async def test_router_stops_reading_a_form_whose_part_headers_never_end(
    opening: bytes, filler: bytes
) -> None:
    backend = MemoryStorageBackend(base_url="http://test/files", signing_key=SIGNING_KEY)
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    post = await backend.get_presigned_post("in/k.bin")
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield opening
        for _ in range(2_000):  # 128 MiB of headers if it were all read (and held)
            sent += 1
            yield filler

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as asgi:
        response = await asgi.post(
            urlsplit(post.url).path,
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
    assert response.status_code == 400
    assert sent <= 3
    assert await backend.list_files() == []
