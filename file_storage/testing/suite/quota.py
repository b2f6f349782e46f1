"""Quotas: exact, race-free, per prefix, kept up to date by the library's own writes."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest

from file_storage import (
    ObjectNotFoundError,
    StorageBackend,
    StoragePermissionError,
    StorageQuotaExceededError,
)
from file_storage.backends._support import mark_landed
from file_storage.models import Usage


async def stream_of(size: int, chunk: int) -> AsyncIterator[bytes]:
    for offset in range(0, size, chunk):
        yield b"q" * min(chunk, size - offset)


async def test_write_of_exactly_the_remaining_bytes_succeeds(backend: StorageBackend) -> None:
    backend.set_quota("", 100)
    assert backend.max_size_bytes == 100
    await backend.save("a", b"x" * 60)
    await backend.save("b", b"x" * 40)
    assert await backend.get_usage() == Usage(prefix="", used=100, limit=100)


async def test_one_byte_over_fails_and_writes_nothing(backend: StorageBackend) -> None:
    backend.set_quota("", 100)
    await backend.save("a", b"x" * 60)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.save("b", b"x" * 41)
    err = info.value
    assert (err.used, err.limit, err.requested, err.prefix) == (60, 100, 41, "")
    assert (err.operation, err.key) == ("save", "b")
    assert await backend.list_files() == ["a"]


async def test_usage_learned_from_existing_objects(backend: StorageBackend) -> None:
    await backend.save("old/1", b"x" * 30)
    await backend.save("old/2", b"x" * 30)
    backend.set_quota("", 100)
    with pytest.raises(StorageQuotaExceededError):
        await backend.save("new", b"x" * 41)
    await backend.save("new", b"x" * 40)


async def test_overwrite_counts_only_the_difference(backend: StorageBackend) -> None:
    backend.set_quota("", 100)
    await backend.save("k", b"x" * 80)
    await backend.save("k", b"y" * 100)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.save("k", b"z" * 101)
    assert info.value.requested == 101
    assert await backend.load("k") == b"y" * 100
    await backend.save("k", b"w" * 10)
    assert (await backend.get_usage()).used == 10


async def test_delete_frees_space(backend: StorageBackend) -> None:
    backend.set_quota("", 100)
    await backend.save("a/1", b"x" * 100)
    await backend.delete("a/1")
    await backend.save("a/2", b"x" * 100)
    await backend.delete_many(["a/2"])
    await backend.save("a/3", b"x" * 50)
    await backend.save("a/4", b"x" * 50)
    assert await backend.delete_prefix("a") == 2
    await backend.save("b", b"x" * 100)
    assert (await backend.get_usage()).used == 100


async def test_copy_counts_and_move_does_not_double_count(backend: StorageBackend) -> None:
    backend.set_quota("", 100)
    await backend.save("a", b"x" * 40)
    await backend.copy("a", "b")
    with pytest.raises(StorageQuotaExceededError):
        await backend.copy("a", "c")
    await backend.move("b", "d")
    assert (await backend.get_usage()).used == 80
    assert await backend.list_files() == ["a", "d"]


async def test_concurrent_writers_never_overshoot(backend: StorageBackend) -> None:
    backend.set_quota("", 1000)
    results = await asyncio.gather(
        *(backend.save(f"w/{i:02d}", b"x" * 100) for i in range(50)), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, StorageQuotaExceededError)]
    assert (len(ok), len(refused)) == (10, 40)
    assert sorted(await backend.list_files()) == sorted(ok)
    assert await backend.get_total_size() == 1000


async def test_stream_of_unknown_length_crossing_quota_is_aborted(
    backend: StorageBackend,
) -> None:
    backend.set_quota("", 1000)
    await backend.save("keep", b"x" * 100)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.save("big.bin", stream_of(5000, 300))
    assert info.value.limit == 1000
    assert await backend.list_files() == ["keep"]
    assert (await backend.get_usage()).used == 100
    await backend.save("fits.bin", stream_of(900, 300))


async def test_failed_write_releases_its_reservation(backend: StorageBackend) -> None:
    backend.set_quota("", 1000)

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 600
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        await backend.save("a", broken())
    await backend.save("b", b"x" * 1000)


async def test_upload_file_over_quota_writes_nothing(
    backend: StorageBackend, tmp_path: Path
) -> None:
    backend.set_quota("", 100)
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 101)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.upload_file(src, "big.bin")
    assert info.value.operation == "upload_file"
    assert await backend.list_files() == []


async def test_per_user_quotas_are_independent(backend: StorageBackend) -> None:
    backend.set_quota("users/u1", 100)
    backend.set_quota("users/u2/", 100)
    backend.set_quota("", 150)
    await backend.save("users/u1/a", b"x" * 100)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.save("users/u1/b", b"x")
    assert info.value.prefix == "users/u1/"
    await backend.save("users/u2/a", b"x" * 50)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.save("users/u2/b", b"x")
    assert info.value.prefix == ""
    await backend.save("users/u10/a", b"")  # not under users/u1/
    assert await backend.get_usage("users/u1") == Usage("users/u1/", 100, 100)
    assert await backend.get_usage("users/u2") == Usage("users/u2/", 50, 100)


async def test_usage_without_quota_has_no_limit(backend: StorageBackend) -> None:
    await backend.save("users/u3/a", b"x" * 7)
    assert await backend.get_usage("users/u3") == Usage("users/u3/", 7, None)


async def test_quota_message_is_actionable(backend: StorageBackend) -> None:
    backend.set_quota("users/u1", 100_000_000)
    await backend.save("users/u1/a", b"x" * 99_200_000)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.save("users/u1/b", b"x" * 5_000_000)
    assert str(info.value) == (
        "save 'users/u1/b': quota for users/u1/ is 100.0 MB, 99.2 MB used, this write needs 5.0 MB"
    )


async def test_removing_a_quota_lifts_it(backend: StorageBackend) -> None:
    backend.set_quota("", 10)
    backend.set_quota("", None)
    await backend.save("a", b"x" * 11)
    assert backend.max_size_bytes is None


@pytest.mark.parametrize("limit", [-1, 1.5, "10"])
async def test_bad_quota_raises_value_error(backend: StorageBackend, limit: object) -> None:
    with pytest.raises(ValueError, match="quota"):
        backend.set_quota("", limit)  # type: ignore[arg-type]


# ------------------------------------------------------------------ figures of the quota error


async def paused_save(
    backend: StorageBackend, key: str, head: bytes, tail: bytes = b""
) -> tuple[asyncio.Task[str], asyncio.Event]:
    """Start a streamed save of ``head + tail`` and return once it holds ``head``'s quota.

    The save then waits, in flight, until the returned gate is set.
    """
    gate, pulled = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield head
        pulled.set()  # the writer asked for more: it has counted ``head``
        await gate.wait()
        if tail:
            yield tail

    task = asyncio.create_task(backend.save(key, body()))
    waiter = asyncio.create_task(pulled.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # raise what stopped the save before it was in flight
    return task, gate


async def settle(task: asyncio.Task[object], turns: int = 20_000) -> None:
    """Let ``task`` run until it is done or waits on something: a bounded number of turns."""
    for _ in range(turns):
        if task.done():
            return
        await asyncio.sleep(0)


async def assert_ledger_exact(backend: StorageBackend, limit: int) -> None:
    total = await backend.get_total_size()
    assert total <= limit
    assert (await backend.get_usage()).used == total


async def test_refused_stream_reports_only_what_others_hold(backend: StorageBackend) -> None:
    backend.set_quota("", 1000)
    await backend.save("keep", b"x" * 100)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.save("big.bin", stream_of(5000, 300))
    assert (info.value.used, info.value.requested) == (100, 1200)


async def test_refused_stream_counts_other_writes_in_flight(backend: StorageBackend) -> None:
    backend.set_quota("", 1000)
    await backend.save("keep", b"x" * 100)
    other, gate = await paused_save(backend, "other", b"o" * 300)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.save("big.bin", stream_of(5000, 300))
    assert (info.value.used, info.value.requested) == (400, 900)
    gate.set()
    await other
    await assert_ledger_exact(backend, 1000)


async def test_refused_bytes_count_other_writes_in_flight(backend: StorageBackend) -> None:
    backend.set_quota("", 1000)
    await backend.save("keep", b"x" * 100)
    other, gate = await paused_save(backend, "other", b"o" * 300)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.save("b", b"x" * 601)
    assert (info.value.used, info.value.requested) == (400, 601)
    gate.set()
    await other


async def test_refused_upload_file_reports_its_size(
    backend: StorageBackend, tmp_path: Path
) -> None:
    backend.set_quota("", 1000)
    await backend.save("keep", b"x" * 100)
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 901)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.upload_file(src, "big.bin")
    assert (info.value.used, info.value.requested) == (100, 901)


async def test_refused_upload_file_counts_other_writes_in_flight(
    backend: StorageBackend, tmp_path: Path
) -> None:
    backend.set_quota("", 1000)
    await backend.save("keep", b"x" * 100)
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 700)
    other, gate = await paused_save(backend, "other", b"o" * 300)
    with pytest.raises(StorageQuotaExceededError) as info:
        await backend.upload_file(src, "big.bin")
    assert (info.value.used, info.value.requested) == (400, 700)
    gate.set()
    await other
    await assert_ledger_exact(backend, 1000)


# ------------------------------------------------------------------ races on one key


async def test_delete_racing_an_overwrite_cannot_hand_out_its_space(
    backend: StorageBackend,
) -> None:
    backend.set_quota("", 1000)
    await backend.save("k", b"a" * 1000)
    overwrite, gate = await paused_save(backend, "k", b"b" * 1000)  # needs no new bytes

    async def delete_then_fill() -> None:
        await backend.delete("k")
        await backend.save("other", b"c" * 1000)

    rival = asyncio.create_task(delete_then_fill())
    await settle(rival)
    gate.set()
    await overwrite
    await asyncio.gather(rival, return_exceptions=True)
    await assert_ledger_exact(backend, 1000)


async def test_move_racing_an_overwrite_cannot_double_store(backend: StorageBackend) -> None:
    backend.set_quota("", 1000)
    await backend.save("k", b"a" * 1000)
    overwrite, gate = await paused_save(backend, "k", b"b" * 1000)
    rival = asyncio.create_task(backend.move("k", "moved"))
    await settle(rival)
    gate.set()
    await overwrite
    await asyncio.gather(rival, return_exceptions=True)
    await assert_ledger_exact(backend, 1000)


async def test_copy_racing_an_overwrite_of_its_source_counts_what_it_copied(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set_quota("", 1000)
    await backend.save("src", b"a" * 100)
    entered, gate = asyncio.Event(), asyncio.Event()
    real_copy = backend._copy

    async def slow_copy(src: str, dst: str) -> None:
        entered.set()
        await gate.wait()
        await real_copy(src, dst)

    monkeypatch.setattr(backend, "_copy", slow_copy)
    copy = asyncio.create_task(backend.copy("src", "dst"))
    await entered.wait()
    rival = asyncio.create_task(backend.save("src", b"b" * 500))
    await settle(rival)
    gate.set()
    await copy
    await rival
    await assert_ledger_exact(backend, 1000)


async def test_concurrent_saves_of_one_key_keep_the_ledger_exact(
    backend: StorageBackend,
) -> None:
    backend.set_quota("", 100)
    for round_ in range(40):
        sizes = [(round_ + i) % 3 for i in range(8)]
        await asyncio.gather(*(backend.save("k", b"x" * size) for size in sizes))
        await assert_ledger_exact(backend, 100)


async def trickle(data: bytes) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), 2):
        await asyncio.sleep(0)  # a chunk arriving later, as from a network
        yield data[offset : offset + 2]


async def test_any_interleaving_on_a_few_keys_keeps_the_ledger_exact(
    backend: StorageBackend,
) -> None:
    """Random mixes of writes, copies, moves and deletes on two keys, under a tight quota."""
    limit = 12
    backend.set_quota("", limit)
    rng = random.Random(12)
    keys = ("a", "b")

    def operation() -> Awaitable[object]:
        key, other = rng.sample(keys, 2)
        data = b"x" * rng.randrange(8)
        match rng.randrange(7):
            case 0:
                return backend.save(key, data)
            case 1:
                return backend.save(key, trickle(data))
            case 2:
                return backend.delete(key)
            case 3:
                return backend.copy(key, other)
            case 4:
                return backend.move(key, other)
            case 5:
                return backend.delete_many([key, other])
            case _:
                return backend.delete_prefix("")

    for _ in range(30):
        results = await asyncio.gather(*(operation() for _ in range(8)), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, StorageQuotaExceededError | ObjectNotFoundError
            ):
                raise result
        await assert_ledger_exact(backend, limit)


# ------------------------------------------------------------------ cancellation


async def test_write_cancelled_while_waiting_for_its_key_frees_everything(
    backend: StorageBackend,
) -> None:
    backend.set_quota("", 1000)
    await backend.save("k", b"a" * 100)
    first, gate = await paused_save(backend, "k", b"b" * 100)
    waiting = asyncio.create_task(backend.save("k", b"c" * 900))
    await settle(waiting)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.set()
    await first
    assert await backend.load("k") == b"b" * 100
    await backend.save("other", b"x" * 900)  # nothing of the cancelled write is held
    await assert_ledger_exact(backend, 1000)


async def test_writes_cancelled_before_they_land_free_everything(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled after 0, 1, 2... turns: waiting for the key, scanning, reserving, writing."""
    await backend.save("k", b"a" * 100)
    real_save = backend._save

    async def never_lands(*args: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(backend, "_save", never_lands)
    for turns in range(30):
        backend.set_quota("", None)
        backend.set_quota("", 1000)  # a new quota: the next write scans first
        holder = asyncio.create_task(backend.save("k", b"b" * 200))
        waiter = asyncio.create_task(backend.save("k", stream_of(300, 100)))
        for _ in range(turns):
            await asyncio.sleep(0)
        waiter.cancel()
        holder.cancel()
        await asyncio.gather(holder, waiter, return_exceptions=True)
        assert (await backend.get_usage()).used == 100
    monkeypatch.setattr(backend, "_save", real_save)
    await backend.save("k", b"d" * 1000)  # the key is free again, and the whole quota
    await assert_ledger_exact(backend, 1000)


async def test_new_key_cancelled_before_it_landed_is_not_counted(
    backend: StorageBackend,
) -> None:
    # a remote store is asked what the key holds after a cancelled write: "no object"
    # (S3's 404 to a HEAD) means nothing landed, so nothing of it is counted
    backend.set_quota("", 1000)
    await backend.save("kept", b"k" * 100)
    sent = asyncio.Event()

    async def hangs() -> AsyncIterator[bytes]:
        yield b"x" * 300
        sent.set()
        await asyncio.Event().wait()  # the rest of the upload never comes
        yield b"never"

    writer = asyncio.create_task(backend.save("new", hangs()))
    await sent.wait()
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert not await backend.exists("new")
    assert (await backend.get_usage()).used == 100
    await backend.save("more", b"m" * 900)  # the whole rest of the quota is free
    await assert_ledger_exact(backend, 1000)


async def test_write_cancelled_after_it_landed_is_counted(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set_quota("", 1000)
    await backend.save("k", b"a" * 100)
    real_save = backend._save

    async def lands_then_cancelled(
        key: str, body: bytes | AsyncIterator[bytes], content_type: str, metadata: dict[str, str]
    ) -> None:
        await real_save(key, body, content_type, metadata)
        cancelled = asyncio.CancelledError()
        mark_landed(cancelled)  # what a hook does when the cancellation came too late
        raise cancelled

    monkeypatch.setattr(backend, "_save", lands_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        await backend.save("k", b"b" * 700)
    with pytest.raises(asyncio.CancelledError):
        await backend.save("j", stream_of(200, 100))
    assert await backend.get_total_size() == 900
    await assert_ledger_exact(backend, 1000)


# ------------------------------------------------------------------ move = copy, then delete


async def test_move_whose_delete_fails_counts_what_it_stored(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set_quota("", 1000)
    await backend.save("src", b"x" * 400)

    async def denied(key: str) -> None:
        raise StoragePermissionError("access denied")

    monkeypatch.setattr(backend, "_delete", denied)
    # a rename moves or fails whole; a copy then a delete can leave both: either way the
    # ledger must count exactly what is stored
    with contextlib.suppress(StoragePermissionError):
        await backend.move("src", "dst")
    with contextlib.suppress(StorageQuotaExceededError):
        await backend.save("more", b"y" * 600)
    await assert_ledger_exact(backend, 1000)
