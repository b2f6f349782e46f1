"""Presigned URLs of the stores a URL reaches without the library (S3, GCS, Azure): what
whoever holds one cannot do with it (push a quota over, serve a page from the store)."""

from __future__ import annotations

import base64
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from file_storage import StorageBackend, StorageConfigError, StorageQuotaExceededError
from tests.conftest import s3_backends
from tests.quota_redis.server import RedisServer

CLOUDS = [
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("s3_obstore", marks=pytest.mark.s3),
    pytest.param("gcs", marks=pytest.mark.gcs),
    pytest.param("azure", marks=pytest.mark.azure),
]
# the stores whose test servers apply a GET URL's response headers (fake-gcs-server
# ignores them: GCS is checked on the signed query)
SERVED = [
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("s3_obstore", marks=pytest.mark.s3),
    pytest.param("azure", marks=pytest.mark.azure),
]


@pytest.fixture(params=CLOUDS)
def cloud(request: pytest.FixtureRequest) -> StorageBackend:
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result


@pytest.fixture(params=SERVED)
def served(request: pytest.FixtureRequest) -> StorageBackend:
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    return response


# ------------------------------------------------------------------ PUT and quotas


@pytest.mark.parametrize("quota_prefix", ["", "up/"])
async def test_put_url_under_a_quota_is_refused(cloud: StorageBackend, quota_prefix: str) -> None:
    # the upload would go straight to the store, whose PUT has no size cap: its holder
    # could store any size past the quota
    cloud.set_quota(quota_prefix, 100)
    with pytest.raises(StorageConfigError, match="get_presigned_post") as caught:
        await cloud.get_presigned_url("up/a.bin", method="PUT")
    assert (caught.value.operation, caught.value.key) == ("get_presigned_url", "up/a.bin")


async def test_put_url_outside_every_quota_is_signed(cloud: StorageBackend) -> None:
    cloud.set_quota("in/", 100)
    url = await cloud.get_presigned_url("out/a.bin", method="PUT")
    assert url.startswith("http")
    await cloud.get_presigned_url("in/a.bin")  # a GET URL stores nothing


# ------------------------------------------------------------------ GET: served safely


@pytest.mark.parametrize(
    ("key", "stored_type"),
    [
        ("page.html", "text/html"),
        ("pic.svg", "image/svg+xml"),
        ("feed.xml", "application/xml"),
        ("doc.xhtml", "application/xhtml+xml"),
        ("innocent.png", "text/html; charset=utf-8"),
    ],
)
async def test_get_url_of_active_content_is_a_download(
    served: StorageBackend, key: str, stored_type: str
) -> None:
    await served.save(key, b"<script>alert(document.domain)</script>", content_type=stored_type)
    response = await _get(await served.get_presigned_url(key))
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.content == b"<script>alert(document.domain)</script>"


@pytest.mark.parametrize(
    "stored_type", ["image/png, text/html", "text/javascript", "application/x-javascript"]
)
async def test_get_url_of_a_list_or_script_type_serves_bytes(
    served: StorageBackend, stored_type: str
) -> None:
    # a list is read by browsers as its last type; a script runs as the page loading it
    await served.save("x.png", b"payload", content_type=stored_type)
    response = await _get(await served.get_presigned_url("x.png"))
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment")


async def test_get_url_of_an_image_is_shown_inline(served: StorageBackend) -> None:
    await served.save("pic.png", b"\x89PNG", content_type="image/png")
    response = await _get(await served.get_presigned_url("pic.png"))
    assert response.headers["content-type"] == "image/png"
    assert "attachment" not in response.headers.get("content-disposition", "")


async def test_get_url_keeps_the_stored_file_name_of_active_content(
    served: StorageBackend,
) -> None:
    await served.save(
        "p.html", b"<p>", content_type="text/html", content_disposition='inline; filename="p.html"'
    )
    response = await _get(await served.get_presigned_url("p.html"))
    assert response.headers["content-disposition"] == 'attachment; filename="p.html"'


async def test_get_url_pins_the_type_it_was_signed_for(served: StorageBackend) -> None:
    # replaced by a page after the URL was handed out, the object is still served as the
    # image the URL was made for (the URL's holder never gets a page from the store)
    await served.save("avatar.png", b"\x89PNG", content_type="image/png")
    url = await served.get_presigned_url("avatar.png")
    await served.save("avatar.png", b"<script>1</script>", content_type="text/html")
    response = await _get(url)
    assert response.headers["content-type"] == "image/png"


async def test_get_url_of_a_missing_object_pins_the_type_its_key_names(
    served: StorageBackend,
) -> None:
    url = await served.get_presigned_url("later.png")
    await served.save("later.png", b"<script>1</script>", content_type="text/html")
    assert (await _get(url)).headers["content-type"] == "image/png"
    url = await served.get_presigned_url("later2.html")
    await served.save("later2.html", b"<p>", content_type="text/html")
    assert (await _get(url)).headers["content-disposition"].startswith("attachment")


async def test_get_url_with_a_caller_type_serves_it_as_asked(served: StorageBackend) -> None:
    # the caller's content_type is its word (its own record of the file): served inline
    await served.save("report.html", b"<p>", content_type="text/html")
    response = await _get(await served.get_presigned_url("report.html", content_type="text/html"))
    assert response.headers["content-type"].startswith("text/html")
    assert "content-disposition" not in response.headers


@pytest.mark.gcs
async def test_gcs_get_url_of_active_content_signs_a_download(gcs_backend: StorageBackend) -> None:
    await gcs_backend.save("page.html", b"<p>", content_type="text/html")
    query = parse_qs(urlsplit(await gcs_backend.get_presigned_url("page.html")).query)
    assert query["response-content-type"] == ["text/html"]
    assert query["response-content-disposition"] == ["attachment"]
    await gcs_backend.save("pic.png", b"\x89PNG", content_type="image/png")
    query = parse_qs(urlsplit(await gcs_backend.get_presigned_url("pic.png")).query)
    assert query["response-content-type"] == ["image/png"]
    assert "response-content-disposition" not in query


@pytest.mark.s3
@pytest.mark.parametrize("own", [True, False], ids=["set-here", "set-by-another-process"])
async def test_put_url_under_a_quota_kept_in_redis_is_refused(
    moto_endpoint: str, s3_bucket: str, redis_server: RedisServer, own: bool
) -> None:
    # with the shared ledger a quota lives in Redis, set by this process or another one:
    # a PUT URL for a key it covers is refused all the same
    namespace = f"test:{uuid.uuid4().hex[:12]}"
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        setter = make(
            prefix="storage",
            region="us-east-1",
            quota_redis_url=redis_server.url,
            quota_redis_namespace=namespace,
        )
        signer = (
            setter
            if own
            else make(
                prefix="storage",
                region="us-east-1",
                quota_redis_url=redis_server.url,
                quota_redis_namespace=namespace,
            )
        )
        setter.set_quota("up/", 100)
        await setter.save("up/first.bin", b"x" * 60)  # the quota reaches Redis with a step
        with pytest.raises(StorageConfigError, match="get_presigned_post"):
            await signer.get_presigned_url("up/a.bin", method="PUT")
        assert (await signer.get_presigned_url("out/a.bin", method="PUT")).startswith("http")
        # and the form upload it names is capped at what the quota has left (S3 checks
        # the policy's content-length-range; moto does not, so the policy is read)
        post = await signer.get_presigned_post("up/b.bin")
        policy = json.loads(base64.b64decode(post.fields["policy"]))
        assert ["content-length-range", 0, 40] in policy["conditions"]
        await setter.save("up/c.bin", b"z" * 40)
        with pytest.raises(StorageQuotaExceededError):  # 100 of 100 used: nothing left
            await signer.get_presigned_post("up/d.bin")
