"""The signed router's PUT and form POST under attack, over real HTTP, on a memory backend:
what the client is told matches what was stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from file_storage import (
    MemoryStorageBackend,
    ObjectInfo,
    ObjectNotFoundError,
    StorageError,
    StorageUnavailableError,
)
from file_storage._post_policy import sign_post
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve


class StatFailsAfterSave(MemoryStorageBackend):
    """A memory backend whose next ``stat`` of a key just saved raises the staged error:
    the object deleted, or the store out of reach, right after the write landed."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url=f"{base_url}/files", signing_key=SIGNING_KEY)
        self.after_save: StorageError | None = None
        self._armed: dict[str, StorageError] = {}
        self.stats = 0

    async def _save(self, key: str, content: object, *args: object) -> None:
        await super()._save(key, content, *args)  # type: ignore[arg-type]
        if self.after_save is not None:
            self._armed[key] = self.after_save

    async def _stat(self, key: str) -> ObjectInfo:
        self.stats += 1
        fault = self._armed.pop(key, None)
        if fault is not None:
            raise fault
        return await super()._stat(key)


@pytest.fixture
def backend(base_url: str) -> StatFailsAfterSave:
    return StatFailsAfterSave(base_url)


@pytest.fixture
def server(serve: Serve, backend: StatFailsAfterSave) -> str:
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    return serve(app)


async def _form(
    client: httpx.AsyncClient, backend: MemoryStorageBackend, key: str, data: bytes
) -> httpx.Response:
    post = await backend.get_presigned_post(key, max_bytes=1000)
    files = {"file": ("upload.bin", data, "application/octet-stream")}
    return await client.post(post.url, data=post.fields, files=files)


AFTER_SAVE = {
    "deleted-since": ObjectNotFoundError(),
    "store-unreachable": StorageUnavailableError("connection reset"),
}


@pytest.mark.parametrize("fault", sorted(AFTER_SAVE))
async def test_put_that_landed_is_a_success_even_when_the_stat_after_it_fails(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave, fault: str
) -> None:
    backend.after_save = AFTER_SAVE[fault]
    url = await backend.get_presigned_url("in/a.bin", method="PUT")
    response = await client.put(url, content=b"stored")
    assert response.status_code == 200, response.text
    assert "etag" not in response.headers  # unknown: never another version's
    assert await backend.load("in/a.bin") == b"stored"


@pytest.mark.parametrize("fault", sorted(AFTER_SAVE))
async def test_form_upload_that_landed_is_a_success_even_when_the_stat_after_it_fails(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave, fault: str
) -> None:
    backend.after_save = AFTER_SAVE[fault]
    response = await _form(client, backend, "in/b.bin", b"stored")
    assert response.status_code == 204, response.text
    assert "etag" not in response.headers
    assert await backend.load("in/b.bin") == b"stored"


async def test_put_with_if_none_match_star_never_replaces_an_object(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave
) -> None:
    await backend.save("in/c.bin", b"first")
    url = await backend.get_presigned_url("in/c.bin", method="PUT")
    response = await client.put(url, content=b"second", headers={"If-None-Match": "*"})
    assert response.status_code == 412
    assert set(response.json()) == {"detail"}
    assert await backend.load("in/c.bin") == b"first"


async def test_put_with_if_none_match_star_creates_a_missing_object(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave
) -> None:
    url = await backend.get_presigned_url("in/d.bin", method="PUT")
    response = await client.put(url, content=b"new", headers={"If-None-Match": "*"})
    assert response.status_code == 200
    assert await backend.load("in/d.bin") == b"new"


async def test_put_with_a_stale_if_match_is_412_and_keeps_the_newer_object(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave
) -> None:
    await backend.save("in/e.bin", b"v1")
    stale = (await backend.stat("in/e.bin")).etag
    await backend.save("in/e.bin", b"v2 by someone else")
    url = await backend.get_presigned_url("in/e.bin", method="PUT")
    response = await client.put(url, content=b"v3", headers={"If-Match": stale or ""})
    assert response.status_code == 412
    assert await backend.load("in/e.bin") == b"v2 by someone else"


async def test_put_with_the_current_if_match_replaces_the_object(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave
) -> None:
    await backend.save("in/f.bin", b"v1")
    current = (await backend.stat("in/f.bin")).etag
    url = await backend.get_presigned_url("in/f.bin", method="PUT")
    response = await client.put(url, content=b"v2", headers={"If-Match": current or ""})
    assert response.status_code == 200
    assert await backend.load("in/f.bin") == b"v2"


async def test_put_with_if_match_on_a_missing_object_is_412_and_stores_nothing(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave
) -> None:
    url = await backend.get_presigned_url("in/g.bin", method="PUT")
    response = await client.put(url, content=b"x", headers={"If-Match": "*"})
    assert response.status_code == 412
    assert await backend.list_files() == []


@pytest.mark.parametrize("left_out", ["max_bytes", "content_type"])
async def test_form_leaving_out_a_field_signed_empty_is_not_a_500(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave, left_out: str
) -> None:
    # signed with no cap and no content type: a missing field signs as the empty one
    bound = await backend._signing_binding()
    post = sign_post(f"{server}/files", "in/h.csv", 60, None, "", SIGNING_KEY, bound=bound)
    fields = {name: value for name, value in post.fields.items() if name != left_out}
    files = {"file": ("upload.csv", b"a,b\n", "text/plain")}
    response = await client.post(post.url, data=fields, files=files)
    assert response.status_code == 204, response.text
    assert await backend.load("in/h.csv") == b"a,b\n"
    assert (await backend.stat("in/h.csv")).content_type == "text/csv"  # from the key


def _content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def test_put_whose_body_does_not_match_its_content_md5_is_400_and_stores_nothing(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave
) -> None:
    await backend.save("in/m.bin", b"older")
    url = await backend.get_presigned_url("in/m.bin", method="PUT")
    sent = b"x" * 3_000_000  # several chunks: the digest is known only at the end
    response = await client.put(
        url, content=sent, headers={"Content-MD5": _content_md5(sent[:-1] + b"y")}
    )
    assert response.status_code == 400
    assert "Content-MD5" in response.json()["detail"]
    assert await backend.load("in/m.bin") == b"older"


@pytest.mark.parametrize("digest", ["not base64!", base64.b64encode(b"short").decode()])
async def test_put_with_a_malformed_content_md5_is_400(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave, digest: str
) -> None:
    url = await backend.get_presigned_url("in/n.bin", method="PUT")
    response = await client.put(url, content=b"data", headers={"Content-MD5": digest})
    assert response.status_code == 400
    assert await backend.list_files() == []


async def test_put_matching_its_content_md5_is_stored(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave
) -> None:
    url = await backend.get_presigned_url("in/o.bin", method="PUT")
    response = await client.put(
        url, content=b"data", headers={"Content-MD5": _content_md5(b"data")}
    )
    assert response.status_code == 200
    assert await backend.load("in/o.bin") == b"data"


async def test_of_two_racing_create_only_puts_exactly_one_lands(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave
) -> None:
    url = await backend.get_presigned_url("in/race.bin", method="PUT")

    async def body(data: bytes) -> AsyncIterator[bytes]:
        # both requests have checked If-None-Match (one stat each) before either body
        # arrives: the check alone would let both through
        deadline = time.monotonic() + 10
        while backend.stats < 2:
            assert time.monotonic() < deadline, "the router never checked both requests"
            await asyncio.sleep(0.01)  # the server's own thread and loop: nothing to await
        yield data

    first, second = await asyncio.gather(
        client.put(url, content=body(b"first"), headers={"If-None-Match": "*"}),
        client.put(url, content=body(b"second"), headers={"If-None-Match": "*"}),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 412]
    winner = b"first" if first.status_code == 200 else b"second"
    assert await backend.load("in/race.bin") == winner


async def test_put_with_content_range_is_400_and_stores_nothing(
    server: str, client: httpx.AsyncClient, backend: StatFailsAfterSave
) -> None:
    # a client uploading in pieces: each piece stored as the whole object would lose the
    # rest; RFC 9110, 14.5: a server MUST answer such a PUT with 400
    await backend.save("in/r.bin", b"whole object")
    url = await backend.get_presigned_url("in/r.bin", method="PUT")
    response = await client.put(url, content=b"piece", headers={"Content-Range": "bytes 0-4/100"})
    assert response.status_code == 400
    assert "Content-Range" in response.json()["detail"]
    assert await backend.load("in/r.bin") == b"whole object"
