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
from file_storage.backends._obstore import _conditional, _moves
from file_storage.backends._obstore._conditional import Answer, Outcome


async def test_a_moves_copy_is_refused_by_the_store_for_a_source_written_as_it_is_sent(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the write lands once the copy's request is signed, as it goes out: only the store
    # can refuse it (x-goog-copy-source-if-generation-match, x-ms-source-if-match)
    await cloud.save("src.txt", b"old")
    send = _moves.send_copy

    async def rewrite_then_send(
        url: str, headers: Mapping[str, str], kind: str
    ) -> tuple[Answer, bool, dict[str, str]]:
        await cloud.save("src.txt", b"new")
        return await send(url, headers, kind)

    monkeypatch.setattr(_moves, "send_copy", rewrite_then_send)
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
    send = _moves.send_copy

    async def delete_then_send(
        url: str, headers: Mapping[str, str], kind: str
    ) -> tuple[Answer, bool, dict[str, str]]:
        await cloud.delete("src.txt")
        return await send(url, headers, kind)

    monkeypatch.setattr(_moves, "send_copy", delete_then_send)
    with pytest.raises(ObjectNotFoundError) as info:
        await cloud.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert (info.value.operation, info.value.key) == ("move", "src.txt")
    assert await cloud.list_files() == []


@pytest.mark.parametrize("then", ["rewritten", "deleted"])
async def test_a_moves_copy_landed_with_its_answer_lost_is_counted_as_copied(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    # the copy's PUT landed and its answer was lost; the source was rewritten (or
    # deleted) before the resend, which the store refuses (412, or 404): the copy of the
    # version looked at is at dst all the same, so the move says what its delete finds
    # (a rewritten source is kept: PreconditionFailedError; a deleted one: moved) and
    # the quota counts what is stored, never a copy it was told did not happen
    cloud.set_quota("", 1000)
    src, rewrite = "src.txt", then == "rewritten"
    await cloud.save(src, b"old")
    loop = asyncio.get_running_loop()
    send = _conditional._send
    lost: list[str] = []

    def landed_then_lost(
        url: str, headers: Mapping[str, str], method: str = "DELETE"
    ) -> tuple[int, dict[str, str]]:
        status = send(url, headers, method)
        if method == "PUT" and not lost:
            lost.append(url)
            # another process's write or delete (its hooks: the move holds the key here)
            other = cloud._save(src, b"new", "text/plain", {}) if rewrite else cloud._delete(src)
            asyncio.run_coroutine_threadsafe(other, loop).result(timeout=60)
            raise ConnectionResetError("the answer was lost")
        return status

    monkeypatch.setattr(_conditional, "_send", landed_then_lost)
    if rewrite:
        with pytest.raises(PreconditionFailedError) as info:
            await cloud.move("src.txt", "dst.txt")
        assert "destination holds the copy" in str(info.value)
    else:
        assert await cloud.move("src.txt", "dst.txt") == "dst.txt"
    monkeypatch.undo()
    assert lost, "the copy's PUT was not sent"
    assert await cloud.load("dst.txt") == b"old"
    expected = {"rewritten": (["dst.txt", "src.txt"], 6), "deleted": (["dst.txt"], 3)}[then]
    assert (await cloud.list_files(), (await cloud.get_usage()).used) == expected


async def test_a_move_cancelled_during_its_pinned_copy_ends_it_first(
    cloud: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the copy's PUT is under way when the caller is cancelled: the cancellation waits
    # for it, so nothing lands after the caller was told; the source stays
    await cloud.save("src.txt", b"old")
    send = _moves.send_copy
    started, go = asyncio.Event(), asyncio.Event()

    async def held_send(
        url: str, headers: Mapping[str, str], kind: str
    ) -> tuple[Answer, bool, dict[str, str]]:
        started.set()
        await go.wait()
        return await send(url, headers, kind)

    monkeypatch.setattr(_moves, "send_copy", held_send)
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
