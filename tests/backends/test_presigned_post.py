"""get_presigned_post: the cap each backend signs (the form's round trip is in
tests/integration/test_presigned_post.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    StorageBackend,
    StorageConfigError,
    StorageQuotaExceededError,
)
from file_storage._post_policy import check_post

SECRET = "post-signing-key-0123456789abcdef0123"


@pytest.fixture
async def signer(tmp_path: Path) -> Any:
    backend = LocalStorageBackend(
        tmp_path / "s", base_url="http://127.0.0.1:9/files", signing_key=SECRET
    )
    yield backend
    await backend.aclose()


def _policy(fields: dict[str, str]) -> dict[str, Any]:
    policy: dict[str, Any] = json.loads(base64.b64decode(fields["policy"]))
    return policy


async def test_local_form_is_signed_for_its_key_and_cap(signer: LocalStorageBackend) -> None:
    post = await signer.get_presigned_post("in/a b.csv", max_bytes=500, expires_in=60)
    assert post.url == "http://127.0.0.1:9/files/in/a%20b.csv"
    assert post.fields["max_bytes"] == "500"
    assert post.fields["content_type"] == "text/csv"
    bound = await signer._signing_binding()
    assert check_post("in/a b.csv", post.fields, SECRET, bound=bound) == "valid"
    assert check_post("in/other.csv", post.fields, SECRET, bound=bound) == "invalid"
    capped = {**post.fields, "max_bytes": "5000"}
    assert check_post("in/a b.csv", capped, SECRET, bound=bound) == "invalid"
    typed = {**post.fields, "content_type": "text/html"}
    assert check_post("in/a b.csv", typed, SECRET, bound=bound) == "invalid"
    # bound to the signer's mount path and root: another's router refuses it
    for other in (
        LocalStorageBackend(signer.root, base_url="http://127.0.0.1:9/other", signing_key=SECRET),
        LocalStorageBackend(f"{signer.root}-2", base_url=signer._base_url, signing_key=SECRET),
    ):
        assert (
            check_post("in/a b.csv", post.fields, SECRET, bound=await other._signing_binding())
            == "invalid"
        )


async def test_local_cap_is_the_quota_left_when_signed(signer: LocalStorageBackend) -> None:
    signer.set_quota("", 1000)
    signer.set_quota("users/u1", 700)
    await signer.save("users/u1/old.bin", b"x" * 600)
    await signer.save("other.bin", b"x" * 100)
    assert (await signer.get_presigned_post("users/u1/new.bin")).fields["max_bytes"] == "100"
    assert (await signer.get_presigned_post("users/u2/new.bin")).fields["max_bytes"] == "300"
    capped = await signer.get_presigned_post("users/u2/new.bin", max_bytes=50)
    assert capped.fields["max_bytes"] == "50"
    # replacing an object frees its own bytes
    again = await signer.get_presigned_post("users/u1/old.bin")
    assert again.fields["max_bytes"] == "700"


async def test_local_no_cap_without_quota_or_max_bytes(signer: LocalStorageBackend) -> None:
    assert (await signer.get_presigned_post("a.bin")).fields["max_bytes"] == ""


async def test_full_quota_refuses_to_sign(signer: LocalStorageBackend) -> None:
    signer.set_quota("", 10)
    await signer.save("a.bin", b"x" * 10)
    with pytest.raises(StorageQuotaExceededError) as info:
        await signer.get_presigned_post("b.bin")
    assert (info.value.operation, info.value.key) == ("get_presigned_post", "b.bin")


async def test_local_without_signing_key_raises_config_error(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path)
    with pytest.raises(StorageConfigError, match="STORAGE_LOCAL_SIGNING_KEY"):
        await backend.get_presigned_post("a.txt")


async def test_memory_without_signing_key_raises_config_error() -> None:
    with pytest.raises(StorageConfigError, match="STORAGE_LOCAL_SIGNING_KEY"):
        await MemoryStorageBackend().get_presigned_post("a.txt")


async def test_memory_form_is_signed_for_its_key_and_the_quota_left() -> None:
    backend = MemoryStorageBackend(base_url="http://127.0.0.1:9/files", signing_key=SECRET)
    backend.set_quota("u", 1000)
    await backend.save("u/old.bin", b"x" * 600)
    post = await backend.get_presigned_post("u/a b.csv", max_bytes=500, expires_in=60)
    assert post.url == "http://127.0.0.1:9/files/u/a%20b.csv"
    assert (post.fields["max_bytes"], post.fields["content_type"]) == ("400", "text/csv")
    bound = await backend._signing_binding()
    assert check_post("u/a b.csv", post.fields, SECRET, bound=bound) == "valid"
    assert check_post("u/other.csv", post.fields, SECRET, bound=bound) == "invalid"
    twin = MemoryStorageBackend(base_url="http://127.0.0.1:9/files", signing_key=SECRET)
    assert check_post("u/a b.csv", post.fields, SECRET, bound=await twin._signing_binding()) == (
        "invalid"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 604_801}, "expires_in"),
        ({"max_bytes": -1}, "max_bytes"),
        ({"max_bytes": 1.5}, "max_bytes"),
        ({"content_type": "text/html\r\nX: y"}, "content_type"),
        ({"content_type": "nonsense"}, "content_type"),
    ],
)
async def test_bad_arguments_raise_value_error(
    signer: LocalStorageBackend, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        await signer.get_presigned_post("a.txt", **kwargs)


@pytest.mark.s3
async def test_s3_policy_carries_the_cap_and_the_content_type(s3_backend: StorageBackend) -> None:
    post = await s3_backend.get_presigned_post("in/a.csv", max_bytes=1234, expires_in=60)
    assert post.fields["key"] == "storage/in/a.csv"
    assert post.fields["Content-Type"] == "text/csv"
    conditions = _policy(post.fields)["conditions"]
    assert ["content-length-range", 0, 1234] in conditions
    assert {"Content-Type": "text/csv"} in conditions


@pytest.mark.s3
async def test_s3_policy_cap_is_the_quota_left(s3_backend: StorageBackend) -> None:
    s3_backend.set_quota("", 1000)
    await s3_backend.save("a.bin", b"x" * 400)
    post = await s3_backend.get_presigned_post("b.bin", content_type="video/mp4")
    conditions = _policy(post.fields)["conditions"]
    assert ["content-length-range", 0, 600] in conditions
    assert {"Content-Type": "video/mp4"} in conditions


@pytest.mark.s3
async def test_s3_policy_without_cap_has_no_length_condition(s3_backend: StorageBackend) -> None:
    post = await s3_backend.get_presigned_post("b.bin")
    conditions = _policy(post.fields)["conditions"]
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "content-length-range"]
