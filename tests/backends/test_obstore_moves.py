"""move on the GCS and Azure backends: a copy, then a delete, each conditional on the
source being the object the move found (GCS: its generation; Azure: its ETag), sent as
signed requests of their own (the conformance suite's exact_moves and pinned_moves tests
check what a user sees). Here: what only these backends do, the condition checked by the
store itself and requests that end whole when the caller is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from file_storage import ObjectNotFoundError, PreconditionFailedError, StorageBackend
from file_storage.backends._obstore import _moves
from file_storage.backends._obstore._conditional import Answer, Outcome


async def test_a_moves_copy_is_refused_by_the_store_for_a_source_written_as_it_is_sent(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the write lands once the copy's request is signed, as it goes out: only the store
    # can refuse it (x-goog-copy-source-if-generation-match, x-ms-source-if-match)
    await cloud.save("src.txt", b"old")
    send = _moves.send_request

    async def rewrite_then_send(
        method: str, url: str, headers: Mapping[str, str], kind: str
    ) -> Answer:
        await cloud.save("src.txt", b"new")
        return await send(method, url, headers, kind)

    monkeypatch.setattr(_moves, "send_request", rewrite_then_send)
    with pytest.raises(PreconditionFailedError) as info:
        await cloud.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert (info.value.operation, info.value.key) == ("move", "src.txt")
    assert await cloud.list_files() == ["src.txt"]
    assert await cloud.load("src.txt") == b"new"


async def test_a_moves_copy_of_a_source_deleted_as_it_is_sent_raises_not_found(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Azure may answer a source gone 412 like a source changed: the move says not found
    await cloud.save("src.txt", b"old")
    send = _moves.send_request

    async def delete_then_send(
        method: str, url: str, headers: Mapping[str, str], kind: str
    ) -> Answer:
        await cloud.delete("src.txt")
        return await send(method, url, headers, kind)

    monkeypatch.setattr(_moves, "send_request", delete_then_send)
    with pytest.raises(ObjectNotFoundError) as info:
        await cloud.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert (info.value.operation, info.value.key) == ("move", "src.txt")
    assert await cloud.list_files() == []


async def test_a_move_cancelled_during_its_pinned_copy_ends_it_first(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the copy's PUT is under way when the caller is cancelled: the cancellation waits
    # for it, so nothing lands after the caller was told; the source stays
    await cloud.save("src.txt", b"old")
    send = _moves.send_request
    started, go = asyncio.Event(), asyncio.Event()

    async def held_send(method: str, url: str, headers: Mapping[str, str], kind: str) -> Answer:
        started.set()
        await go.wait()
        return await send(method, url, headers, kind)

    monkeypatch.setattr(_moves, "send_request", held_send)
    task = asyncio.create_task(cloud.move("src.txt", "dst.txt"))
    await started.wait()
    task.cancel()
    await asyncio.sleep(0)  # one pass of the loop: the move has the cancellation, waits on
    assert not task.done()
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    assert await cloud.list_files() == ["dst.txt", "src.txt"]
    assert await cloud.load("dst.txt") == b"old"


async def test_a_move_cancelled_during_its_conditional_delete_ends_it_first(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the DELETE is under way when the caller is cancelled: the cancellation waits for
    # it, so that what the caller is told (cancelled, the source gone) holds afterwards
    await cloud.save("src.txt", b"old")
    send = _moves.send_delete
    started, go = asyncio.Event(), asyncio.Event()

    async def held_send(url: str, headers: Mapping[str, str], kind: str) -> Outcome:
        started.set()
        await go.wait()
        return await send(url, headers, kind)

    monkeypatch.setattr(_moves, "send_delete", held_send)
    task = asyncio.create_task(cloud.move("src.txt", "dst.txt"))
    await started.wait()
    task.cancel()
    await asyncio.sleep(0)  # one pass of the loop: the move has the cancellation, waits on
    assert not task.done()
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    assert await cloud.list_files() == ["dst.txt"]
