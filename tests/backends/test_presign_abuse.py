"""Presigned URLs of the stores a URL reaches without the library (S3, GCS, Azure): what
whoever holds one cannot do with it (push a quota over)."""

from __future__ import annotations

import pytest

from file_storage import StorageBackend, StorageConfigError

CLOUDS = [
    pytest.param("s3", marks=pytest.mark.s3),
    pytest.param("s3_obstore", marks=pytest.mark.s3),
    pytest.param("gcs", marks=pytest.mark.gcs),
    pytest.param("azure", marks=pytest.mark.azure),
]


@pytest.fixture(params=CLOUDS)
def cloud(request: pytest.FixtureRequest) -> StorageBackend:
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result


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
