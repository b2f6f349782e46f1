"""What only a server that checks credentials can prove (moto accepts anything).

Wrong and unknown keys, tampered and expired presigned URLs, another user's bucket: each
is refused by the server and surfaces as StoragePermissionError, never as a missing object.
These run on Ceph RGW (``make test-ceph``) and skip on moto with the reason.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from file_storage import ObjectNotFoundError, StoragePermissionError
from tests.s3util import SERVER, MakeBackend, s3_backends

pytestmark = [pytest.mark.s3, pytest.mark.s3_needs("checks_signatures")]


@pytest.fixture
async def make_backend(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[MakeBackend]:
    async with s3_backends(moto_endpoint, s3_bucket, max_attempts=1) as make:
        yield make


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        return await http.get(url)


@pytest.mark.parametrize("operation", ["save", "load", "exists", "list_files"])
async def test_a_wrong_secret_key_is_a_permission_error(
    make_backend: MakeBackend, operation: str
) -> None:
    await make_backend().save("a.txt", b"x")
    backend = make_backend(secret_access_key="not-the-secret-of-this-user")
    call = {
        "save": lambda: backend.save("a.txt", b"y"),
        "load": lambda: backend.load("a.txt"),
        "exists": lambda: backend.exists("a.txt"),
        "list_files": lambda: backend.list_files(),
    }[operation]
    with pytest.raises(StoragePermissionError) as info:
        await call()
    assert info.value.operation == operation
    assert "not-the-secret" not in str(info.value)


async def test_an_unknown_access_key_is_a_permission_error(make_backend: MakeBackend) -> None:
    backend = make_backend(access_key_id="AKIANOSUCHUSERKEY000")
    with pytest.raises(StoragePermissionError) as info:
        await backend.load("a.txt")
    assert (info.value.operation, info.value.key) == ("load", "a.txt")


async def test_a_presigned_url_works_untampered(make_backend: MakeBackend) -> None:
    backend = make_backend()
    await backend.save("doc.txt", b"hello")
    response = await fetch(await backend.get_presigned_url("doc.txt"))
    assert (response.status_code, response.content) == (200, b"hello")


@pytest.mark.parametrize("part", ["key", "expiry", "signature"])
async def test_a_tampered_presigned_url_is_refused(make_backend: MakeBackend, part: str) -> None:
    backend = make_backend()
    await backend.save("doc.txt", b"hello")
    await backend.save("other.txt", b"secret")
    url = urlsplit(await backend.get_presigned_url("doc.txt", expires_in=60))
    query = dict(parse_qsl(url.query))
    path = url.path
    if part == "key":
        path = path.replace("doc.txt", "other.txt")
    elif part == "expiry":
        query["X-Amz-Expires"] = "604800"
    else:
        signature = query["X-Amz-Signature"]
        query["X-Amz-Signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    response = await fetch(urlunsplit(url._replace(path=path, query=urlencode(query))))
    assert response.status_code == 403
    assert b"secret" not in response.content


@pytest.mark.s3_needs("presign_expiry")
async def test_an_expired_presigned_url_is_refused(
    make_backend: MakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend()
    await backend.save("doc.txt", b"hello")
    import botocore.auth

    # signed an hour ago for 60 s: expired for 59 minutes, without waiting
    an_hour_ago = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(
        hours=1
    )
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: an_hour_ago)
    url = await backend.get_presigned_url("doc.txt", expires_in=60)
    monkeypatch.undo()
    response = await fetch(url)
    assert response.status_code == 403
    assert b"hello" not in response.content


@pytest.mark.s3_needs("second_user")
@pytest.mark.parametrize("key", ["a.txt", "missing.txt"])
async def test_another_users_bucket_is_a_permission_error_never_not_found(
    make_backend: MakeBackend, key: str
) -> None:
    await make_backend().save("a.txt", b"mine")
    assert SERVER.other_user is not None
    other_key, other_secret = SERVER.other_user
    stranger = make_backend(access_key_id=other_key, secret_access_key=other_secret)
    for call in (
        lambda: stranger.load(key),
        lambda: stranger.stat(key),
        lambda: stranger.exists(key),
        lambda: stranger.save(key, b"theirs"),
    ):
        with pytest.raises(StoragePermissionError) as info:
            await call()
        assert not isinstance(info.value, ObjectNotFoundError)
        assert info.value.key == key
    assert await make_backend().load("a.txt") == b"mine"
