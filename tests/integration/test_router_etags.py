"""The ETag the signed router answers an upload with is the one of the object that
upload stored, over real HTTP on local disk and memory: another writer's object landing
right after it (before the answer) must not lend it its ETag, or an ``If-Match`` with
that ETag would replace an object the client never saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    StorageBackend,
)
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve

RIVAL = b"another writer's object"


class _RivalAfterWrite:
    """Once ``rival`` is set, the next write of a key is followed at once (in its hook,
    before ``save`` returns) by another writer's object at that key."""

    rival: bytes | None = None

    async def _save(self, key: str, body: Any, *args: Any) -> str | None:
        etag: str | None = await super()._save(key, body, *args)  # type: ignore[misc]
        rival, self.rival = self.rival, None
        if rival is not None:
            await super()._save(key, rival, *args)  # type: ignore[misc]
        return etag


class LocalWithRival(_RivalAfterWrite, LocalStorageBackend):
    pass


class MemoryWithRival(_RivalAfterWrite, MemoryStorageBackend):
    pass


@pytest.fixture(params=["local", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, base_url: str) -> StorageBackend:
    signing = {"base_url": f"{base_url}/files", "signing_key": SIGNING_KEY}
    if request.param == "local":
        return LocalWithRival(tmp_path / "storage", **signing)
    return MemoryWithRival(**signing)


@pytest.fixture
def server(serve: Serve, backend: StorageBackend) -> str:
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    return serve(app)


def _arm(backend: StorageBackend) -> None:
    assert isinstance(backend, _RivalAfterWrite)
    backend.rival = RIVAL


async def _put(client: httpx.AsyncClient, backend: StorageBackend, key: str) -> httpx.Response:
    url = await backend.get_presigned_url(key, method="PUT")
    return await client.put(url, content=b"mine")


async def _form(client: httpx.AsyncClient, backend: StorageBackend, key: str) -> httpx.Response:
    post = await backend.get_presigned_post(key, max_bytes=1000)
    files = {"file": ("upload.bin", b"mine", "application/octet-stream")}
    return await client.post(post.url, data=post.fields, files=files)


UPLOADS = {"put": (_put, 200), "form": (_form, 204)}


@pytest.mark.parametrize("upload", sorted(UPLOADS))
async def test_an_upload_answers_the_etag_of_its_own_object(
    server: str, client: httpx.AsyncClient, backend: StorageBackend, upload: str
) -> None:
    send, ok = UPLOADS[upload]
    response = await send(client, backend, "in/a.bin")
    assert response.status_code == ok, response.text
    assert response.headers["etag"] == (await backend.stat("in/a.bin")).etag


@pytest.mark.parametrize("upload", sorted(UPLOADS))
async def test_an_upload_replaced_before_its_answer_never_answers_the_rivals_etag(
    server: str, client: httpx.AsyncClient, backend: StorageBackend, upload: str
) -> None:
    send, ok = UPLOADS[upload]
    _arm(backend)
    response = await send(client, backend, "in/b.bin")
    assert response.status_code == ok, response.text
    answered = response.headers["etag"]
    assert answered != (await backend.stat("in/b.bin")).etag
    # the client updates "its" object with If-Match: refused, the rival's object kept
    url = await backend.get_presigned_url("in/b.bin", method="PUT")
    update = await client.put(url, content=b"mine, edited", headers={"If-Match": answered})
    assert update.status_code == 412, update.text
    assert await backend.load("in/b.bin") == RIVAL
