"""Backends on obstore (GCS, Azure, S3 with ``client="obstore"``) in a process forked
after its parent made an obstore call: obstore's Rust runtime does not survive a fork,
and a child calling it would hang. It raises StorageConfigError instead."""

from __future__ import annotations

import asyncio

import pytest

from file_storage import StorageBackend, StorageConfigError
from tests.forks import forked, in_child


@pytest.fixture(
    params=[
        pytest.param("gcs", marks=pytest.mark.gcs),
        pytest.param("azure", marks=pytest.mark.azure),
        pytest.param("s3_obstore", marks=pytest.mark.s3),
    ]
)
def on_obstore(request: pytest.FixtureRequest) -> StorageBackend:
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result


def child_call(backend: StorageBackend) -> str:
    try:
        asyncio.run(backend.save("child", b"child"))
    except StorageConfigError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "saved"


def test_a_child_forked_after_an_obstore_call_raises_config_error(
    on_obstore: StorageBackend,
) -> None:
    asyncio.run(on_obstore.save("parent", b"parent"))
    said = forked(in_child(lambda: child_call(on_obstore)))()
    assert said.startswith("StorageConfigError: "), said
    assert "spawn start method" in said, said
    # the parent goes on, and the child wrote nothing
    assert asyncio.run(on_obstore.list_files()) == ["parent"]
