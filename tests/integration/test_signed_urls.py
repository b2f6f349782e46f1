"""signed_url_router over real HTTP: the local backend's presigned GET and PUT URLs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from file_storage import LocalStorageBackend, MemoryStorageBackend
from file_storage._signing import sign_url
from file_storage.fastapi import get_storage, make_signed_url_router, signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve

DATA = b"0123456789" * 100  # 1,000 bytes


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


@pytest.fixture
async def stored(local_storage: LocalStorageBackend) -> str:
    return await local_storage.save("docs/report.txt", DATA)


@pytest.fixture
def server(serve: Serve, local_example_app: FastAPI) -> str:
    """The example service, which mounts signed_url_router at the base URL's path."""
    return serve(local_example_app)


async def test_get_url_downloads_with_safety_headers(
    server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend, stored: str
) -> None:
    url = await local_storage.get_presigned_url(stored)
    assert url.startswith(f"{server}/files/docs/report.txt?expires=")
    response = await client.get(url)
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox"


async def test_get_url_serves_ranges_and_head(
    server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend, stored: str
) -> None:
    url = await local_storage.get_presigned_url(stored)
    partial = await client.get(url, headers={"Range": "bytes=-5"})
    assert partial.status_code == 206
    assert partial.content == DATA[-5:]
    head = await client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(DATA))


async def test_put_url_stores_the_body_with_its_content_type(
    server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend
) -> None:
    url = await local_storage.get_presigned_url("in/photo", method="PUT")
    response = await client.put(url, content=b"\x89PNG...", headers={"Content-Type": "image/png"})
    assert response.status_code == 200
    info = await local_storage.stat("in/photo")
    assert response.headers["etag"] == info.etag
    assert info.content_type == "image/png"
    assert await local_storage.load("in/photo") == b"\x89PNG..."


def query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def flip_last_hex_digit(signature: str) -> str:
    return signature[:-1] + ("1" if signature[-1] == "0" else "0")


TAMPERINGS: dict[str, Callable[[str], str]] = {
    "key": lambda url: url.replace("/docs/report.txt?", "/docs/other.txt?"),
    "expiry": lambda url: with_query(url, expires=str(int(query(url)["expires"]) + 1)),
    "signature": lambda url: with_query(
        url, signature=flip_last_hex_digit(query(url)["signature"])
    ),
    "no-query": lambda url: url.split("?")[0],
    "empty-signature": lambda url: with_query(url, signature=""),
    "non-ascii-signature": lambda url: with_query(url, signature="\u00e9" * 64),
    "odd-digit-expiry": lambda url: with_query(
        url, expires="\u00b2"
    ),  # str.isdigit() but not int()
    "huge-expiry": lambda url: with_query(url, expires="9" * 5000),
    "negative-expiry": lambda url: with_query(url, expires="-1"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
async def test_tampered_url_is_403(
    server: str,
    client: httpx.AsyncClient,
    local_storage: LocalStorageBackend,
    stored: str,
    tampering: str,
) -> None:
    await local_storage.save("docs/other.txt", b"other")
    url = await local_storage.get_presigned_url(stored)
    forged = TAMPERINGS[tampering](url)
    assert forged != url
    response = await client.get(forged)
    assert response.status_code == 403
    assert response.json() == {"detail": "invalid signature for this URL and method"}


async def test_expired_url_is_403(
    server: str, client: httpx.AsyncClient, stored: str, local_storage: LocalStorageBackend
) -> None:
    # signed 100 s ago for 10 s: expired without waiting
    bound = await local_storage._signing_binding()
    url = sign_url(
        f"{server}/files", stored, "GET", 10, SIGNING_KEY, bound=bound, now=time.time() - 100
    )
    response = await client.get(url)
    assert response.status_code == 403
    assert response.json() == {"detail": "the signed URL has expired"}
    put_url = sign_url(
        f"{server}/files", "new.txt", "PUT", 10, SIGNING_KEY, bound=bound, now=time.time() - 100
    )
    assert (await client.put(put_url, content=b"x")).status_code == 403
    assert not await local_storage.exists("new.txt")


async def test_url_valid_for_longer_than_any_presign_is_403(
    server: str, client: httpx.AsyncClient, stored: str, local_storage: LocalStorageBackend
) -> None:
    # a signer whose clock ran 30 days ahead: its URLs, valid an hour there, would stay
    # valid for a month here, past the 7 days no presigned URL may live
    ahead = time.time() + 30 * 86400
    bound = await local_storage._signing_binding()
    url = sign_url(f"{server}/files", stored, "GET", 3600, SIGNING_KEY, bound=bound, now=ahead)
    response = await client.get(url)
    assert response.status_code == 403
    assert response.json() == {"detail": "the signed URL expires later than any URL may"}
    put_url = sign_url(
        f"{server}/files", "new.txt", "PUT", 3600, SIGNING_KEY, bound=bound, now=ahead
    )
    assert (await client.put(put_url, content=b"x")).status_code == 403
    assert not await local_storage.exists("new.txt")
    # the longest a URL may live, signed by a clock a few minutes ahead, still works
    longest = sign_url(
        f"{server}/files", stored, "GET", 604800, SIGNING_KEY, bound=bound, now=time.time() + 300
    )
    assert (await client.get(longest)).status_code == 200


async def get_raw(server: str, target: str) -> httpx.Response:
    """GET ``target`` byte for byte (httpx would normalize dot segments)."""
    async with httpx.AsyncClient(trust_env=False) as raw:
        request = raw.build_request("GET", server)
        request.url = request.url.copy_with(raw_path=target.encode())
        return await raw.send(request)


# a URL signed for docs/report.txt, sent with another spelling of its path: the same key
# (200, its bytes), or refused; never another object (the request line is sent as is)
PATH_SPELLINGS = {
    "/files/docs%2Freport.txt": 200,  # an encoded slash: the same key
    "/files/docs%2freport.txt": 200,
    "/files/docs/%2E%2E/secret.txt": 400,  # dot segments decoded: not a key
    "/files/docs/%2e/report.txt": 400,
    "/files/docs//report.txt": 400,
    "/files//docs/report.txt": 400,
    "/files/docs/report.txt/": 400,
    "/files/docs/report.txt%00": 400,
    "/files/docs%252Freport.txt": 403,  # double-encoded: the key "docs%2Freport.txt"
    "/files/DOCS/report.txt": 403,
    "/files/docs/report.tx%74": 200,
    "/files/docs/report.txt;x": 403,
}


@pytest.mark.parametrize("spelling", sorted(PATH_SPELLINGS))
async def test_get_url_serves_its_one_key_under_any_spelling_of_the_path(
    server: str, local_storage: LocalStorageBackend, stored: str, spelling: str
) -> None:
    await local_storage.save("secret.txt", b"secret")
    await local_storage.save("docs%2Freport.txt", b"other")
    url = await local_storage.get_presigned_url(stored)
    response = await get_raw(server, f"{spelling}?{urlsplit(url).query}")
    assert response.status_code == PATH_SPELLINGS[spelling], response.text
    if response.status_code == 200:
        assert response.content == DATA


async def test_get_url_of_one_unicode_spelling_never_serves_the_other(
    server: str, local_storage: LocalStorageBackend
) -> None:
    # "café" as one letter (NFC) and as "e" plus an accent (NFD) are two keys
    await local_storage.save("caf\u00e9.txt", b"nfc")
    await local_storage.save("cafe\u0301.txt", b"nfd")
    url = await local_storage.get_presigned_url("caf\u00e9.txt")
    assert (await get_raw(server, f"/files/caf%C3%A9.txt?{urlsplit(url).query}")).content == b"nfc"
    other = await get_raw(server, f"/files/cafe%CC%81.txt?{urlsplit(url).query}")
    assert other.status_code == 403


async def test_get_url_never_works_for_put(
    server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend, stored: str
) -> None:
    url = await local_storage.get_presigned_url(stored, method="GET")
    response = await client.put(url, content=b"overwritten")
    assert response.status_code == 403
    assert await local_storage.load(stored) == DATA


async def test_put_url_never_works_for_get_or_head(
    server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend, stored: str
) -> None:
    url = await local_storage.get_presigned_url(stored, method="PUT")
    assert (await client.get(url)).status_code == 403
    assert (await client.head(url)).status_code == 403


async def test_missing_object_is_404(
    server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend
) -> None:
    url = await local_storage.get_presigned_url("docs/missing.txt")
    response = await client.get(url)
    assert response.status_code == 404
    assert response.json() == {"detail": "stat 'docs/missing.txt': object not found"}


async def test_invalid_key_is_400(
    server: str, client: httpx.AsyncClient, local_storage: LocalStorageBackend
) -> None:
    # the backend never signs such a key; sign it by hand to get past the signature check
    bound = await local_storage._signing_binding()
    url = sign_url(f"{server}/files", "a\\b.txt", "GET", 60, SIGNING_KEY, bound=bound)
    response = await client.get(url)
    assert response.status_code == 400
    assert "backslash" in response.json()["detail"]
    long_segment = sign_url(f"{server}/files", "x" * 256, "PUT", 60, SIGNING_KEY, bound=bound)
    assert (await client.put(long_segment, content=b"x")).status_code == 400


@pytest.fixture
def tiny_quota(monkeypatch: pytest.MonkeyPatch, local_storage: LocalStorageBackend) -> int:
    monkeypatch.setenv("STORAGE_LOCAL_MAX_SIZE_GB", "0.000002")  # 2,000 bytes
    return 2000


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_put_over_quota_is_413_and_stores_nothing(
    tiny_quota: int,
    server: str,
    client: httpx.AsyncClient,
    local_storage: LocalStorageBackend,
    stored: str,
    declared: bool,
) -> None:
    body = b"y" * 1500  # 1,000 stored + 1,500 > 2,000

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    url = await local_storage.get_presigned_url("big.bin", method="PUT")
    response = await client.put(url, content=body if declared else chunked())
    assert response.status_code == 413
    assert "quota" in response.json()["detail"]
    assert await local_storage.list_files() == [stored]
    # no temp file left (the sidecar folder, never a key, holds the key's lock)
    left = sorted(p.name for p in local_storage.root.iterdir())
    assert [name for name in left if name != ".file_storage\\meta"] == ["docs"]
    assert not [p for p in local_storage.root.rglob("*") if "\\tmp-" in p.name]


async def test_put_overwrite_counts_only_the_difference(
    tiny_quota: int,
    server: str,
    client: httpx.AsyncClient,
    local_storage: LocalStorageBackend,
    stored: str,
) -> None:
    url = await local_storage.get_presigned_url(stored, method="PUT")
    response = await client.put(url, content=b"z" * 1900)  # replaces the 1,000 bytes
    assert response.status_code == 200
    assert await local_storage.get_size(stored) == 1900


async def test_router_answers_404_when_the_backend_cannot_sign(
    serve: Serve, client: httpx.AsyncClient, base_url: str
) -> None:
    app = FastAPI()
    app.include_router(signed_url_router, prefix="/files")
    memory = MemoryStorageBackend()
    app.dependency_overrides[get_storage] = lambda: memory
    serve(app)
    signer = MemoryStorageBackend(base_url=f"{base_url}/files", signing_key=SIGNING_KEY)
    url = await signer.get_presigned_url("a.txt")
    response = await client.get(url)
    assert response.status_code == 404
    assert response.json() == {"detail": "signed URLs are not enabled on this server"}


@pytest.fixture
def cors_server(serve: Serve, tmp_path: object, base_url: str) -> LocalStorageBackend:
    backend = LocalStorageBackend(
        f"{tmp_path}/cors", base_url=f"{base_url}/signed", signing_key=SIGNING_KEY
    )
    app = FastAPI()
    router = make_signed_url_router(
        get_backend=lambda: backend, allow_origins=["http://app.localhost:3000"]
    )
    app.include_router(router, prefix="/signed")
    serve(app)
    return backend


async def test_cors_preflight_and_put_from_an_allowed_origin(
    cors_server: LocalStorageBackend, client: httpx.AsyncClient
) -> None:
    url = await cors_server.get_presigned_url("c.txt", method="PUT")
    origin = "http://app.localhost:3000"
    preflight = await client.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "PUT" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"

    put = await client.put(url, content=b"hi", headers={"Origin": origin})
    assert put.status_code == 200
    assert put.headers["access-control-allow-origin"] == origin
    assert "ETag" in put.headers["access-control-expose-headers"]
    assert await cors_server.load("c.txt") == b"hi"


async def test_cors_get_exposes_the_download_name(
    cors_server: LocalStorageBackend, client: httpx.AsyncClient
) -> None:
    # a page's fetch() of a presigned GET reads the file's name from Content-Disposition,
    # which a browser hides from scripts unless the answer exposes it
    await cors_server.save("r.pdf", b"%PDF")
    url = await cors_server.get_presigned_url("r.pdf", filename="rapport été.pdf")
    got = await client.get(url, headers={"Origin": "http://app.localhost:3000"})
    assert got.status_code == 200
    assert "rapport" in got.headers["content-disposition"]
    exposed = {h.strip().lower() for h in got.headers["access-control-expose-headers"].split(",")}
    assert {"content-disposition", "etag", "content-length", "content-range"} <= exposed


async def test_cors_refuses_other_origins(
    cors_server: LocalStorageBackend, client: httpx.AsyncClient
) -> None:
    url = await cors_server.get_presigned_url("c.txt", method="PUT")
    preflight = await client.options(
        url, headers={"Origin": "http://evil.localhost", "Access-Control-Request-Method": "PUT"}
    )
    assert preflight.status_code == 403
    assert "access-control-allow-origin" not in preflight.headers


@pytest.mark.parametrize(
    "origin", [None, "http://evil.localhost", "http://app.localhost:3000"], ids=str
)
async def test_cors_answers_vary_on_origin_whatever_the_origin(
    cors_server: LocalStorageBackend, client: httpx.AsyncClient, origin: str | None
) -> None:
    # a browser caches an <img>'s answer (no Origin) and reuses it for a fetch() from the
    # allowed origin: without Vary it lacks Access-Control-Allow-Origin and the fetch fails
    await cors_server.save("c.txt", b"hi")
    url = await cors_server.get_presigned_url("c.txt")
    headers = {} if origin is None else {"Origin": origin}
    response = await client.get(url, headers=headers)
    assert response.status_code == 200
    assert response.headers["vary"] == "Origin"
    missing = await client.get(url.replace("c.txt", "gone.txt"), headers=headers)
    assert missing.headers["vary"] == "Origin"
    preflight = await client.options(
        url, headers={**headers, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.headers["vary"] == "Origin"
