"""The ``created`` event of a copy, move or restore names the object that write stored,
not another writer's landing at the key before the event is made."""

from __future__ import annotations

from typing import Any

import pytest

from file_storage import ObjectEvent, StorageBackend

RIVAL = b"a rival's object"  # not 3 bytes long: its size is not the copy's either


def recorder(backend: StorageBackend) -> list[ObjectEvent]:
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    return seen


def then_a_rival(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, hook: str, key: str
) -> list[str | None]:
    """Make ``hook`` let another writer's object land at ``key`` right after it (before
    the event is made); the returned list gets the ETag the hook answered."""
    real = getattr(backend, hook)
    real_save = backend._save
    answered: list[str | None] = []

    async def rivalled(*args: Any) -> str | None:
        etag: str | None = await real(*args)
        answered.append(etag)
        await real_save(key, RIVAL, "text/plain", {})
        return etag

    monkeypatch.setattr(backend, hook, rivalled)
    return answered


async def check_not_the_rivals(
    backend: StorageBackend, seen: list[ObjectEvent], key: str, answered: list[str | None]
) -> None:
    rival = (await backend.stat(key)).etag
    [event] = [event for event in seen if event.type == "created"]
    assert (event.type, event.key) == ("created", key)
    assert event.etag is not None
    assert event.etag != rival
    assert [event.etag] == answered
    assert event.size in (3, None)  # the copy's size, or unknown: never the rival's


@pytest.mark.backend_needs("write_etags", "copy_etags")
@pytest.mark.parametrize("quota", [None, 1000], ids=["no-quota", "quota"])
async def test_copy_event_carries_the_copys_etag_not_a_later_writers(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, quota: int | None
) -> None:
    backend.set_quota("", quota)
    await backend.save("a.txt", b"abc")
    seen = recorder(backend)
    answered = then_a_rival(backend, monkeypatch, "_copy", "b.txt")
    await backend.copy("a.txt", "b.txt")
    monkeypatch.undo()
    await check_not_the_rivals(backend, seen, "b.txt", answered)


@pytest.mark.backend_needs("write_etags", "copy_etags")
@pytest.mark.parametrize("quota", [None, 1000], ids=["no-quota", "quota"])
async def test_move_event_carries_the_moves_etag_not_a_later_writers(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, quota: int | None
) -> None:
    backend.set_quota("", quota)
    await backend.save("in/a.txt", b"abc")
    seen = recorder(backend)
    answered = then_a_rival(backend, monkeypatch, "_move", "done/a.txt")
    await backend.move("in/a.txt", "done/a.txt")
    monkeypatch.undo()
    await check_not_the_rivals(backend, seen, "done/a.txt", answered)
    assert seen[-1] == ObjectEvent("deleted", "in/a.txt")


@pytest.mark.backend_needs("versions", "write_etags", "copy_etags")
@pytest.mark.parametrize("quota", [None, 1000], ids=["no-quota", "quota"])
async def test_restore_version_event_carries_its_etag_not_a_later_writers(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, quota: int | None
) -> None:
    await backend.set_versioning(True)
    backend.set_quota("", quota)
    await backend.save("a.txt", b"one")
    first = (await backend.list_versions("a.txt"))[0].version_id
    await backend.save("a.txt", b"second")
    seen = recorder(backend)
    answered = then_a_rival(backend, monkeypatch, "_restore_version", "a.txt")
    await backend.restore_version("a.txt", first)
    monkeypatch.undo()
    await check_not_the_rivals(backend, seen, "a.txt", answered)
