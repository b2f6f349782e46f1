"""storage_response's If-Match and If-Unmodified-Since over real HTTP, on a memory backend:
a download (or a resumed range) conditioned on a version never sends another one."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from file_storage import MemoryStorageBackend
from file_storage.fastapi import StorageDep, get_storage, install_error_handlers, storage_response
from tests.integration.conftest import Serve

OLD = b"old version " * 100
NEW = b"NEW VERSION " * 100


@pytest.fixture
def backend() -> MemoryStorageBackend:
    return MemoryStorageBackend()


@pytest.fixture
async def server(serve: Serve, backend: MemoryStorageBackend) -> str:
    app = FastAPI()
    install_error_handlers(app)
    app.dependency_overrides[get_storage] = lambda: backend

    @app.api_route("/objects/{key:path}", methods=["GET", "HEAD"])
    async def download(key: str, request: Request, storage: StorageDep) -> Response:
        return await storage_response(storage, key, request)

    await backend.save("d/file.bin", OLD)
    return serve(app)


async def test_resuming_with_if_match_after_a_replace_is_412_not_the_new_versions_bytes(
    server: str, client: httpx.AsyncClient, backend: MemoryStorageBackend
) -> None:
    first = await client.get("/objects/d/file.bin", headers={"Range": "bytes=0-99"})
    assert first.status_code == 206
    await backend.save("d/file.bin", NEW)
    rest = await client.get(
        "/objects/d/file.bin", headers={"Range": "bytes=100-", "If-Match": first.headers["etag"]}
    )
    assert rest.status_code == 412
    assert NEW[100:] not in rest.content
    assert set(rest.json()) == {"detail"}


@pytest.mark.parametrize("tag", ["{etag}", "*", '"other", {etag}'])
async def test_if_match_naming_the_current_version_downloads_it(
    server: str, client: httpx.AsyncClient, tag: str
) -> None:
    etag = (await client.head("/objects/d/file.bin")).headers["etag"]
    response = await client.get("/objects/d/file.bin", headers={"If-Match": tag.format(etag=etag)})
    assert response.status_code == 200
    assert response.content == OLD


async def test_if_match_with_a_weak_tag_never_matches(
    server: str, client: httpx.AsyncClient
) -> None:
    etag = (await client.head("/objects/d/file.bin")).headers["etag"]
    response = await client.get("/objects/d/file.bin", headers={"If-Match": f"W/{etag}"})
    assert response.status_code == 412  # strong comparison (RFC 9110, 13.1.1)


async def test_head_with_a_stale_if_match_is_412(server: str, client: httpx.AsyncClient) -> None:
    response = await client.head("/objects/d/file.bin", headers={"If-Match": '"stale"'})
    assert response.status_code == 412


async def test_if_unmodified_since_before_the_last_change_is_412(
    server: str, client: httpx.AsyncClient
) -> None:
    last_modified = (await client.head("/objects/d/file.bin")).headers["last-modified"]
    old = await client.get(
        "/objects/d/file.bin", headers={"If-Unmodified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}
    )
    assert old.status_code == 412
    same = await client.get("/objects/d/file.bin", headers={"If-Unmodified-Since": last_modified})
    assert same.status_code == 200
    assert same.content == OLD
