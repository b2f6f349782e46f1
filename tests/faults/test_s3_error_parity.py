"""S3 answers through either transport behind the fault proxy: the same typed error
whichever client (``STORAGE_S3_CLIENT``) sends the request, and as GCS and Azure give
it (tests/faults/test_obstore_faults.py)."""

from __future__ import annotations

from typing import Any

import pytest

from file_storage import PreconditionFailedError, StorageError, StorageUnavailableError
from tests.faults.proxy import FaultProxy
from tests.s3util import MakeBackend

pytestmark = pytest.mark.s3


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
@pytest.mark.parametrize(
    ("operation", "match"), [("load", "GET"), ("stat", "HEAD"), ("save", "PUT")]
)
async def test_a_409_outside_a_conditional_write_is_a_storage_error(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, operation: str, match: str
) -> None:
    # OperationAborted (a conflicting operation under way): not a condition that failed
    backend = make_backend(client=client)
    await backend.save("k.txt", b"x")
    proxy.fail_next(10, status=409, code="OperationAborted", match=match)
    call: Any = (
        backend.save("k.txt", b"y") if operation == "save" else getattr(backend, operation)("k.txt")
    )
    with pytest.raises(StorageError) as info:
        await call
    proxy.clear()
    assert type(info.value) is StorageError
    assert (info.value.operation, info.value.key) == (operation, "k.txt")
    assert await backend.load("k.txt") == b"x"


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
async def test_a_409_to_a_create_only_write_is_a_failed_condition(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # ConditionalRequestConflict: a concurrent write of the key won (AWS)
    backend = make_backend(client=client)
    proxy.fail_next(10, status=409, code="ConditionalRequestConflict", match="PUT")
    with pytest.raises(PreconditionFailedError):
        await backend.save("n.txt", b"y", overwrite=False)
    proxy.clear()
    assert not await backend.exists("n.txt")


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
@pytest.mark.parametrize("status", [429, 408])
async def test_a_throttled_stat_is_unavailable_as_a_throttled_load_is(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, status: int
) -> None:
    # a HEAD's answer has no body, so no S3 code: the status alone says "slow down"
    backend = make_backend(client=client)
    await backend.save("k.txt", b"x")
    proxy.fail_next(100, status=status, code="SlowDown", match="HEAD")
    with pytest.raises(StorageUnavailableError) as info:
        await backend.stat("k.txt")
    proxy.clear()
    assert (info.value.operation, info.value.key) == ("stat", "k.txt")
