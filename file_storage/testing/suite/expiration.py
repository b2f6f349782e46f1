"""Expiry rules: set_expiration, get_expiration, and what purge_expired never deletes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from file_storage import InvalidKeyError, ObjectInfo, StorageBackend, StoragePermissionError


async def test_set_expiration_is_read_back_per_folder(backend: StorageBackend) -> None:
    assert await backend.get_expiration() == {}
    await backend.set_expiration("sessions/recordings", 30)
    await backend.set_expiration("temp/", 1)
    assert await backend.get_expiration() == {"sessions/recordings/": 30, "temp/": 1}


async def test_set_expiration_again_replaces_the_rule(backend: StorageBackend) -> None:
    await backend.set_expiration("logs", 7)
    await backend.set_expiration("logs/", 90)
    assert await backend.get_expiration() == {"logs/": 90}


async def test_set_expiration_none_removes_only_that_rule(backend: StorageBackend) -> None:
    await backend.set_expiration("logs", 7)
    await backend.set_expiration("temp", 1)
    await backend.set_expiration("logs", None)
    assert await backend.get_expiration() == {"temp/": 1}
    await backend.set_expiration("never-set", None)  # removing a missing rule is no error
    await backend.set_expiration("temp", None)
    assert await backend.get_expiration() == {}


async def test_concurrent_set_expiration_calls_lose_no_rule(backend: StorageBackend) -> None:
    # each call reads, changes and writes the whole rule set: they must take turns
    prefixes = [f"p{i}" for i in range(12)]
    await asyncio.gather(*(backend.set_expiration(p, 1 + i) for i, p in enumerate(prefixes)))
    assert await backend.get_expiration() == {f"{p}/": 1 + i for i, p in enumerate(prefixes)}


async def test_set_expiration_on_everything(backend: StorageBackend) -> None:
    await backend.set_expiration("", 365)
    assert await backend.get_expiration() == {"": 365}


@pytest.mark.parametrize("days", [0, -1, True, 1.5, "7"])
async def test_set_expiration_rejects_bad_days(backend: StorageBackend, days: object) -> None:
    with pytest.raises(ValueError, match="days"):
        await backend.set_expiration("logs", days)  # type: ignore[arg-type]
    assert await backend.get_expiration() == {}


@pytest.mark.parametrize("prefix", ["/abs", "a//b", "../up", "a\\b"])
async def test_set_expiration_rejects_bad_prefix(backend: StorageBackend, prefix: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        await backend.set_expiration(prefix, 7)
    assert info.value.operation == "set_expiration"
    assert await backend.get_expiration() == {}


async def test_purge_expired_keeps_objects_younger_than_their_rule(
    backend: StorageBackend,
) -> None:
    await backend.set_expiration("temp", 1)
    await backend.save("temp/fresh.txt", b"x")
    await backend.save("keep/other.txt", b"y")
    assert await backend.purge_expired(now=datetime.now(UTC)) == 0
    assert await backend.list_files() == ["keep/other.txt", "temp/fresh.txt"]


async def test_purge_expired_rejects_a_naive_now(backend: StorageBackend) -> None:
    with pytest.raises(ValueError, match="aware"):
        await backend.purge_expired(now=datetime.now())  # naive: the point of the test


async def test_expiry_rules_are_not_objects(backend: StorageBackend) -> None:
    await backend.set_expiration("logs", 7)
    assert await backend.list_files() == []
    assert await backend.list_dirs() == []
    assert await backend.get_total_size() == 0


async def test_purge_expired_keeps_an_object_rewritten_after_the_listing(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # purge deletes what its listing found expired, never a newer object written at that
    # key meanwhile (an application's fresh upload); ``now`` is moved on so that the old
    # object is expired, whatever the clock of the store
    await backend.set_expiration("temp", 1)
    await backend.save("temp/a.txt", b"old")
    await backend.save("temp/b.txt", b"old")
    listing = backend._iter_files
    content = b"old"  # S3 applies its rules itself: its purge lists nothing

    async def then_rewritten(prefix: str) -> AsyncIterator[ObjectInfo]:
        nonlocal content
        async for info in listing(prefix):
            yield info
        content = b"new content"
        await backend.save("temp/a.txt", content)

    monkeypatch.setattr(backend, "_iter_files", then_rewritten)
    deleted = await backend.purge_expired(now=datetime.now(UTC) + timedelta(days=3))
    assert await backend.load("temp/a.txt") == content
    assert deleted == (0 if content == b"old" else 1)  # temp/b.txt


async def test_purge_expired_keeps_an_object_rewritten_with_the_same_bytes(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # some stores' ETag is the content's MD5 (GCS): an upload of the same bytes keeps it,
    # yet it is a new write, whose age starts afresh. The purge must tell it apart from
    # the object it listed, by its time where the ETag is the same (a store answering
    # whole seconds: rewritten until the second has changed, a bounded loop)
    await backend.set_expiration("temp", 1)
    await backend.save("temp/a.txt", b"same")
    listing = backend._iter_files

    async def then_rewritten(prefix: str) -> AsyncIterator[ObjectInfo]:
        found = [info async for info in listing(prefix)]
        for info in found:
            yield info
        if not found:
            return  # S3 applies its rules itself: its purge lists nothing
        listed, deadline = found[0], time.monotonic() + 5
        while True:
            await backend.save("temp/a.txt", b"same")
            now = await backend.stat("temp/a.txt")
            if now.etag != listed.etag or now.last_modified.replace(
                microsecond=0
            ) > listed.last_modified.replace(microsecond=0):
                break
            assert time.monotonic() < deadline, "the store's clock stands still"

    monkeypatch.setattr(backend, "_iter_files", then_rewritten)
    deleted = await backend.purge_expired(now=datetime.now(UTC) + timedelta(days=3))
    monkeypatch.undo()
    assert (deleted, await backend.list_files()) == (0, ["temp/a.txt"])


@pytest.mark.backend_needs("exact_expiry")
async def test_purge_expired_keeps_an_object_rewritten_while_it_is_checked(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rewrite lands at the last moment purge gives a writer: after the listing, and
    # after any look at the key (a stat) before its delete
    await backend.set_expiration("temp", 1)
    await backend.save("temp/a.txt", b"old")
    listing, stat = backend._iter_files, backend._stat
    rewrites = 0

    async def rewrite() -> None:
        nonlocal rewrites
        rewrites += 1
        await backend.save("temp/a.txt", b"new %d" % rewrites)

    async def then_rewritten(prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in listing(prefix):
            yield info
        await rewrite()

    async def stat_then_rewritten(key: str) -> ObjectInfo:
        info = await stat(key)
        if key == "temp/a.txt":
            await rewrite()
        return info

    monkeypatch.setattr(backend, "_iter_files", then_rewritten)
    monkeypatch.setattr(backend, "_stat", stat_then_rewritten)
    await backend.purge_expired(now=datetime.now(UTC) + timedelta(days=3))
    monkeypatch.undo()
    assert await backend.load("temp/a.txt") == (b"new %d" % rewrites if rewrites else b"old")


@pytest.mark.backend_needs("exact_expiry")
async def test_purge_expired_keeps_an_object_rewritten_after_its_last_look(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rewrite lands only after purge's last look at the key (a stat after the
    # listing, where the purge takes one), just before its delete: a delete that is not
    # conditional takes it. A backend comparing and deleting in one step looks at nothing
    await backend.set_expiration("temp", 1)
    await backend.save("temp/a.txt", b"old")
    listing, stat = backend._iter_files, backend._stat
    listed = rewritten = False

    async def then_listed(prefix: str) -> AsyncIterator[ObjectInfo]:
        nonlocal listed
        async for info in listing(prefix):
            yield info
        listed = True

    async def stat_then_rewritten(key: str) -> ObjectInfo:
        nonlocal rewritten
        info = await stat(key)
        if listed and not rewritten and key == "temp/a.txt":
            rewritten = True
            await backend.save("temp/a.txt", b"new")
        return info

    monkeypatch.setattr(backend, "_iter_files", then_listed)
    monkeypatch.setattr(backend, "_stat", stat_then_rewritten)
    deleted = await backend.purge_expired(now=datetime.now(UTC) + timedelta(days=3))
    monkeypatch.undo()
    if rewritten:
        assert (deleted, await backend.load("temp/a.txt")) == (0, b"new")


@pytest.mark.parametrize("days", [None, 30])
async def test_purge_expired_deletes_nothing_by_a_rule_changed_after_the_listing(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, days: int | None
) -> None:
    # the rule is removed (or made longer) once the purge has listed its folder: that
    # set_expiration has returned, so no object may be deleted by the old rule after it
    await backend.set_expiration("temp", 1)
    await backend.save("temp/a.txt", b"x")
    await backend.save("temp/b.txt", b"y")
    listing = backend._iter_files

    async def then_changed(prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in listing(prefix):
            yield info
        await backend.set_expiration("temp", days)

    monkeypatch.setattr(backend, "_iter_files", then_changed)
    assert await backend.purge_expired(now=datetime.now(UTC) + timedelta(days=3)) == 0
    monkeypatch.undo()
    assert await backend.list_files() == ["temp/a.txt", "temp/b.txt"]


async def test_purge_expired_deletes_nothing_more_once_a_concurrent_call_removed_the_rule(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # set_expiration("temp", None) is called while the purge deletes temp/a: it waits for
    # that delete, then the purge goes by the rules without it (temp/b and temp/c stay)
    await backend.set_expiration("temp", 1)
    for key in ("temp/a", "temp/b", "temp/c"):
        await backend.save(key, b"x")
    delete_expired = backend._delete_expired
    calls: list[asyncio.Task[None]] = []

    async def removed_meanwhile(key: str, listed: ObjectInfo) -> bool:
        if not calls:
            waiting = asyncio.Event()

            async def remove() -> None:
                waiting.set()
                await backend.set_expiration("temp", None)

            calls.append(asyncio.create_task(remove()))
            await waiting.wait()  # the call has started, and waits or is done
        return await delete_expired(key, listed)

    monkeypatch.setattr(backend, "_delete_expired", removed_meanwhile)
    deleted = await backend.purge_expired(now=datetime.now(UTC) + timedelta(days=3))
    await asyncio.gather(*calls)
    monkeypatch.undo()
    if calls:  # S3 applies its rules itself: its purge deletes nothing
        assert await backend.get_expiration() == {}
        assert (deleted, await backend.list_files()) == (1, ["temp/b", "temp/c"])


async def test_purge_expired_goes_past_an_object_it_cannot_delete(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one object the store refuses to delete (a policy, a permission) must not keep
    # every object sorting after it from ever expiring: purge goes on, then raises
    await backend.set_expiration("temp", 1)
    for key in ("temp/a", "temp/b", "temp/c"):
        await backend.save(key, b"x")
    listing, delete_expired = backend._iter_files, backend._delete_expired
    listed = False  # S3 applies its rules itself: its purge lists nothing

    def seen(prefix: str) -> AsyncIterator[ObjectInfo]:
        nonlocal listed
        listed = True
        return listing(prefix)

    async def b_refused(key: str, info: ObjectInfo) -> bool:
        if key == "temp/b":
            raise StoragePermissionError("access denied")
        return await delete_expired(key, info)

    monkeypatch.setattr(backend, "_iter_files", seen)
    monkeypatch.setattr(backend, "_delete_expired", b_refused)
    error = None
    try:
        await backend.purge_expired(now=datetime.now(UTC) + timedelta(days=3))
    except StoragePermissionError as exc:
        error = exc
    monkeypatch.undo()
    if not listed:
        assert error is None
        return
    assert error is not None
    assert (error.operation, error.key) == ("purge_expired", "temp/b")
    assert await backend.list_files("temp") == ["temp/b"]


async def test_purge_expired_with_a_rule_of_a_million_days(backend: StorageBackend) -> None:
    # "keep for ever, near enough": the cutoff falls before year 1, where datetime ends;
    # nothing under it expires, and the other rules still apply
    await backend.set_expiration("archive", 1_000_000)
    await backend.set_expiration("temp", 1)
    await backend.save("archive/a.txt", b"x")
    await backend.save("temp/fresh.txt", b"x")
    assert await backend.purge_expired() == 0
    assert await backend.list_files() == ["archive/a.txt", "temp/fresh.txt"]


async def test_purge_expired_applies_each_rule_to_its_folder_only(
    backend: StorageBackend,
) -> None:
    # a rule is a folder: keys that only share its text (temporary/, temp-1) are not under
    # it; nested rules: the shorter wins; the rule of "" covers every other key
    await backend.set_expiration("", 30)
    await backend.set_expiration("temp", 1)
    await backend.set_expiration("temp/sub", 10)
    keys = ["temp/a", "temp/sub/b", "temporary/x", "temp-1", "temp.txt", "tempé/x", "x/temp/y"]
    for key in keys:
        await backend.save(key, b"x")
    now = datetime.now(UTC)
    if await backend.purge_expired(now=now + timedelta(days=2)) == 0:
        assert await backend.list_files() == sorted(keys)  # S3 applies its rules itself
        return
    assert await backend.list_files() == sorted(keys[2:])
    assert await backend.purge_expired(now=now + timedelta(days=31)) == len(keys) - 2
    assert await backend.list_files() == []
