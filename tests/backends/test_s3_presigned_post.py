"""S3 presigned POST over real HTTP. The refusals need a server that enforces POST
policies (Ceph RGW; moto stores any form upload without checking it, so they skip there).

The form from ``get_presigned_post`` is posted as a browser would: the size cap, the
signed content type and the expiry are the server's to enforce, and a refused form
stores nothing.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from file_storage import PresignedPost, S3StorageBackend
from tests.s3util import s3_backends, stored_keys

pytestmark = pytest.mark.s3
enforced = pytest.mark.s3_needs("enforces_post_policy")


@pytest.fixture(params=["aioboto3", "obstore"])
async def post_backend(
    request: pytest.FixtureRequest, moto_endpoint: str, s3_bucket: str
) -> AsyncIterator[S3StorageBackend]:
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make(client=request.param)


async def post_form(post: PresignedPost, data: bytes, **changes: str) -> httpx.Response:
    """Post the form as a browser does: its fields, then the file (S3 wants it last)."""
    fields = {**post.fields, **changes}
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        return await http.post(
            post.url, data=fields, files={"file": ("upload.bin", data, "application/octet-stream")}
        )


async def test_small_form_upload_lands_with_the_signed_content_type(
    post_backend: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    post = await post_backend.get_presigned_post("in/report.csv", max_bytes=1000, expires_in=60)
    response = await post_form(post, b"a,b\n1,2\n")
    assert response.status_code in (200, 201, 204), response.text
    assert await post_backend.load("in/report.csv") == b"a,b\n1,2\n"
    assert (await post_backend.stat("in/report.csv")).content_type == "text/csv"
    assert stored_keys(raw, s3_bucket) == ["storage/in/report.csv"]


@enforced
async def test_form_upload_over_max_bytes_is_refused_and_stores_nothing(
    post_backend: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    post = await post_backend.get_presigned_post("in/big.bin", max_bytes=1000)
    response = await post_form(post, b"x" * 1001)
    assert response.status_code == 400
    assert b"EntityTooLarge" in response.content
    assert stored_keys(raw, s3_bucket) == []
    exact = await post_form(post, b"y" * 1000)  # the cap itself is allowed
    assert exact.status_code in (200, 201, 204), exact.text
    assert await post_backend.get_size("in/big.bin") == 1000


@enforced
async def test_form_upload_with_another_content_type_is_refused(
    post_backend: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    post = await post_backend.get_presigned_post("in/page.txt", max_bytes=1000)
    assert post.fields["Content-Type"] == "text/plain"
    response = await post_form(post, b"<script>", **{"Content-Type": "text/html"})
    assert response.status_code == 403
    assert stored_keys(raw, s3_bucket) == []


@enforced
async def test_expired_form_upload_is_refused(
    post_backend: S3StorageBackend, raw: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiobotocore.signers
    import botocore.auth

    # signed an hour ago for 60 s: expired for 59 minutes, without waiting (the policy's
    # expiration is computed in aiobotocore's signer, its signature date in botocore's)
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    an_hour_ago = now - datetime.timedelta(hours=1)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: an_hour_ago)
    monkeypatch.setattr(aiobotocore.signers, "get_current_datetime", lambda: an_hour_ago)
    post = await post_backend.get_presigned_post("in/late.txt", max_bytes=1000, expires_in=60)
    monkeypatch.undo()
    expiration = json.loads(base64.b64decode(post.fields["policy"]))["expiration"]
    assert expiration < f"{now:%Y-%m-%dT%H:%M:%S}Z"  # really expired when posted
    response = await post_form(post, b"too late")
    assert response.status_code == 403
    assert stored_keys(raw, s3_bucket) == []


async def test_form_policy_allows_its_own_key_only(post_backend: S3StorageBackend) -> None:
    post = await post_backend.get_presigned_post("in/a.txt", max_bytes=10)
    conditions = json.loads(base64.b64decode(post.fields["policy"]))["conditions"]
    on_key = [c for c in conditions if "key" in c or (isinstance(c, list) and c[1] == "$key")]
    assert on_key == [{"key": "storage/in/a.txt"}]  # no "starts-with": one key exactly
    assert post.fields["key"] == "storage/in/a.txt"


@enforced
async def test_form_upload_to_another_key_is_refused(
    post_backend: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    post = await post_backend.get_presigned_post("in/a.txt", max_bytes=10)
    response = await post_form(post, b"x", key="storage/in/other.txt")
    assert response.status_code == 403
    assert stored_keys(raw, s3_bucket) == []
