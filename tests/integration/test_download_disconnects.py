"""Clients that leave mid-download, over raw sockets to a real uvicorn serving the local
backend through a presigned GET (the signed router, ``storage_response``): every file
descriptor the downloads opened is closed again, whether the client read the head,
nothing, or reset the connection."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from file_storage import LocalStorageBackend
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve

SIZE = 16 * 2**20  # 16 chunks: more than the socket buffers hold
ROUNDS = 20

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd"
)


@pytest.fixture
async def backend(tmp_path: Path, base_url: str) -> LocalStorageBackend:
    backend = LocalStorageBackend(
        tmp_path / "storage", base_url=f"{base_url}/files", signing_key=SIGNING_KEY
    )
    await backend.save("big.bin", os.urandom(SIZE))
    return backend


@pytest.fixture
def server(serve: Serve, backend: LocalStorageBackend) -> str:
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    return serve(app)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def leave(url: str, how: str) -> None:
    parts = urlsplit(url)
    head = f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(head.encode())
        if how == "after-the-head":
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        elif how == "reset":
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            # SO_LINGER with a zero timeout: close() sends RST, not FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("how", ["after-the-head", "at-once", "reset"])
async def test_clients_leaving_mid_download_leave_no_descriptor_open(
    server: str, client: httpx.AsyncClient, backend: LocalStorageBackend, how: str
) -> None:
    url = await backend.get_presigned_url("big.bin")
    # one whole download first: the server's pools and lazy imports are in place
    assert len((await client.get(url)).content) == SIZE
    await client.aclose()  # its keep-alive connection is a descriptor too
    before = open_descriptors()
    for _ in range(ROUNDS):
        await asyncio.to_thread(leave, url, how)
    deadline = time.monotonic() + 20
    while open_descriptors() > before:
        assert time.monotonic() < deadline, f"{open_descriptors() - before} descriptors left open"
        await asyncio.sleep(0.05)  # the server's own thread and loop: nothing to await
    # and the object is still served whole
    async with httpx.AsyncClient(trust_env=False) as again:
        assert len((await again.get(url)).content) == SIZE
