"""The Azure and GCS backends (obstore) behind the fault proxy: answers lost after the
emulator did the work. What lands must be counted under the quota, whatever the caller
was told, and a write that landed whole is a success."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from file_storage import (
    AzureStorageBackend,
    GCSStorageBackend,
    ObjectEvent,
    PreconditionFailedError,
    StorageError,
    StorageUnavailableError,
)
from tests.faults.proxy import FaultProxy


@pytest.fixture
def backend(azure_behind_proxy: AzureStorageBackend) -> AzureStorageBackend:
    return azure_behind_proxy


@pytest.mark.azure
async def test_a_write_whose_answer_was_lost_is_counted_as_stored(
    backend: AzureStorageBackend, azure_proxy: FaultProxy
) -> None:
    await backend.save("other.bin", b"o" * 100)
    azure_proxy.cut_response_after(0, match="PUT", times=10)  # stored, never answered
    with pytest.raises(StorageUnavailableError):
        await backend.save("k.bin", b"k" * 600)
    azure_proxy.clear()
    assert await backend.get_size("k.bin") == 600  # it landed...
    assert (await backend.get_usage("")).used == 700  # ...so the quota counts it


async def twenty_mib(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 2**20):  # over 8 MiB: sent as parts (blocks)
        yield data[start : start + 2**20]


DATA = bytes(range(256)) * (20 * 2**20 // 256)


@pytest.mark.azure
async def test_a_refused_block_list_is_an_unknown_outcome_counted_as_what_the_key_holds(
    backend: AzureStorageBackend, azure_proxy: FaultProxy
) -> None:
    # the retried Put Block List finds its blocks committed already (Azurite): 400
    # InvalidBlockList, which Azure also answers when another writer's commit of the key
    # discarded this write's blocks. The object there may not be this write's: the save
    # is not reported done, and the quota counts what the key holds
    azure_proxy.cut_response_after(0, match="comp=blocklist")
    with pytest.raises(StorageUnavailableError, match="InvalidBlockList") as info:
        await backend.save("big.bin", twenty_mib(DATA[: 10 * 2**20]))
    assert (info.value.operation, info.value.key) == ("save", "big.bin")
    assert await backend.load("big.bin") == DATA[: 10 * 2**20]  # (Azurite: the first landed)
    assert (await backend.get_usage("")).used == 10 * 2**20


@pytest.fixture
async def gcs_backend_behind_proxy(
    gcs_emulator: tuple[Any, str],
) -> AsyncIterator[tuple[GCSStorageBackend, FaultProxy]]:
    from tests.gcs_emulator import create_bucket

    gateway, account = gcs_emulator
    proxy = FaultProxy(gateway.url)
    proxy.start()
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    create_bucket(gateway.url, bucket)
    fields = {**json.loads(account), "gcs_base_url": proxy.endpoint}
    backend = GCSStorageBackend(
        bucket,
        prefix="storage",
        service_account=json.dumps(fields),
        endpoint_url=proxy.endpoint,
        max_size_bytes=10**9,
    )
    try:
        yield backend, proxy
    finally:
        await backend.aclose()
        proxy.stop()


@pytest.mark.gcs
async def test_a_multipart_completion_whose_answer_was_lost_is_a_stored_object(
    gcs_backend_behind_proxy: tuple[GCSStorageBackend, FaultProxy],
) -> None:
    # the retried completion finds no upload (404): the first one stored the object
    backend, proxy = gcs_backend_behind_proxy
    proxy.cut_response_after(0, match="%2Ebin?uploadId=")
    assert await backend.save("big.bin", twenty_mib(DATA)) == "big.bin"
    assert await backend.load("big.bin") == DATA
    assert (await backend.get_usage("")).used == len(DATA)


@pytest.fixture(
    params=[
        pytest.param("gcs", marks=pytest.mark.gcs),
        pytest.param("azure", marks=pytest.mark.azure),
    ]
)
def behind_proxy(
    request: pytest.FixtureRequest,
) -> tuple[GCSStorageBackend | AzureStorageBackend, FaultProxy]:
    if request.param == "gcs":
        pair: tuple[GCSStorageBackend, FaultProxy] = request.getfixturevalue(
            "gcs_backend_behind_proxy"
        )
        return pair
    return request.getfixturevalue("backend"), request.getfixturevalue("azure_proxy")


async def test_a_move_whose_conditional_delete_answer_was_lost_is_done(
    behind_proxy: tuple[GCSStorageBackend | AzureStorageBackend, FaultProxy],
) -> None:
    # the source's delete landed and its answer was lost: the retry finds no source
    backend, proxy = behind_proxy
    await backend.save("src.bin", b"s" * 100)
    proxy.cut_response_after(0, match="DELETE")
    assert await backend.move("src.bin", "dst.bin") == "dst.bin"
    assert await backend.list_files() == ["dst.bin"]
    assert (await backend.get_usage("")).used == 100


async def test_a_move_whose_conditional_delete_finds_the_store_down_keeps_both(
    behind_proxy: tuple[GCSStorageBackend | AzureStorageBackend, FaultProxy],
) -> None:
    backend, proxy = behind_proxy
    await backend.save("src.bin", b"s" * 100)
    proxy.fail_next(3, status=503, code="ServerBusy", match="DELETE")
    with pytest.raises(StorageUnavailableError) as info:
        await backend.move("src.bin", "dst.bin")
    assert (info.value.operation, info.value.key) == ("move", "src.bin")
    assert "sig" not in str(info.value).lower()
    assert await backend.list_files() == ["dst.bin", "src.bin"]
    assert (await backend.get_usage("")).used == 200


async def test_a_long_save_whose_parts_never_arrive_leaves_nothing_and_a_retry_lands(
    behind_proxy: tuple[GCSStorageBackend | AzureStorageBackend, FaultProxy],
) -> None:
    # every part upload (GCS XML multipart part, Azure Put Block) is reset mid-body
    backend, proxy = behind_proxy
    proxy.reset_after(2**16, times=100, match="PUT")
    with pytest.raises(StorageUnavailableError):
        await backend.save("big.bin", twenty_mib(DATA))
    proxy.clear()
    assert not await backend.exists("big.bin")
    assert await backend.list_files() == []
    assert (await backend.get_usage("")).used == 0
    assert await backend.save("big.bin", twenty_mib(DATA)) == "big.bin"
    assert await backend.load("big.bin") == DATA
    assert (await backend.get_usage("")).used == len(DATA)


@pytest.mark.parametrize(
    ("operation", "match"), [("load", "GET"), ("stat", "HEAD"), ("save", "PUT")]
)
async def test_a_409_outside_a_conditional_write_is_no_failed_condition(
    behind_proxy: tuple[GCSStorageBackend | AzureStorageBackend, FaultProxy],
    operation: str,
    match: str,
) -> None:
    # Azure answers 409 to a read of an archived blob (BlobArchived) and to a write of a
    # leased one (LeaseIdMissing): a StorageError, as S3's 409 is, never the
    # PreconditionFailedError that tells a caller its condition did not hold
    backend, proxy = behind_proxy
    await backend.save("k.txt", b"x")
    proxy.fail_next(10, status=409, code="LeaseIdMissing", match=match)
    call = (
        backend.save("k.txt", b"y") if operation == "save" else getattr(backend, operation)("k.txt")
    )
    with pytest.raises(StorageError) as info:
        await call
    proxy.clear()
    assert type(info.value) is StorageError
    assert (info.value.operation, info.value.key) == (operation, "k.txt")
    assert "409" in str(info.value)
    assert await backend.load("k.txt") == b"x"


async def test_a_move_under_quota_keeps_a_source_another_backend_rewrote(
    behind_proxy: tuple[GCSStorageBackend | AzureStorageBackend, FaultProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # another writer (a second backend on the same store, no shared ledger) replaces the
    # source once the copy is stored: the move's conditional delete keeps it
    from tests.backends.test_obstore_races import _config

    backend, _ = behind_proxy
    config = _config(backend)
    kind = config.pop("kind")
    other = GCSStorageBackend(**config) if kind == "gcs" else AzureStorageBackend(**config)
    await backend.save("src.bin", b"s" * 100)
    copy = backend._copy

    async def copy_then_rewrite(src: str, dst: str, *options: Any) -> str | None:
        etag = await copy(src, dst, *options)
        await other.save("src.bin", b"n" * 150)
        return etag

    monkeypatch.setattr(backend, "_copy", copy_then_rewrite)
    with pytest.raises(PreconditionFailedError):
        await backend.move("src.bin", "dst.bin")
    monkeypatch.undo()
    await other.aclose()
    assert await backend.load("src.bin") == b"n" * 150
    assert await backend.load("dst.bin") == b"s" * 100


@pytest.mark.parametrize("condition", ["create", "if_match"])
async def test_a_conditional_write_whose_answer_was_lost_is_done_when_it_landed(
    behind_proxy: tuple[GCSStorageBackend | AzureStorageBackend, FaultProxy], condition: str
) -> None:
    # not sent again (a resend would be refused by the first try's object), and the
    # caller could not try again either: the key is looked at, and holds the write's own
    backend, proxy = behind_proxy
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    await backend.save("other.bin", b"o" * 100)
    options: dict[str, Any] = {"overwrite": False}
    if condition == "if_match":
        await backend.save("k.bin", b"a" * 50)
        options = {"if_match": (await backend.stat("k.bin")).etag}
    proxy.cut_response_after(0, match="PUT")  # stored, never answered
    await backend.save("k.bin", b"k" * 600, metadata={"v": "\u00e9t\u00e9"}, **options)
    info = await backend.stat("k.bin")
    assert (await backend.load("k.bin"), info.metadata) == (b"k" * 600, {"v": "\u00e9t\u00e9"})
    assert seen[-1] == ObjectEvent("created", "k.bin", 600, info.etag)
    assert (await backend.get_usage("")).used == 700


async def test_a_create_whose_refusal_was_lost_is_no_success(
    behind_proxy: tuple[GCSStorageBackend | AzureStorageBackend, FaultProxy],
) -> None:
    # another writer's object of the same size and headers refused the create, and the
    # refusal was lost: the key's bytes are not the write's, the outcome stays unknown
    backend, proxy = behind_proxy
    await backend.save("k.bin", b"x" * 600)
    proxy.cut_response_after(0, match="PUT")
    with pytest.raises(StorageUnavailableError):
        await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert await backend.load("k.bin") == b"x" * 600
    assert (await backend.get_usage("")).used == 600
