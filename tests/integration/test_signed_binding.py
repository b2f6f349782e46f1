"""Signed URLs and forms are bound to where they were issued: two signed routers sharing
one signing key (two mounts, or one mount choosing a backend per request) never accept
each other's URLs, and a proxy that strips a path prefix changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from file_storage import LocalStorageBackend, MemoryStorageBackend, StorageBackend
from file_storage._signing import sign_url
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve

# awkward keys: a query and a fragment in the name, a percent sign, a space, Unicode
KEYS = ["user/data.txt", "u/a b?x=1&signature=0#frag.txt", "u/100%25 %2F.bin", "ünï/çà.txt"]


@pytest.fixture
def two_mounts(
    serve: Serve, base_url: str, tmp_path: Path
) -> tuple[LocalStorageBackend, LocalStorageBackend]:
    """``/files-a`` over root A and ``/files-b`` over root B, one signing key for both."""
    a = LocalStorageBackend(tmp_path / "a", base_url=f"{base_url}/files-a", signing_key=SIGNING_KEY)
    b = LocalStorageBackend(tmp_path / "b", base_url=f"{base_url}/files-b", signing_key=SIGNING_KEY)
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: a), prefix="/files-a")
    app.include_router(make_signed_url_router(get_backend=lambda: b), prefix="/files-b")
    serve(app)
    return a, b


def _moved(url: str, src: str, dst: str) -> str:
    assert f"/{src}/" in url
    return url.replace(f"/{src}/", f"/{dst}/", 1)


async def _post(client: httpx.AsyncClient, url: str, fields: dict[str, str]) -> httpx.Response:
    return await client.post(url, data=fields, files={"file": ("f.bin", b"forged", "text/plain")})


@pytest.mark.parametrize("key", KEYS)
async def test_get_url_of_one_mount_never_reads_the_other(
    two_mounts: tuple[LocalStorageBackend, LocalStorageBackend],
    client: httpx.AsyncClient,
    key: str,
) -> None:
    a, b = two_mounts
    await a.save(key, b"user data in A")
    await b.save(key, b"user data in B")
    url = await a.get_presigned_url(key)
    assert (await client.get(url)).content == b"user data in A"  # served where issued
    forged = await client.get(_moved(url, "files-a", "files-b"))
    assert forged.status_code == 403
    assert forged.json() == {"detail": "invalid signature for this URL and method"}
    assert (await client.head(_moved(url, "files-a", "files-b"))).status_code == 403


@pytest.mark.parametrize("key", KEYS)
async def test_put_url_of_one_mount_never_writes_the_other(
    two_mounts: tuple[LocalStorageBackend, LocalStorageBackend],
    client: httpx.AsyncClient,
    key: str,
) -> None:
    a, b = two_mounts
    await b.save(key, b"kept in B")
    url = await a.get_presigned_url(key, method="PUT")
    forged = await client.put(_moved(url, "files-a", "files-b"), content=b"forged")
    assert forged.status_code == 403
    assert await b.load(key) == b"kept in B"
    assert not await a.exists(key)
    fresh = await a.get_presigned_url("new/only-in-a.txt", method="PUT")
    assert (await client.put(_moved(fresh, "files-a", "files-b"), content=b"x")).status_code == 403
    assert await b.list_files() == [key]
    assert (await client.put(url, content=b"landed in A")).status_code == 200
    assert await a.load(key) == b"landed in A"


async def test_get_url_used_for_put_on_the_other_mount_is_refused(
    two_mounts: tuple[LocalStorageBackend, LocalStorageBackend], client: httpx.AsyncClient
) -> None:
    a, b = two_mounts
    await b.save("k.txt", b"kept in B")
    url = await a.get_presigned_url("k.txt")
    assert (await client.put(_moved(url, "files-a", "files-b"), content=b"x")).status_code == 403
    assert await b.load("k.txt") == b"kept in B"


async def test_form_of_one_mount_never_stores_in_the_other(
    two_mounts: tuple[LocalStorageBackend, LocalStorageBackend], client: httpx.AsyncClient
) -> None:
    a, b = two_mounts
    post = await a.get_presigned_post("in/form.txt", max_bytes=100)
    forged = await _post(client, _moved(post.url, "files-a", "files-b"), post.fields)
    assert forged.status_code == 403
    assert forged.json() == {"detail": "invalid signature for this form and key"}
    assert await b.list_files() == []
    assert (await _post(client, post.url, post.fields)).status_code == 204
    assert await a.load("in/form.txt") == b"forged"


async def test_expired_url_of_one_mount_is_refused_on_the_other_as_any_forgery(
    two_mounts: tuple[LocalStorageBackend, LocalStorageBackend], client: httpx.AsyncClient
) -> None:
    # "expired" only where the URL is genuine: the other mount tells a forger nothing
    a, b = two_mounts
    await a.save("k.txt", b"a")
    await b.save("k.txt", b"b")
    bound = await a._signing_binding()
    past = time.time() - 100
    url = sign_url(a._base_url or "", "k.txt", "GET", 10, SIGNING_KEY, bound=bound, now=past)
    assert (await client.get(url)).json() == {"detail": "the signed URL has expired"}
    forged = await client.get(_moved(url, "files-a", "files-b"))
    assert forged.status_code == 403
    assert forged.json() == {"detail": "invalid signature for this URL and method"}


async def test_url_signed_before_urls_were_bound_is_refused(
    two_mounts: tuple[LocalStorageBackend, LocalStorageBackend], client: httpx.AsyncClient
) -> None:
    # the message every URL was signed over until now: method, key, expiry, nothing more
    a, _ = two_mounts
    await a.save("k.txt", b"a")
    expires = int(time.time()) + 600
    for method in ("GET", "PUT"):
        message = f"{method}\nk.txt\n{expires}".encode()
        signature = hmac.new(SIGNING_KEY.encode(), message, hashlib.sha256).hexdigest()
        url = f"{a._base_url}/{quote('k.txt')}?expires={expires}&signature={signature}"
        response = await client.request(method, url, content=b"x" if method == "PUT" else None)
        assert response.status_code == 403
        assert response.json() == {"detail": "invalid signature for this URL and method"}
    assert await a.load("k.txt") == b"a"


async def test_backends_over_one_root_accept_each_others_urls(
    serve: Serve, base_url: str, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    # a worker presigning over a symlink to the folder the app serves: one store, so
    # its URLs are the app's own
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    served = LocalStorageBackend(
        tmp_path / "data", base_url=f"{base_url}/files", signing_key=SIGNING_KEY
    )
    worker = LocalStorageBackend(
        tmp_path / "link", base_url=f"{base_url}/files", signing_key=SIGNING_KEY
    )
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: served), prefix="/files")
    serve(app)
    put = await worker.get_presigned_url("w/report.txt", method="PUT")
    assert (await client.put(put, content=b"from the worker")).status_code == 200
    assert await served.load("w/report.txt") == b"from the worker"
    assert (await client.get(await worker.get_presigned_url("w/report.txt"))).status_code == 200


def _per_tenant(backends: dict[str, StorageBackend]) -> Callable[[Request], StorageBackend]:
    def get_backend(request: Request) -> StorageBackend:
        return backends[request.headers["x-tenant"]]

    return get_backend


def _tenants(kind: str, tmp_path: Path) -> dict[str, StorageBackend]:
    """Two tenants' backends with the same base URL and key: only the data differs."""
    if kind == "memory":
        return {t: MemoryStorageBackend(base_url="/files", signing_key=SIGNING_KEY) for t in "ab"}
    return {
        t: LocalStorageBackend(tmp_path / t, base_url="/files", signing_key=SIGNING_KEY)
        for t in "ab"
    }


@pytest.mark.parametrize("kind", ["local", "memory"])
async def test_one_mount_choosing_the_backend_per_request_never_crosses_tenants(
    serve: Serve, client: httpx.AsyncClient, tmp_path: Path, kind: str
) -> None:
    tenants = _tenants(kind, tmp_path)
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=_per_tenant(tenants)), prefix="/files")
    serve(app)
    await tenants["a"].save("doc.txt", b"tenant a")
    await tenants["b"].save("doc.txt", b"tenant b")
    url = await tenants["a"].get_presigned_url("doc.txt")
    assert (await client.get(url, headers={"x-tenant": "a"})).content == b"tenant a"
    assert (await client.get(url, headers={"x-tenant": "b"})).status_code == 403
    put = await tenants["a"].get_presigned_url("doc.txt", method="PUT")
    assert (await client.put(put, content=b"x", headers={"x-tenant": "b"})).status_code == 403
    assert await tenants["b"].load("doc.txt") == b"tenant b"


class _StripPrefix:
    """A proxy in front of the app: it takes ``/public`` off every path, and says so in
    ``root_path`` only when told to (uvicorn ``--root-path``)."""

    def __init__(self, app: ASGIApp, *, tell: bool) -> None:
        self.app = app
        self.tell = tell

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/public/"):
            scope = dict(scope)
            scope["path"] = scope["path"].removeprefix("/public")
            scope["raw_path"] = scope["raw_path"].removeprefix(b"/public")
            if self.tell:
                scope["root_path"] = "/public"
        await self.app(scope, receive, send)


@pytest.mark.parametrize("tell", [False, True], ids=["no-root-path", "root-path"])
async def test_urls_work_behind_a_proxy_that_strips_a_path_prefix(
    serve: Serve, base_url: str, client: httpx.AsyncClient, tmp_path: Path, tell: bool
) -> None:
    backend = LocalStorageBackend(
        tmp_path / "p", base_url=f"{base_url}/public/files", signing_key=SIGNING_KEY
    )
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    serve(_StripPrefix(app, tell=tell))  # type: ignore[arg-type]
    put = await backend.get_presigned_url("in/a b?.txt", method="PUT")
    assert put.startswith(f"{base_url}/public/files/in/a%20b%3F.txt?")
    assert (await client.put(put, content=b"through the proxy")).status_code == 200
    get = await backend.get_presigned_url("in/a b?.txt")
    assert (await client.get(get)).content == b"through the proxy"
    post = await backend.get_presigned_post("in/form.txt")
    assert (await _post(client, post.url, post.fields)).status_code == 204


async def test_put_url_replayed_after_the_quota_shrank_is_refused_and_stores_nothing(
    serve: Serve, base_url: str, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    backend = LocalStorageBackend(
        tmp_path / "q", base_url=f"{base_url}/files", signing_key=SIGNING_KEY
    )
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    serve(app)
    url = await backend.get_presigned_url("in/a.bin", method="PUT")
    assert (await client.put(url, content=b"x" * 100)).status_code == 200
    backend.set_quota("in", 150)
    replay = await client.put(url, content=b"y" * 200)
    assert replay.status_code == 413
    assert await backend.load("in/a.bin") == b"x" * 100
    assert (await client.put(url, content=b"z" * 150)).status_code == 200


async def test_memory_url_served_by_another_worker_says_why_it_is_refused(
    serve: Serve, client: httpx.AsyncClient
) -> None:
    # a server's worker processes each hold their own memory store: a URL one signed,
    # sent to another, is refused with a reason beyond "invalid signature" (which reads
    # as a wrong signing key), and nothing is stored there
    signer, other = (MemoryStorageBackend(base_url="/files", signing_key=SIGNING_KEY) for _ in "ab")
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: other), prefix="/files")
    serve(app)
    hint = "a memory backend answers only the URLs it signed itself"
    put = await signer.get_presigned_url("w.txt", method="PUT")
    refused = await client.put(put, content=b"lost")
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("invalid signature for this URL and method; ")
    assert hint in refused.json()["detail"]
    form = await signer.get_presigned_post("w.txt")
    posted = await _post(client, form.url, form.fields)
    assert posted.status_code == 403
    assert hint in posted.json()["detail"]
    assert await other.list_files() == []
