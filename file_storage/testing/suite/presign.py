"""get_presigned_url and get_presigned_post argument checks, the same on every backend."""

from __future__ import annotations

import pytest

from file_storage import InvalidKeyError, InvalidMetadataError, StorageBackend, StorageConfigError


@pytest.mark.parametrize("expires_in", [0, -1, 604_801, 10**9, 1.5, True])
async def test_expiry_out_of_bounds_raises_value_error(
    backend: StorageBackend, expires_in: int
) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        await backend.get_presigned_url("a.txt", expires_in=expires_in)


@pytest.mark.parametrize("method", ["DELETE", "get", "POST", ""])
async def test_unknown_method_raises_value_error(backend: StorageBackend, method: str) -> None:
    with pytest.raises(ValueError, match="method"):
        await backend.get_presigned_url("a.txt", method=method)  # type: ignore[arg-type]


async def test_public_url_without_a_base_names_the_setting(backend: StorageBackend) -> None:
    with pytest.raises(StorageConfigError, match="PUBLIC_BASE_URL") as caught:
        backend.get_public_url("a.txt")
    assert (caught.value.operation, caught.value.key) == ("get_public_url", "a.txt")


async def test_filename_on_a_put_url_is_refused(backend: StorageBackend) -> None:
    with pytest.raises(ValueError, match="filename"):
        await backend.get_presigned_url("a.txt", method="PUT", filename="a.txt")


@pytest.mark.parametrize("content_type", ["text/plain\r\nx: y", "тип/вид"])
async def test_bad_presign_content_type_is_refused(
    backend: StorageBackend, content_type: str
) -> None:
    with pytest.raises(InvalidMetadataError, match="content_type"):
        await backend.get_presigned_url("a.txt", content_type=content_type)


@pytest.mark.parametrize("key", ["in/${filename}", "${filename}", "in/${filename}.txt"])
async def test_form_for_a_key_holding_the_filename_variable_is_refused(
    backend: StorageBackend, key: str
) -> None:
    # S3 puts the uploaded file's name in its place, and a form for a key ending in it is
    # signed for every key under the same folder: the browser would choose the key
    with pytest.raises(InvalidKeyError, match="filename") as caught:
        await backend.get_presigned_post(key, max_bytes=10)
    assert (caught.value.operation, caught.value.key) == ("get_presigned_post", key)


async def test_form_content_type_holding_the_filename_variable_is_refused(
    backend: StorageBackend,
) -> None:
    with pytest.raises(ValueError, match="content_type"):
        await backend.get_presigned_post("in/a.txt", content_type="text/${filename}")
