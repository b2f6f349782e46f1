"""install_error_handlers over a real uvicorn server: the 4xx answers of the newer errors.

409 for an object/folder clash, 412 for a pinned read whose version is gone, 400 for bad
metadata (an InvalidMetadataError is also a ValueError: the StorageError handler still
answers it, even beside an application's own ValueError handler).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from file_storage import InvalidMetadataError, MemoryStorageBackend, StorageError
from file_storage.fastapi import StorageDep, get_storage, install_error_handlers
from tests.integration.conftest import Serve

SECRET_VALUE = "value-that-must-not-be-echoed"


class StagedBackend(MemoryStorageBackend):
    """A memory backend whose ``_save`` raises the error staged for a key."""

    def __init__(self) -> None:
        super().__init__()
        self.faults: dict[str, StorageError] = {}

    async def _save(
        self,
        key: str,
        body: bytes | AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str],
    ) -> None:
        if (fault := self.faults.get(key)) is not None:
            raise fault
        await super()._save(key, body, content_type, metadata)


async def value_error_handler(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": "the application's own ValueError answer"}, status_code=422)


def make_app(backend: MemoryStorageBackend, inbox: Path) -> FastAPI:
    app = FastAPI()
    # an application that answers its own ValueErrors: bad metadata must still be a 400
    app.add_exception_handler(ValueError, value_error_handler)
    install_error_handlers(app)
    app.dependency_overrides[get_storage] = lambda: backend

    @app.put("/objects/{key:path}", status_code=201)
    async def put(key: str, request: Request, storage: StorageDep) -> dict[str, str]:
        note = request.headers.get("x-note")
        metadata = {"note": note} if note is not None else None
        return {"key": await storage.save(key, await request.body(), metadata=metadata)}

    @app.post("/imports/{name}")
    async def import_file(name: str, storage: StorageDep) -> dict[str, str]:
        return {"key": await storage.upload_file(inbox / name, f"imports/{name}")}

    @app.get("/pinned/{key:path}")
    async def pinned(key: str, etag: str, storage: StorageDep) -> Response:
        chunks = storage.stream(key, if_match=etag)
        first = await anext(chunks)  # fails before any header is sent when the version is gone

        async def body() -> AsyncIterator[bytes]:
            yield first
            async for chunk in chunks:
                yield chunk

        return StreamingResponse(body())

    return app


@pytest.fixture
def backend() -> StagedBackend:
    return StagedBackend()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """A server-side folder the app imports files from."""
    folder = tmp_path / "server-only-inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def server(serve: Serve, backend: StagedBackend, inbox: Path) -> str:
    return serve(make_app(backend, inbox))


async def test_saving_under_an_object_is_409(
    server: str, client: httpx.AsyncClient, backend: StagedBackend
) -> None:
    assert (await client.put("/objects/a", content=b"object")).status_code == 201
    response = await client.put("/objects/a/b", content=b"x")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "save 'a/b': an object exists at 'a', so it cannot be a folder"
    }
    assert await backend.list_files() == ["a"]


async def test_saving_onto_a_folder_is_409(
    server: str, client: httpx.AsyncClient, backend: StagedBackend
) -> None:
    assert (await client.put("/objects/a/b", content=b"x")).status_code == 201
    response = await client.put("/objects/a", content=b"object")
    assert response.status_code == 409
    assert response.json() == {"detail": "save 'a': a folder exists at this key"}


async def test_a_read_pinned_to_a_replaced_version_is_412(
    server: str, client: httpx.AsyncClient, backend: StagedBackend
) -> None:
    await backend.save("a.txt", b"old")
    old = (await backend.stat("a.txt")).etag
    assert old is not None
    assert (await client.get("/pinned/a.txt", params={"etag": old})).content == b"old"
    await backend.save("a.txt", b"new")
    response = await client.get("/pinned/a.txt", params={"etag": old})
    assert response.status_code == 412
    assert response.json()["detail"].startswith("stream 'a.txt': ")


async def test_bad_metadata_is_400_naming_the_problem_not_the_value(
    server: str, client: httpx.AsyncClient, backend: StagedBackend
) -> None:
    backend.faults["a.txt"] = InvalidMetadataError("metadata is over 2 KiB in all")
    response = await client.put("/objects/a.txt", content=b"x", headers={"x-note": SECRET_VALUE})
    assert response.status_code == 400
    assert response.json() == {"detail": "save 'a.txt': metadata is over 2 KiB in all"}
    assert SECRET_VALUE not in response.text
    assert not await backend.exists("a.txt")


async def test_a_missing_local_file_is_404_without_the_servers_folder(
    server: str, client: httpx.AsyncClient, inbox: Path
) -> None:
    response = await client.post("/imports/report.pdf")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "upload_file 'imports/report.pdf': local file 'report.pdf' not found"
    }
    assert str(inbox) not in response.text
