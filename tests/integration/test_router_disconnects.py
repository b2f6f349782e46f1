"""Clients that leave mid-upload, over a raw socket to a real uvicorn: the signed router
on the local backend (with a quota) stores nothing, leaves no temp file, counts nothing."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from file_storage import LocalStorageBackend
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve

QUOTA = 1000
LEFT = "the client left before sending the whole"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def backend(root: Path, base_url: str) -> LocalStorageBackend:
    return LocalStorageBackend(
        root, base_url=f"{base_url}/files", signing_key=SIGNING_KEY, max_size_bytes=QUOTA
    )


@pytest.fixture
def server(serve: Serve, backend: LocalStorageBackend) -> str:
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    return serve(app)


def send_and_leave(base_url: str, head: str, body: bytes) -> None:
    """Send a request's head and part of its body, then close the connection."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(head.encode() + body)


async def wait_for_the_router_to_notice(caplog: pytest.LogCaptureFixture) -> None:
    deadline = time.monotonic() + 10
    while not any(LEFT in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the router never saw the client leave"
        await asyncio.sleep(0.01)  # the server's own thread and loop: nothing to await


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def request_head(method: str, url: str, headers: dict[str, str]) -> str:
    parts = urlsplit(url)
    lines = [f"{method} {parts.path}?{parts.query} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


async def assert_nothing_stored_nor_counted(
    client: httpx.AsyncClient, backend: LocalStorageBackend, root: Path
) -> None:
    assert await backend.list_files() == []
    assert stored_files(root) == []  # no temp file either
    assert (await backend.get_usage("")).used == 0
    # the whole quota is still there to use
    url = await backend.get_presigned_url("in/full.bin", method="PUT")
    assert (await client.put(url, content=b"f" * QUOTA)).status_code == 200


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Content-Length": str(QUOTA)}, b"x" * 600),
        ({"Transfer-Encoding": "chunked"}, b"258\r\n" + b"x" * 600 + b"\r\n"),
    ],
    ids=["shorter-than-declared", "chunked"],
)
async def test_put_left_mid_body_stores_and_counts_nothing(
    server: str,
    client: httpx.AsyncClient,
    backend: LocalStorageBackend,
    root: Path,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    body: bytes,
) -> None:
    caplog.set_level(logging.INFO, logger="file_storage.fastapi")
    url = await backend.get_presigned_url("in/a.bin", method="PUT")
    send_and_leave(server, request_head("PUT", url, headers), body)
    await wait_for_the_router_to_notice(caplog)
    await assert_nothing_stored_nor_counted(client, backend, root)


async def test_form_left_mid_file_stores_and_counts_nothing(
    server: str,
    client: httpx.AsyncClient,
    backend: LocalStorageBackend,
    root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="file_storage.fastapi")
    post = await backend.get_presigned_post("in/b.bin", max_bytes=QUOTA)
    form = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (name.encode(), value.encode())
        for name, value in post.fields.items()
    )
    form += b'--b\r\nContent-Disposition: form-data; name="file"; filename="b.bin"\r\n\r\n'
    headers = {
        "Content-Type": "multipart/form-data; boundary=b",
        "Content-Length": str(len(form) + QUOTA),
    }
    send_and_leave(server, request_head("POST", post.url + "?", headers), form + b"y" * 600)
    await wait_for_the_router_to_notice(caplog)
    await assert_nothing_stored_nor_counted(client, backend, root)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
async def test_many_clients_leaving_mid_upload_leave_no_descriptor_task_nor_file(
    serve: Serve, client: httpx.AsyncClient, backend: LocalStorageBackend, root: Path
) -> None:
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")

    @app.get("/tasks")
    async def tasks() -> int:
        return len(asyncio.all_tasks())

    server = serve(app)
    url = await backend.get_presigned_url("in/a.bin", method="PUT")
    head = request_head("PUT", url, {"Content-Length": str(QUOTA)})
    send_and_leave(server, head, b"x" * 600)  # the server's lazy imports are in place
    for _ in range(2):
        await client.get("/tasks")  # its keep-alive connection is open
    before = (int((await client.get("/tasks")).json()), len(os.listdir("/proc/self/fd")))
    for _ in range(200):
        await asyncio.to_thread(send_and_leave, server, head, b"x" * 600)
    deadline = time.monotonic() + 30
    while True:
        now = (int((await client.get("/tasks")).json()), len(os.listdir("/proc/self/fd")))
        if now <= before:
            break
        assert time.monotonic() < deadline, f"tasks, descriptors: {now}, were {before}"
        await asyncio.sleep(0.05)  # the server's own thread and loop: nothing to await
    await assert_nothing_stored_nor_counted(client, backend, root)
