"""S3 move is a copy then a delete: when the delete fails, quota counts both objects."""

from __future__ import annotations

from typing import Any

import pytest

from file_storage import (
    S3StorageBackend,
    StoragePermissionError,
    StorageQuotaExceededError,
    StorageUnavailableError,
)
from file_storage.errors import StorageError
from tests.faults.conftest import ATTEMPTS, MakeBackend
from tests.faults.proxy import FaultProxy
from tests.s3util import stored_keys

pytestmark = pytest.mark.s3


async def learn_conditional_deletes(backend: S3StorageBackend) -> None:
    """A first move learns whether the server checks If-Match on DeleteObject (a probe of
    its own, once per backend): faults injected afterwards hit a move's delete, not the
    probe's."""
    await backend.save("first", b"")
    await backend.move("first", "moved")
    await backend.delete("moved")


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (403, "AccessDenied", StoragePermissionError),  # DeleteObject denied by a policy
        (503, "ServiceUnavailable", StorageUnavailableError),  # S3 down for every attempt
    ],
)
async def test_move_whose_delete_fails_keeps_both_and_counts_both(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    status: int,
    code: str,
    error: type[StorageError],
) -> None:
    backend = make_backend(max_size_bytes=1000)
    await learn_conditional_deletes(backend)
    await backend.save("src", b"x" * 400)
    proxy.fail_next(ATTEMPTS, status=status, code=code, match="DELETE")
    with pytest.raises(error) as info:
        await backend.move("src", "dst")
    assert (info.value.operation, info.value.key) == ("move", "src")
    assert stored_keys(raw, s3_bucket) == ["storage/dst", "storage/src"]
    assert (await backend.get_usage()).used == 800
    with pytest.raises(StorageQuotaExceededError):  # the copy is counted: no room for 600
        await backend.save("more", b"y" * 600)
    proxy.clear()
    await backend.move("src", "dst")  # once S3 deletes again, a retry finishes the move
    assert stored_keys(raw, s3_bucket) == ["storage/dst"]
    assert (await backend.get_usage()).used == 400


async def test_an_overwrite_refused_on_a_versioned_bucket_counts_the_old_object_once(
    make_backend: MakeBackend, proxy: FaultProxy
) -> None:
    # S3 down for every attempt of the overwrite: nothing new is stored, the old object
    # stays the key's only version, counted once
    backend = make_backend(max_size_bytes=1000)
    await backend.set_versioning(True)
    await backend.save("k", b"x" * 400)
    proxy.fail_next(ATTEMPTS, status=503, code="ServiceUnavailable", match="PUT")
    with pytest.raises(StorageUnavailableError):
        await backend.save("k", b"y" * 500)
    assert [v.size for v in await backend.list_versions("k")] == [400]
    assert (await backend.get_usage("")).used == 400
    await backend.save("other", b"z" * 500)  # fits: 400 + 500 of 1000


async def test_a_delete_whose_answers_were_lost_frees_its_bytes(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    # S3 deleted the object and every answer was cut: the caller hears of an outage, and
    # the quota asks S3 rather than counting 400 bytes that are gone until a refresh
    backend = make_backend(max_size_bytes=1000)
    await backend.save("k", b"x" * 400)
    proxy.cut_response_after(0, match="DELETE", times=ATTEMPTS)
    with pytest.raises(StorageUnavailableError):
        await backend.delete("k")
    proxy.clear()
    assert stored_keys(raw, s3_bucket) == []
    assert (await backend.get_usage()).used == 0
    await backend.save("more", b"y" * 1000)  # the whole quota is free again


async def test_a_move_whose_delete_answers_were_lost_counts_the_destination_once(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(max_size_bytes=1000)
    await learn_conditional_deletes(backend)
    await backend.save("src", b"x" * 400)
    proxy.cut_response_after(0, match="DELETE", times=ATTEMPTS)
    with pytest.raises(StorageUnavailableError):
        await backend.move("src", "dst")
    proxy.clear()
    assert stored_keys(raw, s3_bucket) == ["storage/dst"]
    assert (await backend.get_usage()).used == 400
    await backend.save("more", b"y" * 600)


async def test_a_delete_many_whose_answers_were_lost_frees_what_it_deleted(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(max_size_bytes=1000)
    await backend.save("a", b"x" * 300)
    await backend.save("b", b"x" * 300)
    proxy.cut_response_after(0, match="?delete", times=ATTEMPTS)  # DeleteObjects
    with pytest.raises(StorageUnavailableError):
        await backend.delete_many(["a", "b"])
    proxy.clear()
    assert stored_keys(raw, s3_bucket) == []
    assert (await backend.get_usage()).used == 0
