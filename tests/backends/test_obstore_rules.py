"""GCS and Azure keep expiry rules in the store: they outlive the backend object, are
shared by every process using the bucket or container, and never show as an object."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from file_storage import AzureStorageBackend, GCSStorageBackend, StorageBackend, StorageError
from file_storage.backends._obstore._rules import RULES_NAME


def twin_of(backend: Any) -> StorageBackend:
    """A second backend on the same store and prefix: another process, or a restart."""
    if isinstance(backend, GCSStorageBackend):
        return GCSStorageBackend(
            backend._bucket,
            prefix=backend._root,
            service_account=backend._service_account,
            endpoint_url=backend._endpoint_url,
        )
    assert isinstance(backend, AzureStorageBackend)
    return AzureStorageBackend(
        backend._container,
        account=backend._account,
        prefix=backend._root,
        access_key=backend._access_key,
        endpoint_url=backend._endpoint_url,
    )


@pytest.fixture
async def twin(cloud: StorageBackend) -> AsyncIterator[StorageBackend]:
    other = twin_of(cloud)
    yield other
    await other.aclose()


async def test_rules_outlive_the_backend_and_are_shared(
    cloud: StorageBackend, twin: StorageBackend
) -> None:
    await cloud.set_expiration("tmp", 2)
    await cloud.aclose()
    assert await twin.get_expiration() == {"tmp/": 2}
    await twin.set_expiration("logs", 30)
    assert await cloud.get_expiration() == {"logs/": 30, "tmp/": 2}


async def test_the_rules_object_is_no_object_of_the_api(cloud: StorageBackend) -> None:
    await cloud.set_expiration("tmp", 1)
    await cloud.save("a.txt", b"x")
    assert await cloud.list_files() == ["a.txt"]
    assert (await cloud.get_usage("")).used == 1
    assert await cloud.delete_prefix("") == 1
    assert await cloud.get_expiration() == {"tmp/": 1}


async def test_concurrent_changes_from_two_processes_lose_no_rule(
    cloud: StorageBackend, twin: StorageBackend
) -> None:
    writes = [(cloud if i % 2 else twin).set_expiration(f"p{i}", i + 1) for i in range(8)]
    await asyncio.gather(*writes)
    assert await cloud.get_expiration() == {f"p{i}/": i + 1 for i in range(8)}


async def test_a_damaged_rules_object_is_a_clear_error(cloud: Any) -> None:
    obs, store = cloud._store()
    await obs.put_async(store, RULES_NAME, b"not json")
    with pytest.raises(StorageError, match="damaged"):
        await cloud.get_expiration()


@pytest.mark.parametrize("prefix", ["../", "temp", "./", "temp/../"])
async def test_a_planted_rule_whose_prefix_is_no_folder_is_ignored(cloud: Any, prefix: str) -> None:
    # anyone who can write the bucket can plant a rule: "../" would reach the keys of
    # the prefix beside this backend's, "temp" every key starting with that text
    obs, store = cloud._store()
    for key in ("temp/a.bin", "temporary.bin", "logs/x.log"):
        await cloud.save(key, b"x")
    planted = json.dumps({"expiration": {prefix: 1, "logs/": 1}}).encode()
    await obs.put_async(store, RULES_NAME, planted)
    assert await cloud.get_expiration() == {"logs/": 1}
    assert await cloud.purge_expired(now=datetime.now(UTC) + timedelta(days=2)) == 1
    assert await cloud.list_files() == ["temp/a.bin", "temporary.bin"]
