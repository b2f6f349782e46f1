"""A real uvicorn server on a free loopback port, and the storage it serves from.

The server runs in a thread with its own event loop. Apps that use the shared backend
(the example service) build it from ``STORAGE_*`` set here, inside the server's loop,
and close it there at shutdown; tests look at the same storage through their own backend
instance (an S3 client belongs to the loop that opened it, so none is shared).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from file_storage import LocalStorageBackend, StorageBackend
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET

SIGNING_KEY = "integration-signing-key-0123456789abcdef"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

Serve = Callable[[FastAPI], str]


class _Server(uvicorn.Server):
    """uvicorn.Server that says when it is listening, through an event a test can wait on."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()


class LiveServer:
    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        # log_config=None: leave logging alone (caplog sees uvicorn's records)
        config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=5)
        self.server = _Server(config)
        self.sock = sock
        self.exit_code: str | int | None = None
        self.thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except SystemExit as exc:  # uvicorn exits when start-up fails (e.g. the lifespan raised)
            self.exit_code = exc.code

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.ready.wait(0.05):
            if not self.thread.is_alive():
                raise RuntimeError(
                    f"the test server failed to start, exit code {self.exit_code} (see the log)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the test server did not start in {START_TIMEOUT} s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT)
        if self.thread.is_alive():
            raise TimeoutError(f"the test server did not stop in {STOP_TIMEOUT} s")


@pytest.fixture
def listen_socket() -> Iterator[socket.socket]:
    """A socket bound to a free loopback port, before any app is built (apps need the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def base_url(listen_socket: socket.socket) -> str:
    host, port = listen_socket.getsockname()
    return f"http://{host}:{port}"


@pytest.fixture
def serve(listen_socket: socket.socket, base_url: str) -> Iterator[Serve]:
    """``serve(app)`` starts a real uvicorn on ``base_url`` and returns it; stopped at teardown."""
    servers: list[LiveServer] = []

    def start(app: FastAPI) -> str:
        server = LiveServer(app, listen_socket)
        servers.append(server)
        server.start()
        return base_url

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: never send loopback traffic through a proxy from the environment
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=60) as http:
        yield http


@pytest.fixture
def local_storage(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base_url: str
) -> LocalStorageBackend:
    """STORAGE_* for a local backend with signed URLs at ``<base_url>/files``; a view on it."""
    root = tmp_path / "storage"
    monkeypatch.setenv("STORAGE_TYPE", "LOCAL")
    monkeypatch.setenv("STORAGE_LOCAL_PATH", str(root))
    monkeypatch.setenv("STORAGE_LOCAL_BASE_URL", f"{base_url}/files")
    monkeypatch.setenv("STORAGE_LOCAL_SIGNING_KEY", SIGNING_KEY)
    return LocalStorageBackend(root, base_url=f"{base_url}/files", signing_key=SIGNING_KEY)


@pytest.fixture
def s3_storage(
    monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, s3_bucket: str, s3_backend: StorageBackend
) -> StorageBackend:
    """STORAGE_* for the moto bucket of ``s3_backend``, which is the test's view on it."""
    monkeypatch.setenv("STORAGE_TYPE", "S3")
    monkeypatch.setenv("STORAGE_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("STORAGE_S3_PREFIX", "storage")  # the s3_backend fixture's prefix
    monkeypatch.setenv("STORAGE_S3_REGION", "us-east-1")
    monkeypatch.setenv("STORAGE_S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("STORAGE_S3_ADDRESSING_STYLE", "path")
    monkeypatch.setenv("STORAGE_S3_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("STORAGE_S3_SECRET_ACCESS_KEY", FAKE_SECRET)
    return s3_backend


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest) -> StorageBackend:
    """The environment for one backend (ids local, s3) and the test's view on its storage."""
    backend: StorageBackend = request.getfixturevalue(f"{request.param}_storage")
    return backend


def build_example_app() -> FastAPI:
    """A fresh example service, built from the STORAGE_* set by a storage fixture."""
    from examples.app import create_app  # imported late: building the module's app reads env

    return create_app()


@pytest.fixture
def example_app(storage: StorageBackend) -> FastAPI:
    """The example service on each backend (ids local, s3)."""
    return build_example_app()


@pytest.fixture
def local_example_app(local_storage: LocalStorageBackend) -> FastAPI:
    """The example service on the local backend only."""
    return build_example_app()
