"""Object events: subscribe() sees every change the backend makes, after it succeeded."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    ObjectEvent,
    ObjectNotFoundError,
    StorageBackend,
    StoragePermissionError,
    StorageQuotaExceededError,
    _events,
)
from file_storage.backends._support import mark_landed


def recorder(backend: StorageBackend) -> list[ObjectEvent]:
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    return seen


async def chunks() -> object:
    yield b"ab"
    yield b"cde"


async def test_save_emits_created_with_size_and_etag(backend: StorageBackend) -> None:
    seen = recorder(backend)
    await backend.save("docs/a.txt", b"hello")
    etag = (await backend.stat("docs/a.txt")).etag
    assert seen == [ObjectEvent("created", "docs/a.txt", 5, etag)]


async def test_streamed_save_emits_created_with_its_size(backend: StorageBackend) -> None:
    seen = recorder(backend)
    await backend.save("s.bin", chunks())  # type: ignore[arg-type]
    assert [(e.type, e.key, e.size) for e in seen] == [("created", "s.bin", 5)]


async def test_upload_file_emits_created(backend: StorageBackend, tmp_path: Path) -> None:
    source = tmp_path / "clip.webm"
    source.write_bytes(b"video")
    seen = recorder(backend)
    await backend.upload_file(source, "v/clip.webm")
    etag = (await backend.stat("v/clip.webm")).etag
    assert seen == [ObjectEvent("created", "v/clip.webm", 5, etag)]


async def test_copy_emits_created_for_the_destination(backend: StorageBackend) -> None:
    await backend.save("a.txt", b"abc")
    seen = recorder(backend)
    await backend.copy("a.txt", "b.txt")
    etag = (await backend.stat("b.txt")).etag
    assert seen == [ObjectEvent("created", "b.txt", 3, etag)]


async def test_move_emits_created_destination_then_deleted_source(
    backend: StorageBackend,
) -> None:
    await backend.save("in/a.txt", b"abc")
    seen = recorder(backend)
    await backend.move("in/a.txt", "done/a.txt")
    etag = (await backend.stat("done/a.txt")).etag
    assert seen == [
        ObjectEvent("created", "done/a.txt", 3, etag),
        ObjectEvent("deleted", "in/a.txt"),
    ]


def lands_then_cancelled(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, hook: str, *, lands: bool = True
) -> None:
    """``hook`` is cancelled once the store took the write (marked landed, as a hook
    does when the cancellation came too late), or (``lands=False``) before."""
    real = getattr(backend, hook)

    async def cancelled(*args: object) -> None:
        if lands:
            await real(*args)
        cancel = asyncio.CancelledError()
        if lands:
            mark_landed(cancel)
        raise cancel

    monkeypatch.setattr(backend, hook, cancelled)


@pytest.mark.parametrize("quota", [None, 1000], ids=["no-quota", "quota"])
async def test_save_cancelled_after_it_landed_emits_created(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, quota: int | None
) -> None:
    backend.set_quota("", quota)
    seen = recorder(backend)
    lands_then_cancelled(backend, monkeypatch, "_save")
    with pytest.raises(asyncio.CancelledError):
        await backend.save("a.txt", b"abc")
    etag = (await backend.stat("a.txt")).etag
    assert seen == [ObjectEvent("created", "a.txt", 3, etag)]


async def test_save_cancelled_before_it_landed_emits_nothing(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = recorder(backend)
    lands_then_cancelled(backend, monkeypatch, "_save", lands=False)
    with pytest.raises(asyncio.CancelledError):
        await backend.save("a.txt", b"abc")
    assert seen == []


async def test_upload_file_cancelled_after_it_landed_emits_created(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "clip.webm"
    source.write_bytes(b"video")
    seen = recorder(backend)
    lands_then_cancelled(backend, monkeypatch, "_upload_file")
    with pytest.raises(asyncio.CancelledError):
        await backend.upload_file(source, "v/clip.webm")
    etag = (await backend.stat("v/clip.webm")).etag
    assert seen == [ObjectEvent("created", "v/clip.webm", 5, etag)]


async def test_copy_cancelled_after_it_landed_emits_created(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await backend.save("a.txt", b"abc")
    seen = recorder(backend)
    lands_then_cancelled(backend, monkeypatch, "_copy")
    with pytest.raises(asyncio.CancelledError):
        await backend.copy("a.txt", "b.txt")
    etag = (await backend.stat("b.txt")).etag
    assert seen == [ObjectEvent("created", "b.txt", 3, etag)]


@pytest.mark.parametrize("quota", [None, 1000], ids=["no-quota", "quota"])
async def test_move_cancelled_after_it_landed_emits_created_then_deleted(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, quota: int | None
) -> None:
    backend.set_quota("", quota)
    await backend.save("in/a.txt", b"abc")
    seen = recorder(backend)
    lands_then_cancelled(backend, monkeypatch, "_move")
    with pytest.raises(asyncio.CancelledError):
        await backend.move("in/a.txt", "done/a.txt")
    etag = (await backend.stat("done/a.txt")).etag
    assert seen == [
        ObjectEvent("created", "done/a.txt", 3, etag),
        ObjectEvent("deleted", "in/a.txt"),
    ]


async def test_save_cancelled_while_its_event_is_made_emits_created(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the write landed; the stat that gives its event an ETag is what gets cancelled (a
    # store whose write does not tell the ETag, as the hook here)
    seen = recorder(backend)
    reached = asyncio.Event()
    real_save = backend._save

    async def untold(*args: Any) -> None:
        await real_save(*args)

    monkeypatch.setattr(backend, "_save", untold)

    async def held(key: str) -> object:
        reached.set()
        await asyncio.Event().wait()  # until the caller is cancelled
        raise AssertionError("never answered")

    monkeypatch.setattr(backend, "_stat", held)
    task = asyncio.create_task(backend.save("a.txt", b"abc"))
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    assert await backend.load("a.txt") == b"abc"
    assert [(e.type, e.key, e.size) for e in seen] == [("created", "a.txt", 3)]


@pytest.mark.parametrize("operation", ["save", "copy", "move", "delete", "delete_many"])
async def test_change_cancelled_as_its_keys_are_unlocked_emits_its_events(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    # the write landed; the unlock of its keys (a Redis round trip with a shared ledger)
    # is what gets cancelled
    await backend.save("src.txt", b"abc")
    seen = recorder(backend)
    real_hold = backend._quotas.hold
    unlocking = asyncio.Event()

    @contextlib.asynccontextmanager
    async def hold(*keys: str, lazy: bool = False) -> AsyncIterator[None]:
        async with real_hold(*keys, lazy=lazy):
            yield
            unlocking.set()
            await asyncio.Event().wait()  # until the caller is cancelled

    monkeypatch.setattr(backend._quotas, "hold", hold)
    task: asyncio.Task[object]
    if operation == "save":
        task = asyncio.create_task(backend.save("a.txt", b"abc"))
    elif operation == "delete":
        task = asyncio.create_task(backend.delete("src.txt"))
    elif operation == "delete_many":
        task = asyncio.create_task(backend.delete_many(["src.txt"]))
    else:
        task = asyncio.create_task(getattr(backend, operation)("src.txt", "a.txt"))
    await unlocking.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    monkeypatch.undo()
    expected: list[ObjectEvent] = []
    if operation in ("save", "copy", "move"):
        expected.append(ObjectEvent("created", "a.txt", 3, (await backend.stat("a.txt")).etag))
    if operation != "save" and operation != "copy":
        expected.append(ObjectEvent("deleted", "src.txt"))
    assert seen == expected


@pytest.mark.parametrize("lands", [True, False], ids=["landed", "not-landed"])
async def test_delete_cancelled_emits_deleted_only_once_it_landed(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, lands: bool
) -> None:
    await backend.save("a.txt", b"abc")
    seen = recorder(backend)
    lands_then_cancelled(backend, monkeypatch, "_delete", lands=lands)
    with pytest.raises(asyncio.CancelledError):
        await backend.delete("a.txt")
    assert await backend.exists("a.txt") is not lands
    assert seen == ([ObjectEvent("deleted", "a.txt")] if lands else [])


async def test_concurrent_writes_of_a_key_are_announced_in_the_order_they_landed(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first write lands, then its answer is slow to come back (a thread, a network):
    # a second write of the key landing meanwhile must not be announced before it, or a
    # subscriber keeping each key's latest ETag ends with one that is no longer stored
    seen = recorder(backend)
    real_save = backend._save
    second_landed = False

    async def slow_first_answer(key: str, body: Any, *args: Any) -> str | None:
        nonlocal second_landed
        etag: str | None = await real_save(key, body, *args)
        if body == b"first":
            for _ in range(10_000):  # a bounded window for the second write to land
                if second_landed:
                    break
                await asyncio.sleep(0)
        else:
            second_landed = True
        return etag

    monkeypatch.setattr(backend, "_save", slow_first_answer)
    await asyncio.gather(backend.save("a.txt", b"first"), backend.save("a.txt", b"second!"))
    monkeypatch.undo()
    assert await backend.load("a.txt") == b"second!"
    assert [event.size for event in seen] == [5, 7]
    assert seen[-1].etag == (await backend.stat("a.txt")).etag


async def test_deletes_emit_deleted_per_key(backend: StorageBackend) -> None:
    for key in ("a.txt", "b.txt", "c.txt", "p/1.txt", "p/2.txt"):
        await backend.save(key, b"x")
    seen = recorder(backend)
    await backend.delete("a.txt")
    await backend.delete_many(["b.txt", "c.txt"])
    assert await backend.delete_prefix("p") == 2
    assert seen == [
        ObjectEvent("deleted", k) for k in ("a.txt", "b.txt", "c.txt", "p/1.txt", "p/2.txt")
    ]
    assert await backend.list_files() == []


async def test_failed_writes_emit_nothing(backend: StorageBackend) -> None:
    seen = recorder(backend)
    with pytest.raises(ObjectNotFoundError):
        await backend.copy("missing.txt", "b.txt")
    with pytest.raises(ObjectNotFoundError):
        await backend.move("missing.txt", "b.txt")
    backend.set_quota("q", 3)
    with pytest.raises(StorageQuotaExceededError):
        await backend.save("q/big.bin", b"too big")
    assert seen == []


async def test_delete_many_failing_part_way_emits_what_it_deleted(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the store deleted some keys, then refused the rest: a subscriber keeping an index
    # must hear of those deleted, and only of them
    keys = ["d/a", "d/b", "d/c"]
    for key in keys:
        await backend.save(key, b"x")
    seen = recorder(backend)
    real = backend._delete_many

    async def partly_denied(batch: list[str]) -> None:
        await real(batch[:2])
        raise StoragePermissionError("access denied")

    monkeypatch.setattr(backend, "_delete_many", partly_denied)
    with pytest.raises(StoragePermissionError):
        await backend.delete_many(keys)
    assert seen == [ObjectEvent("deleted", "d/a"), ObjectEvent("deleted", "d/b")]
    assert await backend.list_files("d") == ["d/c"]


async def test_unsubscribe_stops_the_events(backend: StorageBackend) -> None:
    seen: list[ObjectEvent] = []
    unsubscribe = backend.subscribe(seen.append)
    await backend.save("a.txt", b"x")
    unsubscribe()
    unsubscribe()  # twice is fine
    await backend.save("b.txt", b"x")
    assert [e.key for e in seen] == ["a.txt"]


async def test_unsubscribed_during_a_delivery_gets_no_more_events(
    backend: StorageBackend,
) -> None:
    # a subscriber closing another's resources unsubscribes it first: from then on that
    # one must not be called, not even with the event being delivered
    seen: list[ObjectEvent] = []
    unsubscribe_late = backend.subscribe(lambda event: unsubscribe_late_one())
    unsubscribe_late_one = backend.subscribe(seen.append)
    del unsubscribe_late
    await backend.save("a.txt", b"x")
    await backend.move("a.txt", "b.txt")
    assert seen == []


async def test_subscribed_during_a_delivery_gets_the_next_events(
    backend: StorageBackend,
) -> None:
    seen: list[ObjectEvent] = []
    unsubscribe: list[object] = []

    def first(event: ObjectEvent) -> None:
        if not unsubscribe:
            unsubscribe.append(backend.subscribe(seen.append))

    backend.subscribe(first)
    await backend.save("a.txt", b"x")
    await backend.move("a.txt", "b.txt")
    assert [(e.type, e.key) for e in seen] == [("created", "b.txt"), ("deleted", "a.txt")]


async def test_failing_callback_is_logged_and_never_breaks_the_write(
    backend: StorageBackend, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: ObjectEvent) -> None:
        raise RuntimeError("callback bug")

    backend.subscribe(broken)
    seen = recorder(backend)
    with caplog.at_level(logging.ERROR, logger="file_storage.events"):
        assert await backend.save("a.txt", b"x") == "a.txt"
    assert await backend.load("a.txt") == b"x"
    assert [e.key for e in seen] == ["a.txt"]  # the others still get it
    assert "callback bug" in caplog.text
    assert "'a.txt'" in caplog.text


async def test_async_callback_runs_in_order_without_holding_the_write(
    backend: StorageBackend,
) -> None:
    release = asyncio.Event()
    seen: list[tuple[str, str]] = []

    async def slow(event: ObjectEvent) -> None:
        if not seen:
            await release.wait()  # the first delivery blocks until the test lets it go
        seen.append((event.type, event.key))

    backend.subscribe(slow)
    await backend.save("a.txt", b"x")  # returns although its callback is still waiting
    await backend.delete("a.txt")
    assert seen == []
    release.set()
    await backend.aclose()  # waits for the deliveries still running
    assert seen == [("created", "a.txt"), ("deleted", "a.txt")]


async def test_aclose_waits_for_the_deliveries_of_changes_callbacks_made(
    backend: StorageBackend,
) -> None:
    # a callback writing (a thumbnail of each image) makes events of its own while
    # aclose waits: those are delivered before the backend closes, not after
    seen: list[str] = []

    async def thumbnail(event: ObjectEvent) -> None:
        if event.key == "a.png":
            await backend.save("thumbs/a.png", b"t")

    async def index(event: ObjectEvent) -> None:
        for _ in range(100):  # awaits, as any real handler has (a bounded window)
            await asyncio.sleep(0)
        seen.append(event.key)

    backend.subscribe(thumbnail)
    backend.subscribe(index)
    await backend.save("a.png", b"x")
    await backend.aclose()
    assert seen == ["a.png", "thumbs/a.png"]


async def test_aclose_cancelling_late_deliveries_leaves_no_coroutine_unawaited(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # the first delivery never ends; the second waits its turn behind it when aclose's
    # deadline cancels both: the second's coroutine is closed, not garbage collected
    # with a "never awaited" RuntimeWarning
    monkeypatch.setattr(_events, "DRAIN_SECONDS", 0.0)
    started = asyncio.Event()

    async def stuck(event: ObjectEvent) -> None:
        started.set()
        await asyncio.Event().wait()

    backend.subscribe(stuck)
    await backend.save("a.txt", b"x")
    await backend.save("b.txt", b"x")
    await started.wait()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.WARNING, logger="file_storage.events"):
            await backend.aclose()
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert "cancelled 2 event callbacks" in caplog.text


async def test_failing_async_callback_is_logged(
    backend: StorageBackend, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(event: ObjectEvent) -> None:
        raise RuntimeError("async callback bug")

    backend.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="file_storage.events"):
        await backend.save("a.txt", b"x")
        await backend.aclose()
    assert "async callback bug" in caplog.text


def test_subscribe_rejects_what_is_not_callable(backend: StorageBackend) -> None:
    with pytest.raises(TypeError):
        backend.subscribe("not a function")  # type: ignore[arg-type]


@pytest.mark.backend_needs("versions")
async def test_restore_version_emits_created(backend: StorageBackend) -> None:
    await backend.set_versioning(True)
    await backend.save("a.txt", b"one")
    first = (await backend.list_versions("a.txt"))[0].version_id
    await backend.save("a.txt", b"second")
    seen = recorder(backend)
    await backend.restore_version("a.txt", first)
    etag = (await backend.stat("a.txt")).etag
    assert seen == [ObjectEvent("created", "a.txt", 3, etag)]


@pytest.mark.backend_needs("versions")
async def test_purge_versions_emits_deleted_only_when_the_object_goes(
    backend: StorageBackend,
) -> None:
    await backend.set_versioning(True)
    for content in (b"one", b"two", b"three"):
        await backend.save("a.txt", content)
        await backend.save("b.txt", content)
    await backend.delete("b.txt")
    seen = recorder(backend)
    assert await backend.purge_versions("a.txt", keep=2) == 1  # an old version
    assert seen == []
    assert await backend.purge_versions("b.txt", keep=0) == 3  # deleted before
    assert seen == []
    assert await backend.purge_versions("a.txt", keep=0) == 2  # the object with them
    assert not await backend.exists("a.txt")
    assert seen == [ObjectEvent("deleted", "a.txt")]


@pytest.mark.backend_needs("write_etags")
@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "stream"])
async def test_created_event_carries_the_writes_etag_not_a_later_writers(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    await backend.save("alone.txt", b"alone")
    seen = recorder(backend)
    await backend.save("alone.txt", b"alone, again")
    assert [event.etag for event in seen] == [(await backend.stat("alone.txt")).etag]
    real_save = backend._save

    async def then_a_rival(key: str, body: Any, *args: Any) -> str | None:
        etag: str | None = await real_save(key, body, *args)
        # another writer's object lands before the event is made
        await real_save(key, b"a rival's object", *args)
        return etag

    monkeypatch.setattr(backend, "_save", then_a_rival)
    await backend.save("a.txt", chunks() if streamed else b"abcde")  # type: ignore[arg-type]
    monkeypatch.undo()
    rival = (await backend.stat("a.txt")).etag
    event = seen[-1]
    assert (event.type, event.key, event.size) == ("created", "a.txt", 5)
    assert event.etag is not None
    assert event.etag != rival
