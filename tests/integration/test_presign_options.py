"""Presign options over real HTTP: content_type and filename on GET, a signed Content-Type
on PUT; the local and memory backends through signed_url_router under uvicorn, S3 on moto."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from file_storage import LocalStorageBackend, MemoryStorageBackend, StorageBackend
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve

NAME = "Отпуск 2026.mp4"
DISPOSITION = f"attachment; filename=\"______ 2026.mp4\"; filename*=UTF-8''{quote(NAME)}"


def signed_app(backend: StorageBackend) -> FastAPI:
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    return app


@pytest.fixture
async def served_local(
    tmp_path: Path, serve: Serve, base_url: str
) -> AsyncIterator[StorageBackend]:
    backend = LocalStorageBackend(
        tmp_path / "storage", base_url=f"{base_url}/files", signing_key=SIGNING_KEY
    )
    serve(signed_app(backend))
    yield backend
    await backend.aclose()


@pytest.fixture
def served_memory(serve: Serve, base_url: str) -> StorageBackend:
    backend = MemoryStorageBackend(base_url=f"{base_url}/files", signing_key=SIGNING_KEY)
    serve(signed_app(backend))
    return backend


@pytest.fixture
def served_s3(s3_backend: StorageBackend) -> StorageBackend:
    return s3_backend  # its URLs point at moto itself


@pytest.fixture(params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3)])
def presigning(request: pytest.FixtureRequest) -> StorageBackend:
    backend: StorageBackend = request.getfixturevalue(f"served_{request.param}")
    return backend


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
        yield client


async def test_get_url_with_filename_downloads_under_that_name(
    presigning: StorageBackend, http: httpx.AsyncClient
) -> None:
    await presigning.save("v/0a1b2c.mp4", b"movie")
    url = await presigning.get_presigned_url("v/0a1b2c.mp4", filename=NAME)
    response = await http.get(url)
    assert response.status_code == 200
    assert response.content == b"movie"
    assert response.headers["content-disposition"] == DISPOSITION


async def test_get_url_with_content_type_sets_the_response_type(
    presigning: StorageBackend, http: httpx.AsyncClient
) -> None:
    await presigning.save("v/raw.bin", b"{}")
    url = await presigning.get_presigned_url("v/raw.bin", content_type="application/x-thing")
    response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-thing"


async def test_get_url_sends_stored_headers(
    presigning: StorageBackend, http: httpx.AsyncClient
) -> None:
    await presigning.save(
        "v/a.txt", b"hi", cache_control="max-age=600", content_disposition="inline"
    )
    response = await http.get(await presigning.get_presigned_url("v/a.txt"))
    assert response.headers["cache-control"] == "max-age=600"
    assert response.headers["content-disposition"] == "inline"


@pytest.mark.parametrize(
    ("stored_type", "disposition"),
    [
        ("text/html", 'attachment; filename="p.html"'),
        ("image/svg+xml", 'attachment; filename="p.html"'),
        ("image/png", 'inline; filename="p.html"'),
    ],
)
async def test_get_url_of_active_content_is_a_download_on_every_backend(
    presigning: StorageBackend, http: httpx.AsyncClient, stored_type: str, disposition: str
) -> None:
    # a page or an SVG opened from the link must not show as a page: a download, its
    # stored file name kept; an image is shown as stored
    await presigning.save(
        "v/p.html",
        b"<script>alert(1)</script>",
        content_type=stored_type,
        content_disposition='inline; filename="p.html"',
    )
    response = await http.get(await presigning.get_presigned_url("v/p.html"))
    assert response.status_code == 200
    assert response.headers["content-disposition"] == disposition


async def test_put_url_with_content_type_stores_it(
    presigning: StorageBackend, http: httpx.AsyncClient
) -> None:
    url = await presigning.get_presigned_url("up/a.dat", method="PUT", content_type="video/mp4")
    response = await http.put(url, content=b"data", headers={"Content-Type": "video/mp4"})
    assert response.status_code == 200
    assert (await presigning.stat("up/a.dat")).content_type == "video/mp4"


async def test_options_cannot_be_changed_in_a_signed_url(
    served_local: StorageBackend, http: httpx.AsyncClient
) -> None:
    await served_local.save("v/a.bin", b"x")
    url = await served_local.get_presigned_url("v/a.bin", filename="a.bin")
    forged = await http.get(url.replace("filename=a.bin", "filename=evil.exe"))
    assert forged.status_code == 403
    dropped = await http.get(url.replace("filename=a.bin&", ""))
    assert dropped.status_code == 403


@pytest.fixture(params=["local", "memory"])
def served_router(request: pytest.FixtureRequest) -> StorageBackend:
    backend: StorageBackend = request.getfixturevalue(f"served_{request.param}")
    return backend


@pytest.mark.parametrize(
    ("signed", "added"),
    [
        # an option signed alone: the other one, spelled as the mark of an absent option
        ({"content_type": "image/png"}, "filename=%00"),
        ({"filename": "a.png"}, "content_type=%00"),
    ],
    ids=["filename", "content_type"],
)
async def test_no_option_can_be_added_to_a_signed_url(
    served_router: StorageBackend, http: httpx.AsyncClient, signed: dict[str, str], added: str
) -> None:
    await served_router.save("v/a.png", b"png", content_type="image/png")
    url = await served_router.get_presigned_url("v/a.png", **signed)
    assert (await http.get(url)).status_code == 200
    forged = await http.get(f"{url}&{added}")
    assert forged.status_code == 403
    assert forged.json()["detail"].startswith("invalid signature for this URL and method")
    assert "content-disposition" not in forged.headers


async def test_signed_router_refuses_a_put_with_another_content_type(
    served_memory: StorageBackend, http: httpx.AsyncClient
) -> None:
    url = await served_memory.get_presigned_url("up/a.dat", method="PUT", content_type="image/png")
    refused = await http.put(url, content=b"<svg/>", headers={"Content-Type": "image/svg+xml"})
    assert refused.status_code == 403
    missing = await http.put(url, content=b"png")
    assert missing.status_code == 403
    assert not await served_memory.exists("up/a.dat")


async def test_s3_put_url_signs_the_content_type(served_s3: StorageBackend) -> None:
    url = await served_s3.get_presigned_url("up/a.dat", method="PUT", content_type="video/mp4")
    assert "content-type" in url.split("X-Amz-SignedHeaders=", 1)[1].split("&", 1)[0]


@pytest.mark.parametrize(
    ("key", "served"),
    [
        ("t/a.txt", "text/plain; charset=utf-8"),
        ("t/a.json", "application/json; charset=utf-8"),
        ("t/a.ndjson", "application/x-ndjson; charset=utf-8"),
        ("t/a.png", "image/png"),
    ],
)
async def test_signed_router_serves_text_and_json_as_utf8(
    served_local: StorageBackend, http: httpx.AsyncClient, key: str, served: str
) -> None:
    await served_local.save(key, "é".encode())
    response = await http.get(await served_local.get_presigned_url(key))
    assert response.headers["content-type"] == served
    assert (await served_local.stat(key)).content_type == served.split(";")[0]
