"""Fixtures of the backend tests that more than one module uses."""

from __future__ import annotations

import pytest

from file_storage import StorageBackend


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
