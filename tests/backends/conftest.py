"""Fixtures and helpers of the backend tests that more than one module uses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from file_storage import S3StorageBackend, StorageBackend
from tests.s3util import MakeBackend, s3_backends

MiB = 1 << 20
# the smallest multipart setup S3 allows: 5 MiB parts (AWS multipart limits)
SMALL: dict[str, Any] = {"multipart_threshold": 5 * MiB, "multipart_chunk_size": 5 * MiB}


@pytest.fixture
async def make_backend(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[MakeBackend]:
    """Build backends on the test bucket with extra settings; all are closed afterwards."""
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make


async def client_of(backend: StorageBackend) -> Any:
    """The backend's aiobotocore client, to register event hooks that observe requests."""
    assert isinstance(backend, S3StorageBackend)
    return await backend._client()


@pytest.fixture(
    params=[
        pytest.param("gcs", marks=pytest.mark.gcs),
        pytest.param("azure", marks=pytest.mark.azure),
    ]
)
def cloud(request: pytest.FixtureRequest) -> StorageBackend:
    """Each backend built on obstore (ObstoreBackend): GCS, then Azure."""
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result
