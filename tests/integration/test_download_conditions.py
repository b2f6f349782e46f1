"""storage_response's If-Match, If-Unmodified-Since and If-Range over real HTTP, on a
memory backend: a download (or a resumed range) conditioned on a version never sends
another one."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from file_storage import MemoryStorageBackend, ObjectInfo
from file_storage.fastapi import StorageDep, get_storage, install_error_handlers, storage_response
from tests.integration.conftest import Serve

OLD = b"old version " * 100
NEW = b"NEW VERSION " * 100


class ClockedBackend(MemoryStorageBackend):
    """A memory backend whose objects were all last modified at ``moment``: two versions
    written within one second, as a fast client or a busy app writes them."""

    moment = datetime(2026, 5, 1, 12, 0, 0, 200_000, tzinfo=UTC)

    async def _stat(self, key: str) -> ObjectInfo:
        return dataclasses.replace(await super()._stat(key), last_modified=self.moment)


@pytest.fixture
def backend() -> ClockedBackend:
    return ClockedBackend()


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


async def test_resuming_with_if_range_dated_the_same_second_as_a_replace_is_the_whole_new_version(
    server: str, client: httpx.AsyncClient, backend: ClockedBackend
) -> None:
    first = await client.get("/objects/d/file.bin", headers={"Range": "bytes=0-99"})
    assert (first.status_code, first.content) == (206, OLD[:100])
    # replaced half a second later: Last-Modified (whole seconds) reads the same
    backend.moment += timedelta(milliseconds=500)
    await backend.save("d/file.bin", NEW)
    assert (await client.head("/objects/d/file.bin")).headers["last-modified"] == (
        first.headers["last-modified"]
    )
    rest = await client.get(
        "/objects/d/file.bin",
        headers={"Range": "bytes=100-", "If-Range": first.headers["last-modified"]},
    )
    # never OLD[:100] + NEW[100:]: a date cannot tell the two versions apart, so the
    # range is not served and the client gets one version whole
    assert (rest.status_code, rest.content) == (200, NEW)


async def test_if_range_with_the_current_etag_resumes_the_range(
    server: str, client: httpx.AsyncClient
) -> None:
    etag = (await client.head("/objects/d/file.bin")).headers["etag"]
    rest = await client.get(
        "/objects/d/file.bin", headers={"Range": "bytes=100-", "If-Range": etag}
    )
    assert (rest.status_code, rest.content) == (206, OLD[100:])


async def test_resuming_with_if_unmodified_since_in_the_second_of_a_replace_is_the_new_version(
    server: str, client: httpx.AsyncClient, backend: ClockedBackend
) -> None:
    first = await client.get("/objects/d/file.bin", headers={"Range": "bytes=0-99"})
    backend.moment += timedelta(milliseconds=500)
    await backend.save("d/file.bin", NEW)
    rest = await client.get(
        "/objects/d/file.bin",
        headers={"Range": "bytes=100-", "If-Unmodified-Since": first.headers["last-modified"]},
    )
    # the date holds (not modified after that second), but it cannot tell the versions
    # apart: never OLD[:100] + NEW[100:]
    assert (rest.status_code, rest.content) == (200, NEW)


async def test_resuming_with_if_match_and_if_unmodified_since_resumes_the_range(
    server: str, client: httpx.AsyncClient
) -> None:
    first = await client.get("/objects/d/file.bin", headers={"Range": "bytes=0-99"})
    conditions = {"If-Match": first.headers["etag"], "If-Unmodified-Since": "x"}
    rest = await client.get("/objects/d/file.bin", headers={"Range": "bytes=100-", **conditions})
    assert (rest.status_code, rest.content) == (206, OLD[100:])
