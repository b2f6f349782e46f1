"""storage_response sends one version: its ETag, Content-Length and bytes belong together,
even when the object is replaced between the stat and the stream (real uvicorn server)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    S3StorageBackend,
    StorageBackend,
)
from file_storage.fastapi import install_error_handlers, storage_response
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.integration.conftest import Serve

OLD = b"old version " * 100  # 1,200 bytes
NEW = b"the new version, longer " * 200  # 4,800 bytes


class OverwriteBeforeStream:
    """Replaces the object right before each stream opens: the window between the
    response's stat and its stream, made certain."""

    overwrites: list[bytes]  # one per stream opened; empty: leave the object alone

    def _stream(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        return self._overwritten(key, start, end, chunk_size, if_match)

    async def _overwritten(
        self, key: str, start: int, end: int | None, chunk_size: int, if_match: str | None
    ) -> AsyncIterator[bytes]:
        backend: Any = self
        if self.overwrites:
            await backend.save(key, self.overwrites.pop(0))
        async for chunk in super()._stream(  # type: ignore[misc]
            key, start, end, chunk_size, if_match
        ):
            yield chunk


class MemoryOverwriting(OverwriteBeforeStream, MemoryStorageBackend):
    pass


class LocalOverwriting(OverwriteBeforeStream, LocalStorageBackend):
    pass


class S3Overwriting(OverwriteBeforeStream, S3StorageBackend):
    pass


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
async def racing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    backend: Any
    if request.param == "memory":
        backend = MemoryOverwriting()
    elif request.param == "local":
        backend = LocalOverwriting(tmp_path / "storage")
    else:
        backend = S3Overwriting(
            request.getfixturevalue("s3_bucket"),
            endpoint_url=request.getfixturevalue("moto_endpoint"),
            access_key_id=FAKE_KEY_ID,
            secret_access_key=FAKE_SECRET,
            addressing_style="path",
        )
    backend.overwrites = []
    # the server runs its own event loop: the backend opens clients there too
    try:
        yield backend
    finally:
        await backend.aclose()


def make_app(backend: StorageBackend) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/objects/{key:path}")
    async def download(key: str, request: Request) -> Response:
        return await storage_response(backend, key, request)

    return app


async def etag_of(backend: StorageBackend, key: str) -> str:
    etag = (await backend.stat(key)).etag
    assert etag is not None
    return etag


async def test_object_replaced_after_the_stat_is_sent_whole_in_its_new_version(
    serve: Serve, client: httpx.AsyncClient, racing: Any
) -> None:
    await racing.save("d/a.bin", OLD)
    racing.overwrites = [NEW]
    serve(make_app(racing))
    response = await client.get("/objects/d/a.bin")
    assert response.status_code == 200
    assert response.content == NEW
    assert response.headers["content-length"] == str(len(NEW))
    assert response.headers["etag"] == await etag_of(racing, "d/a.bin")


async def test_ranged_download_of_a_replaced_object_is_a_range_of_one_version(
    serve: Serve, client: httpx.AsyncClient, racing: Any
) -> None:
    await racing.save("d/a.bin", OLD)
    racing.overwrites = [NEW]
    serve(make_app(racing))
    response = await client.get("/objects/d/a.bin", headers={"Range": "bytes=1000-1999"})
    assert response.status_code == 206
    assert response.content == NEW[1000:2000]
    assert response.headers["content-range"] == f"bytes 1000-1999/{len(NEW)}"
    assert response.headers["etag"] == await etag_of(racing, "d/a.bin")


async def test_object_replaced_before_every_attempt_is_a_503_not_a_broken_body(
    serve: Serve, client: httpx.AsyncClient, racing: Any
) -> None:
    await racing.save("d/a.bin", OLD)
    versions = [hashlib.sha256(b"%d" % i).digest() * (i + 1) for i in range(10)]
    racing.overwrites = list(versions)
    serve(make_app(racing))
    response = await client.get("/objects/d/a.bin")
    assert response.status_code == 503
    assert len(racing.overwrites) == len(versions) - 3  # three attempts, then give up
