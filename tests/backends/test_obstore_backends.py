"""What the GCS and Azure backends have alike, beyond the conformance suite: both move
bytes through ObstoreBackend, so each test runs on both."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from file_storage import (
    ObjectEvent,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageBackend,
    StorageConfigError,
)


async def test_what_the_backend_lacks_raises_config_error(cloud: StorageBackend) -> None:
    await cloud.save("v.txt", b"one")
    assert [v.version_id for v in await cloud.list_versions("v.txt")] == ["null"]
    assert await cloud.load("v.txt", version_id="null") == b"one"
    with pytest.raises(StorageConfigError, match="versions"):
        await cloud.set_versioning(True)
    with pytest.raises(StorageConfigError):
        await cloud.get_presigned_post("up.txt")
    assert await cloud.purge_versions("v.txt", keep=0) == 1
    assert not await cloud.exists("v.txt")


async def test_copy_with_a_new_header_keeps_type_and_metadata(cloud: StorageBackend) -> None:
    await cloud.save(
        "src.txt", b"body", content_type="text/plain", metadata={"a": "1"}, cache_control="no-cache"
    )
    await cloud.copy("src.txt", "dst.txt", content_disposition="attachment")
    info = await cloud.stat("dst.txt")
    assert (info.content_type, dict(info.metadata)) == ("text/plain", {"a": "1"})
    assert (info.cache_control, info.content_disposition) == ("no-cache", "attachment")
    assert await cloud.load("dst.txt") == b"body"


async def test_copy_with_a_new_header_emits_the_etag_its_write_stored(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # that copy is a write through us: its event names the object it stored, not that of
    # another writer landing at dst before the event is made (object_store's own copy
    # answers no ETag: a plain copy's event still takes a stat's, docs/events.md)
    await cloud.save("src.txt", b"body")
    seen: list[ObjectEvent] = []
    cloud.subscribe(seen.append)
    real_copy = cloud._copy
    real_save = cloud._save

    async def then_a_rival(*args: Any) -> str | None:
        etag: str | None = await real_copy(*args)
        await real_save("dst.txt", b"a rival's object", "text/plain", {})
        return etag

    monkeypatch.setattr(cloud, "_copy", then_a_rival)
    await cloud.copy("src.txt", "dst.txt", cache_control="no-store")
    monkeypatch.undo()
    [event] = seen
    assert event.etag is not None
    assert event.etag != (await cloud.stat("dst.txt")).etag


@pytest.mark.parametrize(
    "header", [{"cache_control": "no-store"}, {"content_disposition": "attachment"}]
)
async def test_copy_changing_a_header_of_a_source_deleted_after_its_head_is_not_found(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch, header: dict[str, str]
) -> None:
    # the copy reads the source's headers, then its bytes pinned to that version (the
    # header change makes it a read and a write): a delete in between means no source
    await cloud.save("src.txt", b"body")
    head = cloud._head  # type: ignore[attr-defined]

    async def head_then_delete(key: str, if_match: str | None = None) -> object:
        info = await head(key, if_match)
        await cloud.delete("src.txt")
        return info

    monkeypatch.setattr(cloud, "_head", head_then_delete)
    with pytest.raises(ObjectNotFoundError) as info:
        await cloud.copy("src.txt", "dst.txt", **header)
    assert (info.value.operation, info.value.key) == ("copy", "src.txt")
    assert await cloud.list_files() == []


async def test_conditional_stream_over_the_part_size_is_one_atomic_put(
    cloud: StorageBackend,
) -> None:
    async def body(fill: bytes) -> AsyncIterator[bytes]:
        for _ in range(9):  # 9 MiB: past the 8 MiB above which plain streams go in parts
            yield fill * 2**20

    await cloud.save("big.bin", body(b"a"), overwrite=False)
    with pytest.raises(PreconditionFailedError):
        await cloud.save("big.bin", body(b"b"), overwrite=False)
    etag = (await cloud.stat("big.bin")).etag
    assert etag is not None
    await cloud.save("big.bin", body(b"c"), if_match=etag)
    with pytest.raises(PreconditionFailedError):
        await cloud.save("big.bin", body(b"d"), if_match=etag)
    data = await cloud.load("big.bin")
    assert (len(data), data[:1], data[-1:]) == (9 * 2**20, b"c", b"c")


async def test_cancelled_writes_and_deletes_are_counted_as_what_they_did(
    cloud: StorageBackend,
) -> None:
    # cancelled at every point of its way: a request the store took lands or not, and
    # the quota must count what is stored once the caller was told of the cancellation
    cloud.set_quota("", 10**9)
    for step in range(24):
        await cloud.save(f"d/{step}", b"x" * 1000)
        operations = [
            cloud.delete(f"d/{step}"),
            cloud.copy(f"d/{step}", f"c/{step}"),
            cloud.save(f"s/{step}", b"y" * 100),
        ]
        for operation in operations:
            task = asyncio.ensure_future(operation)
            for _ in range(step):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ObjectNotFoundError):
                await task
            stored = await cloud.get_total_size("")
            assert (step, (await cloud.get_usage("")).used) == (step, stored)


@pytest.mark.parametrize("outcome", ["stored", "gone"])
async def test_a_request_done_as_its_caller_is_cancelled_is_marked_landed(outcome: str) -> None:
    # the request ends in the same pass of the loop as the caller's cancellation: its
    # answer is in, so the cancellation must say it landed (a delete that did, counted
    # as still stored by the quota otherwise)
    from file_storage.backends._obstore._requests import to_the_end
    from file_storage.backends._support import has_landed

    loop = asyncio.get_running_loop()
    request: asyncio.Future[None] = loop.create_future()
    caller = asyncio.ensure_future(to_the_end(request, gone_ok=True))
    for _ in range(5):  # the caller waits on the request now
        await asyncio.sleep(0)
    if outcome == "stored":
        request.set_result(None)
    else:
        request.set_exception(FileNotFoundError())
    caller.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await caller
    assert has_landed(info.value)


async def test_a_listed_etag_is_the_one_stat_gives_and_a_write_accepts(
    cloud: StorageBackend,
) -> None:
    await cloud.save("e.txt", b"one")
    listed = [info async for info in cloud.iter_files("")]
    page = await cloud.list_page("")
    assert listed[0].etag == page.files[0].etag == (await cloud.stat("e.txt")).etag
    await cloud.save("e.txt", b"two", if_match=listed[0].etag)
    assert await cloud.load("e.txt") == b"two"


async def test_migrate_with_delete_source_replaces_an_older_object_at_the_destination(
    cloud: StorageBackend,
) -> None:
    # the conditional copy (if_match the ETag the listing found) was refused for a
    # listing's ETag lacking the quotes of stat's: counted "kept", the source deleted,
    # and the destination left with the stale object
    from file_storage import MemoryStorageBackend, migrate

    await cloud.save("k.txt", b"stale")
    source = MemoryStorageBackend()
    await source.save("k.txt", b"the only up-to-date copy")
    report = await migrate(source, cloud, delete_source=True)
    assert (report.copied, report.failed) == (1, {})
    assert await cloud.load("k.txt") == b"the only up-to-date copy"
