"""The example service over real HTTP, on the local backend and on S3 (moto): ids local, s3."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest
from fastapi import FastAPI

from file_storage import StorageBackend
from tests.integration.conftest import SIGNING_KEY, Serve

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


def serve_example(monkeypatch: pytest.MonkeyPatch, serve: Serve, **env: str) -> None:
    """Serve the example app built afresh under these extra environment variables."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from tests.integration.conftest import build_example_app

    serve(build_example_app())


def file_url(key: str) -> str:
    return "/api/files/" + quote(key)


@pytest.fixture
async def stored(storage: StorageBackend) -> str:
    """DATA saved by the test's own backend, in the folder of the example's default user."""
    return await storage.save("users/demo/t/data.bin", DATA, content_type="application/x-data")


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
    assert key.startswith("users/demo/")
    assert key.endswith(".bin")

    assert await download_digest(client, file_url(key)) == (BIG_SIZE, sha256)
    assert (await storage.stat(key)).size == BIG_SIZE
    listed = (await client.get("/api/files")).json()
    assert [(f["key"], f["size"]) for f in listed["files"]] == [(key, BIG_SIZE)]
    assert listed["next_start_after"] is None


async def test_presigned_put_of_50_mib_stores_identical_bytes_and_type(
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    client: httpx.AsyncClient,
    storage: StorageBackend,
    big_file: tuple[Path, str],
) -> None:
    path, sha256 = big_file
    # no per-user quota: under one, S3 signs no PUT (it could not cap its size)
    serve_example(monkeypatch, serve, EXAMPLE_USER_QUOTA_BYTES="0")
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
    missing = await client.get("/api/files/users/demo/nope.bin")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "stat 'users/demo/nope.bin': object not found"}
    invalid = await client.get("/api/files/users/demo/a%5Cb.bin")  # a backslash
    assert invalid.status_code == 400
    assert "backslash" in invalid.json()["detail"]


async def test_keys_outside_the_users_folder_are_not_served(
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
    serve_example(monkeypatch, serve, EXAMPLE_MAX_UPLOAD_BYTES="1000")
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
    keys = [f"users/demo/2026/01/{i:02d}.txt" for i in range(5)]
    for key in keys:
        await storage.save(key, b"x")
    await storage.save("private/secret.txt", b"x")
    await storage.save("users/demo2/a.txt", b"x")  # a neighbour whose name starts alike
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


# ----------------------------------------------------------------------------- users

NAME = "Отпуск 2026.mp4"


def as_user(user: str) -> dict[str, str]:
    return {"X-User": user}


async def upload_as(client: httpx.AsyncClient, user: str, data: bytes = b"alice's") -> str:
    files = {"file": (NAME, data, "video/mp4")}
    response = await client.post("/api/files", files=files, headers=as_user(user))
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


async def test_every_key_is_built_in_the_users_folder(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient
) -> None:
    serve(example_app)
    key = await upload_as(client, "alice")
    assert key.startswith("users/alice/")
    bob = as_user("bob")
    presigned = await client.post("/api/presign-post", json={"filename": "a.png"}, headers=bob)
    assert presigned.json()["key"].startswith("users/bob/")
    client.cookies.set("user", "carol")  # the page's user picker sets this cookie
    form = await client.post("/api/presign-post", json={"filename": "a.pdf"})
    assert form.json()["key"].startswith("users/carol/")


async def test_one_user_never_sees_nor_deletes_anothers_files(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient, storage: StorageBackend
) -> None:
    serve(example_app)
    key = await upload_as(client, "alice")
    rest = key.removeprefix("users/alice/")
    bob = as_user("bob")

    assert (await client.get("/api/files", headers=bob)).json()["files"] == []
    # a cursor from alice's folder still lists bob's folder only
    listed = await client.get("/api/files", params={"start_after": key}, headers=bob)
    assert listed.json()["files"] == []
    assert (await client.get(file_url(key), headers=bob)).status_code == 404
    assert (await client.delete(file_url(key), headers=bob)).status_code == 404
    finish = await client.post("/api/finish", json={"key": key, "filename": "x"}, headers=bob)
    assert finish.status_code == 404
    # hostile keys that start in bob's folder and climb out: dot segments sent encoded
    # (a client would resolve plain ones), and an empty segment; all refused as keys
    for hostile in (
        f"users/bob/%2E%2E/alice/{rest}",
        f"users/bob/..%2Falice%2F{rest}",
        f"users/bob//%2E%2E/alice/{rest}",
    ):
        response = await client.delete(f"/api/files/{hostile}", headers=bob)
        assert response.status_code == 400, hostile
        response = await client.get(f"/api/files/{hostile}", headers=bob)
        assert response.status_code == 400, hostile
        response = await client.post(
            "/api/finish", json={"key": unquote(hostile), "filename": "x"}, headers=bob
        )
        assert response.status_code == 400, hostile
    for user in ("../alice", "alice/x", ".alice", "", "al ice"):
        response = await client.get("/api/files", headers={"X-User": user})
        assert response.status_code == (200 if user == "" else 400), user  # "": the default
    assert await storage.load(key) == b"alice's"
    alice = (await client.get("/api/files", headers=as_user("alice"))).json()["files"]
    assert [f["key"] for f in alice] == [key]


async def presigned_upload(
    client: httpx.AsyncClient, user: dict[str, str], filename: str, data: bytes
) -> str:
    """Upload as the page does: a presigned PUT, or the capped form when the app answers
    409 (S3 under a quota signs no PUT); the key."""
    presigned = await client.post(
        "/api/presign", json={"filename": filename, "size": len(data)}, headers=user
    )
    if presigned.status_code == 409:
        form = await client.post("/api/presign-post", json={"filename": filename}, headers=user)
        fields = form.json()["fields"]
        files = {"file": (filename, data, "application/octet-stream")}
        sent = await client.post(form.json()["url"], data=fields, files=files)
        assert sent.status_code in (200, 201, 204), sent.text
        key: str = form.json()["key"]
        return key
    assert presigned.status_code == 200, presigned.text
    assert (await client.put(presigned.json()["url"], content=data)).status_code == 200
    key = presigned.json()["key"]
    return key


async def test_finish_keeps_the_original_name_for_downloads_and_counts_the_quota(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient, storage: StorageBackend
) -> None:
    serve(example_app)
    alice = as_user("alice")
    key = await presigned_upload(client, alice, NAME, b"movie")
    finish = await client.post("/api/finish", json={"key": key, "filename": NAME}, headers=alice)
    assert finish.status_code == 200, finish.text
    assert finish.json()["name"] == NAME

    listed = (await client.get("/api/files", headers=alice)).json()["files"]
    assert [(f["name"], f["size"]) for f in listed] == [(NAME, 5)]
    download = await client.get(listed[0]["download_url"])
    assert download.content == b"movie"
    assert f"filename*=UTF-8''{quote(NAME)}" in download.headers["content-disposition"]
    through_app = await client.head(listed[0]["url"], headers=alice)
    assert f"filename*=UTF-8''{quote(NAME)}" in through_app.headers["content-disposition"]
    usage = (await client.get("/api/usage", headers=alice)).json()
    assert usage == {"user": "alice", "used": 5, "limit": 10**9, "max_upload": 100 * MIB}
    assert (await storage.stat(key)).size == 5


async def test_uploads_are_capped_by_the_users_quota_left(
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    storage: StorageBackend,
    client: httpx.AsyncClient,
) -> None:
    serve_example(monkeypatch, serve, EXAMPLE_USER_QUOTA_BYTES="1000")
    await upload_as(client, "alice", b"x" * 600)
    alice = as_user("alice")
    usage = (await client.get("/api/usage", headers=alice)).json()
    assert (usage["used"], usage["limit"], usage["max_upload"]) == (600, 1000, 400)
    too_big = await client.post("/api/presign", json={"filename": "a", "size": 401}, headers=alice)
    assert too_big.status_code == 413
    refused = await client.post("/api/files", files={"file": ("a.bin", b"y" * 401)}, headers=alice)
    assert refused.status_code == 413
    assert len(await storage.list_files("users/alice")) == 1
    # another user has a quota of their own
    assert (await client.get("/api/usage", headers=as_user("bob"))).json()["max_upload"] == 1000


@pytest.mark.parametrize("upload", ["put", "form"])
async def test_a_presigned_upload_reaching_a_fresh_worker_is_capped_by_the_users_quota(
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    local_storage: StorageBackend,
    client: httpx.AsyncClient,
    upload: str,
) -> None:
    # the URL was handed out by another worker, or before a restart: this process has
    # not seen alice yet, and her folder is full but for 400 bytes
    await local_storage.save("users/alice/old.bin", b"x" * 600)
    serve_example(monkeypatch, serve, EXAMPLE_USER_QUOTA_BYTES="1000")
    key = "users/alice/new.bin"
    if upload == "put":
        url = await local_storage.get_presigned_url(key, method="PUT")
        response = await client.put(url, content=b"y" * 401)
    else:
        post = await local_storage.get_presigned_post(key, max_bytes=401)
        files = {"file": ("new.bin", b"y" * 401, "application/octet-stream")}
        response = await client.post(post.url, data=post.fields, files=files)
    assert response.status_code == 413, response.text
    assert await local_storage.list_files("users/alice") == ["users/alice/old.bin"]


def _policy_conditions(fields: dict[str, str]) -> list[object]:
    conditions: list[object] = json.loads(base64.b64decode(fields["policy"]))["conditions"]
    return conditions


async def test_s3_form_policy_caps_at_the_users_quota_left(
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    s3_storage: StorageBackend,
    client: httpx.AsyncClient,
) -> None:
    # moto does not enforce POST policies: the cap is proven in the policy S3 would check
    serve_example(monkeypatch, serve, EXAMPLE_USER_QUOTA_BYTES="1000")
    await upload_as(client, "alice", b"x" * 600)
    alice = as_user("alice")
    form = await client.post("/api/presign-post", json={"filename": "a.pdf"}, headers=alice)
    assert form.status_code == 200, form.text
    assert form.json()["max_bytes"] == 400
    assert ["content-length-range", 0, 400] in _policy_conditions(form.json()["fields"])


async def test_s3_signs_no_put_under_a_users_quota(
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    s3_storage: StorageBackend,
    client: httpx.AsyncClient,
) -> None:
    # a PUT straight to S3 takes any size: a browser declaring 10 bytes could send 1001
    # past the quota (a check at /api/finish came after the bytes were stored, and a
    # browser never calling it kept them). The app answers 409: the page sends the form
    serve_example(monkeypatch, serve, EXAMPLE_USER_QUOTA_BYTES="1000")
    alice = as_user("alice")
    refused = await client.post(
        "/api/presign", json={"filename": "a.bin", "size": 10}, headers=alice
    )
    assert refused.status_code == 409
    assert "get_presigned_post" in refused.json()["detail"]
    assert await s3_storage.list_files("users/alice") == []


async def test_example_runs_on_memory_with_form_uploads(
    monkeypatch: pytest.MonkeyPatch, serve: Serve, base_url: str, client: httpx.AsyncClient
) -> None:
    serve_example(
        monkeypatch,
        serve,
        STORAGE_TYPE="MEMORY",
        STORAGE_LOCAL_BASE_URL=f"{base_url}/files",
        STORAGE_LOCAL_SIGNING_KEY=SIGNING_KEY,
        EXAMPLE_MAX_UPLOAD_BYTES="100",
    )
    alice = as_user("alice")
    form = (await client.post("/api/presign-post", json={"filename": NAME}, headers=alice)).json()
    files = {"file": ("blob", b"m" * 101, "video/mp4")}
    refused = await client.post(form["url"], data=form["fields"], files=files)
    assert refused.status_code == 413
    files = {"file": ("blob", b"m" * 100, "video/mp4")}
    posted = await client.post(form["url"], data=form["fields"], files=files)
    assert posted.status_code == 204, posted.text
    finish = await client.post(
        "/api/finish", json={"key": form["key"], "filename": NAME}, headers=alice
    )
    assert finish.status_code == 200, finish.text
    listed = (await client.get("/api/files", headers=alice)).json()["files"]
    assert [(f["name"], f["size"]) for f in listed] == [(NAME, 100)]
    download = await client.get(listed[0]["download_url"])
    assert download.content == b"m" * 100
    assert f"filename*=UTF-8''{quote(NAME)}" in download.headers["content-disposition"]
    assert (await client.get("/api/usage", headers=alice)).json()["used"] == 100


async def test_download_link_names_a_file_stored_by_another_tool_after_its_key(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient, storage: StorageBackend
) -> None:
    # no Content-Disposition stored: the presigned GET's filename= names the download
    await storage.save("users/demo/imports/report.csv", b"a,b\n")
    serve(example_app)
    listed = (await client.get("/api/files")).json()["files"]
    assert [f["name"] for f in listed] == ["report.csv"]
    download = await client.get(listed[0]["download_url"])
    assert download.content == b"a,b\n"
    assert download.headers["content-disposition"].startswith('attachment; filename="report.csv"')


async def test_a_stored_disposition_with_control_characters_is_listed_cleanly(
    serve: Serve, example_app: FastAPI, client: httpx.AsyncClient, storage: StorageBackend
) -> None:
    # set by another tool: a name with a line feed (percent-encoded in the header)
    await storage.save(
        "users/demo/x.bin", b"x", content_disposition="attachment; filename*=UTF-8''a%0Ab.bin"
    )
    serve(example_app)
    listed = await client.get("/api/files")
    assert listed.status_code == 200, listed.text
    assert [f["name"] for f in listed.json()["files"]] == ["ab.bin"]
