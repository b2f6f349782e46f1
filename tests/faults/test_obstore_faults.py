"""The Azure backend (obstore) behind the fault proxy: answers lost after Azurite did the
work. What lands must be counted under the quota, whatever the caller was told."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from file_storage import AzureStorageBackend, StorageUnavailableError
from file_storage.backends.azure import EMULATOR_ACCOUNT, EMULATOR_KEY
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.azure


@pytest.fixture
def azure_proxy(azurite: Any) -> Iterator[FaultProxy]:
    proxy = FaultProxy(azurite.endpoint.rsplit("/", 1)[0])
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
async def backend(azurite: Any, azure_proxy: FaultProxy) -> AsyncIterator[AzureStorageBackend]:
    container = f"test-{uuid.uuid4().hex[:20]}"
    azurite.create_container(container)
    backend = AzureStorageBackend(
        container,
        account=EMULATOR_ACCOUNT,
        prefix="storage",
        access_key=EMULATOR_KEY,
        endpoint_url=f"{azure_proxy.endpoint}/{EMULATOR_ACCOUNT}",
        max_size_bytes=1000,
    )
    try:
        yield backend
    finally:
        await backend.aclose()
        azurite.delete_container(container)


@pytest.mark.parametrize("condition", [{}, {"overwrite": False}])
async def test_a_write_whose_answer_was_lost_is_counted_as_stored(
    backend: AzureStorageBackend, azure_proxy: FaultProxy, condition: dict[str, Any]
) -> None:
    await backend.save("other.bin", b"o" * 100)
    azure_proxy.cut_response_after(0, match="PUT", times=10)  # stored, never answered
    with pytest.raises(StorageUnavailableError):
        await backend.save("k.bin", b"k" * 600, **condition)
    azure_proxy.clear()
    assert await backend.get_size("k.bin") == 600  # it landed...
    assert (await backend.get_usage("")).used == 700  # ...so the quota counts it
