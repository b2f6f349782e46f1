"""A remote write or delete left without an answer asks the store what the key holds, so
the quota counts it; a caller cancelled during that look-up is cancelled all the same.

Each test runs on S3 (moto) with the quota ledger in this process and in Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from file_storage import StorageBackend, StorageUnavailableError
from file_storage.backends import _settles
from file_storage.models import ObjectInfo
from tests.quota_redis.server import RedisServer
from tests.s3util import s3_backends

pytestmark = pytest.mark.s3


@pytest.fixture(params=["process", "redis"])
async def s3_backend(
    request: pytest.FixtureRequest, moto_endpoint: str, s3_bucket: str
) -> AsyncIterator[StorageBackend]:
    shared: dict[str, Any] = {}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        shared = {
            "quota_redis_url": server.url,
            "quota_redis_namespace": f"unanswered:{uuid.uuid4().hex[:12]}",
        }
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make(prefix="storage", region="us-east-1", **shared)


class LookUp:
    """Holds the quota's look-up (``_stat`` of ``key``) of one backend until let go."""

    def __init__(self, backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, key: str):
        self.armed = False
        self.reached = asyncio.Event()
        self.go = asyncio.Event()
        real: Callable[[str], Awaitable[ObjectInfo]] = backend._stat

        async def held(name: str) -> ObjectInfo:
            if self.armed and name == key:
                self.armed = False
                self.reached.set()
                await self.go.wait()
            return await real(name)

        monkeypatch.setattr(backend, "_stat", held)


def answer_lost(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, hook: str, look: LookUp
) -> None:
    """``hook`` is done by the store, and its answer lost (a cut connection)."""
    real: Callable[..., Awaitable[None]] = getattr(backend, hook)

    async def lost(*args: Any) -> None:
        await real(*args)
        look.armed = True
        raise StorageUnavailableError("connection reset")

    monkeypatch.setattr(backend, hook, lost)


async def cancel_at_look_up(look: LookUp, work: Awaitable[Any]) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(work)
    await look.reached.wait()
    task.cancel()
    look.go.set()
    await asyncio.wait([task])
    return task


async def test_save_cancelled_while_the_quota_asks_the_store_is_cancelled(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_backend.set_quota("", 1000)
    look = LookUp(s3_backend, monkeypatch, "k")
    answer_lost(s3_backend, monkeypatch, "_save", look)
    task = await cancel_at_look_up(look, s3_backend.save("k", b"x" * 400))
    assert task.cancelled()
    assert (await s3_backend.get_usage()).used == 400  # stored: counted


async def test_save_many_cancelled_while_the_quota_asks_the_store_saves_nothing_more(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_backend.set_quota("", 1000)
    look = LookUp(s3_backend, monkeypatch, "a")
    answer_lost(s3_backend, monkeypatch, "_save", look)
    items = {"a": b"x" * 100, "b": b"y" * 100}
    task = await cancel_at_look_up(look, s3_backend.save_many(items, concurrency=1))
    assert task.cancelled()
    assert not await s3_backend.exists("b")  # the cancelled batch stopped
    assert (await s3_backend.get_usage()).used == 100


async def test_delete_cancelled_while_the_quota_asks_the_store_is_cancelled(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_backend.set_quota("", 1000)
    await s3_backend.save("k", b"x" * 400)
    look = LookUp(s3_backend, monkeypatch, "k")
    answer_lost(s3_backend, monkeypatch, "_delete", look)
    task = await cancel_at_look_up(look, s3_backend.delete("k"))
    assert task.cancelled()
    assert (await s3_backend.get_usage()).used == 0  # gone: no longer counted


async def test_versioned_save_cancelled_while_the_quota_lists_versions_is_cancelled(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await s3_backend.set_versioning(True)
    s3_backend.set_quota("", 1000)
    await s3_backend.save("k", b"x" * 300)
    look = LookUp(s3_backend, monkeypatch, "k")
    real_versions = s3_backend._list_versions
    listing = asyncio.Event()
    go = asyncio.Event()

    async def held_versions(key: str) -> Any:
        listing.set()
        await go.wait()
        return await real_versions(key)

    monkeypatch.setattr(s3_backend, "_list_versions", held_versions)
    answer_lost(s3_backend, monkeypatch, "_save", look)
    look.go.set()  # the stat answers at once; the listing is held
    task = asyncio.ensure_future(s3_backend.save("k", b"y" * 400))
    await listing.wait()
    task.cancel()
    go.set()
    await asyncio.wait([task])
    assert task.cancelled()
    assert (await s3_backend.get_usage()).used == 700  # both versions stored, both counted


@pytest.mark.parametrize("cancelled", [False, True], ids=["answer-lost", "cancelled"])
async def test_purge_versions_done_without_an_answer_frees_what_it_purged(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, cancelled: bool
) -> None:
    await s3_backend.set_versioning(True)
    s3_backend.set_quota("", 1000)
    for size in (100, 200, 300):
        await s3_backend.save("k", b"v" * size)
    assert (await s3_backend.get_usage()).used == 600
    real = s3_backend._purge_versions

    async def purged_then_lost(*args: Any) -> None:
        await real(*args)
        if cancelled:
            raise asyncio.CancelledError  # the caller went away as S3 answered
        raise StorageUnavailableError("connection reset")

    monkeypatch.setattr(s3_backend, "_purge_versions", purged_then_lost)
    with pytest.raises(asyncio.CancelledError if cancelled else StorageUnavailableError):
        await s3_backend.purge_versions("k", keep=1)
    assert [v.size for v in await s3_backend.list_versions("k")] == [300]
    assert (await s3_backend.get_usage()).used == 300
    await s3_backend.save("other", b"o" * 700)  # fits: what was purged is free again


@pytest.fixture
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_settles, "LOOK_UP_GRACE", 0.05)


async def held_for_ever(look: LookUp, work: Awaitable[Any], *, cancel: bool) -> asyncio.Task[Any]:
    """Run ``work`` whose look-up the store never answers (it is down); cancel it then."""
    task = asyncio.ensure_future(work)
    await look.reached.wait()
    if cancel:
        task.cancel()
    done, _ = await asyncio.wait([task], timeout=30)
    assert task in done  # not held for as long as the store stays down
    return task


@pytest.mark.usefixtures("short_grace")
async def test_save_cancelled_while_the_store_does_not_answer_its_look_up_counts_it(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_backend.set_quota("", 1000)
    look = LookUp(s3_backend, monkeypatch, "k")
    answer_lost(s3_backend, monkeypatch, "_save", look)
    task = await held_for_ever(look, s3_backend.save("k", b"x" * 400), cancel=True)
    assert task.cancelled()
    assert (await s3_backend.get_usage()).used == 400  # unknown: counted as stored


@pytest.mark.usefixtures("short_grace")
async def test_save_cancelled_in_flight_whose_look_up_gets_no_answer_ends_unasked(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # asyncio.timeout cancels once: the look-up that follows is bounded all the same
    s3_backend.set_quota("", 1000)
    look = LookUp(s3_backend, monkeypatch, "k")
    real = s3_backend._save

    async def cut(*args: Any) -> None:
        await real(*args)
        look.armed = True
        raise asyncio.CancelledError  # the caller went away as S3 answered

    monkeypatch.setattr(s3_backend, "_save", cut)
    task = await held_for_ever(look, s3_backend.save("k", b"x" * 400), cancel=False)
    assert task.cancelled()
    assert (await s3_backend.get_usage()).used == 400


@pytest.mark.usefixtures("short_grace")
async def test_delete_cancelled_while_the_store_does_not_answer_its_look_up_keeps_counting(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_backend.set_quota("", 1000)
    await s3_backend.save("k", b"x" * 400)
    look = LookUp(s3_backend, monkeypatch, "k")
    answer_lost(s3_backend, monkeypatch, "_delete", look)
    task = await held_for_ever(look, s3_backend.delete("k"), cancel=True)
    assert task.cancelled()
    assert (await s3_backend.get_usage()).used == 400  # unknown: still counted
