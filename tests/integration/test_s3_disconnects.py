"""Clients that leave mid-download, 200 times, over raw sockets to a real uvicorn serving
an S3 backend (through ``storage_response``) whose pool holds two connections: every
stream gives its connection back, so the next download is served whole, and the server
is left with no more tasks and descriptors than before."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from file_storage import StorageBackend
from file_storage.fastapi import storage_response
from tests.integration.conftest import Serve
from tests.s3util import s3_backends

pytestmark = [
    pytest.mark.s3,
    pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd"),
]

SIZE = 8 * 2**20  # more than the socket buffers hold: each stream is cut mid-way
ROUNDS = 200
POOL = 2  # connections to the S3 server the backend keeps


@pytest.fixture(params=["aioboto3", "obstore"])
async def backend(
    request: pytest.FixtureRequest, moto_endpoint: str, s3_bucket: str
) -> AsyncIterator[StorageBackend]:
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        backend: StorageBackend = make(
            prefix="storage", client=request.param, max_pool_connections=POOL, connect_timeout=2
        )
        await backend.save("big.bin", os.urandom(SIZE))
        yield backend


@pytest.fixture
def server(serve: Serve, backend: StorageBackend) -> str:
    app = FastAPI()

    @app.get("/tasks")
    async def tasks() -> int:
        return len(asyncio.all_tasks())

    @app.get("/objects/{key:path}")
    async def download(key: str, request: Request) -> Response:
        return await storage_response(backend, key, request)

    return serve(app)


def open_descriptors(port: int) -> tuple[int, int]:
    """This process's sockets but the S3 server's at ``port`` (moto serves
    in a thread of this process) and the connections to it, and those connections: the
    pool keeps up to ``POOL`` open between requests, as many as the downloads overlapping
    last needed, whatever it held when the count began."""
    to_server, of_server = set(), set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                inode = f"socket:[{fields[9]}]"
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    to_server.add(inode)
                elif int(fields[1].rsplit(":", 1)[1], 16) == port:
                    of_server.add(inode)
    others = pooled = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # (the listing's own descriptor, closed since)
        if target in to_server:
            pooled += 1
        elif target not in of_server and target.startswith("socket:"):
            others += 1  # (files and pipes: other tests' leftovers, not this server's)
    return others, pooled


def leave_after_the_head(url: str) -> None:
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")


async def settled(client: httpx.AsyncClient, tasks: int, descriptors: int, port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        others, pooled = open_descriptors(port)
        now = (int((await client.get("/tasks")).json()), others)
        if now <= (tasks, descriptors) and pooled <= POOL:
            return
        assert time.monotonic() < deadline, (
            f"tasks, descriptors, pooled: {(*now, pooled)}, were {tasks, descriptors}"
        )
        await asyncio.sleep(0.05)  # the server's own thread and loop: nothing to await


async def test_clients_leaving_mid_download_give_every_connection_back(
    server: str, client: httpx.AsyncClient, moto_endpoint: str
) -> None:
    port = urlsplit(moto_endpoint).port
    assert port is not None
    # one whole download first: the pool, the server's lazy imports are in place
    assert len((await client.get("/objects/big.bin")).content) == SIZE
    tasks = int((await client.get("/tasks")).json())
    descriptors, _ = open_descriptors(port)
    for _ in range(ROUNDS):
        await asyncio.to_thread(leave_after_the_head, f"{server}/objects/big.bin")
    # the next download is served whole, not stuck waiting for a pooled connection
    response = await asyncio.wait_for(client.get("/objects/big.bin"), 60)
    assert response.status_code == 200
    assert len(response.content) == SIZE
    await settled(client, tasks, descriptors, port)
