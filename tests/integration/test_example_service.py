"""The example service over real HTTP, on the local backend and on S3 (moto): ids local, s3."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from file_storage import StorageBackend
from tests.integration.conftest import Serve

MIB = 2**20
BIG_SIZE = 50 * MIB
DATA = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """50 MiB of random bytes on disk, and their sha256."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(BIG_SIZE // MIB):
            chunk = os.urandom(MIB)
            out.write(chunk)
            digest.update(chunk)
    return path, digest.hexdigest()


async def file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as src:
        while chunk := src.read(MIB):
            yield chunk


async def download_digest(client: httpx.AsyncClient, url: str) -> tuple[int, str]:
    """Stream a download, returning its size and sha256 (never held whole)."""
    digest = hashlib.sha256()
    size = 0
    async with client.stream("GET", url) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            digest.update(chunk)
    assert int(response.headers["content-length"]) == size
    return size, digest.hexdigest()


def file_url(key: str) -> str:
    return "/api/files/" + quote(key)


@pytest.fixture
async def stored(storage: StorageBackend) -> str:
    """DATA saved by the test's own backend, under the example's uploads/ folder."""
    return await storage.save("uploads/t/data.bin", DATA, content_type="application/x-data")


async def test_multipart_upload_of_50_mib_downloads_identical(
    serve: Serve,
    example_app: FastAPI,
    client: httpx.AsyncClient,
    storage: StorageBackend,
    big_file: tuple[Path, str],
) -> None:
    path, sha256 = big_file
    serve(example_app)
    with path.open("rb") as src:
        files = {"file": ("Holiday Video.BIN", src, "application/octet-stream")}
        response = await client.post("/api/files", files=files)
    assert response.status_code == 201, response.text
    key = response.json()["key"]
    assert key.startswith("uploads/")
    assert key.endswith(".bin")

    assert await download_digest(client, file_url(key)) == (BIG_SIZE, sha256)
    assert (await storage.stat(key)).size == BIG_SIZE
    listed = (await client.get("/api/files")).json()
    assert [(f["key"], f["size"]) for f in listed["files"]] == [(key, BIG_SIZE)]
    assert listed["next_start_after"] is None


async def test_presigned_put_of_50_mib_stores_identical_bytes_and_type(
    serve: Serve,
    example_app: FastAPI,
    client: httpx.AsyncClient,
    storage: StorageBackend,
    big_file: tuple[Path, str],
) -> None:
    path, sha256 = big_file
    serve(example_app)
    presigned = (await client.post("/api/presign", json={"filename": "clip.bin"})).json()
    put = await client.put(
        presigned["url"],
        content=file_chunks(path),
        headers={"Content-Type": "application/x-test", "Content-Length": str(BIG_SIZE)},
    )
    assert put.status_code == 200, put.text

    key = presigned["key"]
    info = await storage.stat(key)
    assert info.size == BIG_SIZE
    assert info.content_type == "application/x-test"
    assert await download_digest(client, file_url(key)) == (BIG_SIZE, sha256)


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-9", 0, 10),  # first bytes
        ("bytes=100-299", 100, 300),  # middle
        ("bytes=-16", len(DATA) - 16, len(DATA)),  # suffix
        ("bytes=10000-", 10000, len(DATA)),  # open-ended
        ("bytes=10200-99999", 10200, len(DATA)),  # last byte past the end: clamped
    ],
)
async def test_range_request_returns_206_with_the_slice(
    serve: Serve,
    example_app: FastAPI,
    client: httpx.AsyncClient,
    stored: str,
    range_header: str,
    start: int,
    end: int,
) -> None:
    serve(example_app)
    response = await client.get(file_url(stored), headers={"Range": range_header})
    assert response.status_code == 206
    assert response.content == DATA[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert response.headers["content-length"] == str(end - start)
    assert response.headers["content-type"] == "application/x-data"


async def test_range_past_the_end_returns_416(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient, stored: str
) -> None:
    serve(example_app)
    response = await client.get(file_url(stored), headers={"Range": "bytes=10240-10300"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"
    assert response.content == b""


async def test_etag_then_if_none_match_returns_304(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient, stored: str
) -> None:
    serve(example_app)
    first = await client.get(file_url(stored))
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert first.headers["accept-ranges"] == "bytes"
    assert first.headers["last-modified"].endswith(" GMT")

    again = await client.get(file_url(stored), headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    changed = await client.get(file_url(stored), headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200
    assert changed.content == DATA


async def test_head_sends_the_headers_without_a_body(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient, stored: str
) -> None:
    serve(example_app)
    response = await client.head(file_url(stored))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["content-type"] == "application/x-data"
    assert "etag" in response.headers
    disposition = response.headers["content-disposition"]
    assert disposition == "attachment; filename=\"data.bin\"; filename*=UTF-8''data.bin"


async def test_delete_removes_the_object(
    serve: Serve,
    example_app: FastAPI,
    client: httpx.AsyncClient,
    storage: StorageBackend,
    stored: str,
) -> None:
    serve(example_app)
    assert (await client.delete(file_url(stored))).status_code == 204
    assert not await storage.exists(stored)
    assert (await client.get(file_url(stored))).status_code == 404


async def test_missing_object_is_404_and_invalid_key_400(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient
) -> None:
    serve(example_app)
    missing = await client.get("/api/files/uploads/nope.bin")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "stat 'uploads/nope.bin': object not found"}
    invalid = await client.get("/api/files/uploads/a%5Cb.bin")  # a backslash
    assert invalid.status_code == 400
    assert "backslash" in invalid.json()["detail"]


async def test_keys_outside_the_upload_folder_are_not_served(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient, storage: StorageBackend
) -> None:
    await storage.save("private/secret.txt", b"no")
    serve(example_app)
    assert (await client.get("/api/files/private/secret.txt")).status_code == 404
    assert (await client.delete("/api/files/private/secret.txt")).status_code == 404
    assert await storage.exists("private/secret.txt")


async def test_upload_over_the_example_limit_is_413_and_stores_nothing(
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    storage: StorageBackend,
    client: httpx.AsyncClient,
) -> None:
    monkeypatch.setenv("EXAMPLE_MAX_UPLOAD_BYTES", "1000")
    from tests.integration.conftest import build_example_app

    serve(build_example_app())
    response = await client.post("/api/files", files={"file": ("a.txt", b"x" * 1001)})
    assert response.status_code == 413
    assert "1.0 kB" in response.json()["detail"]
    assert await storage.list_files() == []
    ok = await client.post("/api/files", files={"file": ("a.txt", b"x" * 1000)})
    assert ok.status_code == 201


async def test_listing_is_paged_by_a_key_cursor(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient, storage: StorageBackend
) -> None:
    serve(example_app)
    keys = [f"uploads/2026/01/{i:02d}.txt" for i in range(5)]
    for key in keys:
        await storage.save(key, b"x")
    await storage.save("private/secret.txt", b"x")
    seen: list[str] = []
    cursor = ""
    while True:
        page = (await client.get("/api/files", params={"limit": 2, "start_after": cursor})).json()
        assert len(page["files"]) <= 2
        seen += [f["key"] for f in page["files"]]
        if page["next_start_after"] is None:
            break
        cursor = page["next_start_after"]
    assert seen == keys
    bad = await client.get("/api/files", params={"start_after": "a//b"})
    assert bad.status_code == 400
    assert (await client.get("/api/files", params={"limit": 0})).status_code == 422
