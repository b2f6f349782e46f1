"""file_storage.fastapi as a module: imports, the dependency and the lifespan."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest
from fastapi import APIRouter, FastAPI

import file_storage.fastapi
from file_storage import LocalStorageBackend, factory
from file_storage.fastapi import StorageDep, signed_url_router, storage_lifespan
from tests.integration.conftest import LiveServer


def test_import_file_storage_does_not_import_fastapi() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import file_storage, sys; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert not {"fastapi", "starlette", "file_storage.fastapi"} & set(out)


def test_public_names_are_sorted_and_present() -> None:
    names = file_storage.fastapi.__all__
    assert names == sorted(names)
    assert all(hasattr(file_storage.fastapi, name) for name in names)
    assert isinstance(signed_url_router, APIRouter)


def lifespan_app() -> FastAPI:
    app = FastAPI(lifespan=storage_lifespan)

    @app.get("/kind")
    async def kind(storage: StorageDep) -> str:
        return type(storage).__name__

    return app


async def test_lifespan_builds_the_shared_backend_and_closes_it_at_shutdown(
    local_storage: LocalStorageBackend, listen_socket: socket.socket, base_url: str
) -> None:
    server = LiveServer(lifespan_app(), listen_socket)
    server.start()
    try:
        assert factory._backend is not None  # built at start-up, before any request
        async with httpx.AsyncClient(base_url=base_url, trust_env=False) as http:
            assert (await http.get("/kind")).json() == "LocalStorageBackend"
    finally:
        server.stop()
    assert factory._backend is None  # closed and forgotten


def test_bad_settings_fail_the_start_not_the_first_request(
    monkeypatch: pytest.MonkeyPatch,
    listen_socket: socket.socket,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("STORAGE_TYPE", "S3")  # without STORAGE_S3_BUCKET
    server = LiveServer(lifespan_app(), listen_socket)
    with pytest.raises(RuntimeError, match="failed to start"):
        server.start()
    server.stop()
    assert "StorageConfigError: STORAGE_S3_BUCKET: required" in caplog.text
    assert factory._backend is None
