"""delete, delete_many, delete_prefix: idempotent and never touching neighbours."""

from __future__ import annotations

import pytest

from file_storage import ObjectEvent, StorageBackend, StoragePermissionError


async def test_delete_removes_object(backend: StorageBackend) -> None:
    await backend.save("a/b.txt", b"x")
    await backend.delete("a/b.txt")
    assert not await backend.exists("a/b.txt")
    assert await backend.list_files() == []


async def test_delete_missing_is_not_an_error(backend: StorageBackend) -> None:
    await backend.delete("never/was.txt")
    await backend.delete("never/was.txt")


async def test_delete_of_folder_deletes_nothing(backend: StorageBackend) -> None:
    await backend.save("d/inner.txt", b"x")
    await backend.delete("d")
    assert await backend.list_files() == ["d/inner.txt"]


async def test_delete_many_removes_listed_keys_only(backend: StorageBackend) -> None:
    for key in ("a", "b", "c", "d/e"):
        await backend.save(key, b"x")
    await backend.delete_many(["a", "d/e", "missing", "a"])
    assert await backend.list_files() == ["b", "c"]


async def test_delete_many_empty_is_a_no_op(backend: StorageBackend) -> None:
    await backend.delete_many([])


async def test_delete_prefix_counts_and_spares_neighbours(backend: StorageBackend) -> None:
    for key in ("users/u1/a", "users/u1/s/b", "users/u10/c", "users/u1-x/d", "users/u1.txt"):
        await backend.save(key, b"x")
    assert await backend.delete_prefix("users/u1") == 2
    assert await backend.list_files() == ["users/u1-x/d", "users/u1.txt", "users/u10/c"]


async def test_delete_prefix_missing_returns_zero(backend: StorageBackend) -> None:
    assert await backend.delete_prefix("nothing") == 0


async def test_delete_prefix_everything(backend: StorageBackend) -> None:
    for key in ("a", "b/c", "d/e/f"):
        await backend.save(key, b"x", metadata={"k": "v"})
    assert await backend.delete_prefix("") == 3
    assert await backend.list_files() == []
    await backend.save("a", b"fresh")
    assert dict((await backend.stat("a")).metadata) == {}


@pytest.mark.parametrize("watched_by", ["quota", "subscriber"])
async def test_delete_prefix_counts_and_announces_only_what_it_deleted(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, watched_by: str
) -> None:
    # another caller deletes a listed key between delete_prefix's listing and its delete:
    # that key is neither counted nor announced a second time
    for key in ("p/a", "p/b", "p/c"):
        await backend.save(key, b"x")
    if watched_by == "quota":
        backend.set_quota("", 1000)
    seen: list[ObjectEvent] = []
    if watched_by == "subscriber":
        backend.subscribe(seen.append)
    real = backend._list_files

    async def listed_then_raced(prefix: str) -> list[str]:
        keys = await real(prefix)
        monkeypatch.undo()
        await backend.delete("p/b")
        return keys

    monkeypatch.setattr(backend, "_list_files", listed_then_raced)
    assert await backend.delete_prefix("p") == 2
    assert await backend.list_files() == []
    if watched_by == "subscriber":
        assert seen == [ObjectEvent("deleted", k) for k in ("p/b", "p/a", "p/c")]
    else:
        assert (await backend.get_usage()).used == 0


async def test_delete_many_failing_part_way_frees_what_it_deleted(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the store deleted some keys, then refused the rest (a policy denying one folder,
    # a disk error on one file): the quota must stop counting exactly those deleted
    backend.set_quota("", 1000)
    keys = ["d/a", "d/b", "d/c", "d/d"]
    for key in keys:
        await backend.save(key, b"x" * 200)
    real = backend._delete_many

    async def half_denied(batch: list[str]) -> None:
        await real(batch[:2])
        raise StoragePermissionError("access denied")

    monkeypatch.setattr(backend, "_delete_many", half_denied)
    with pytest.raises(StoragePermissionError):
        await backend.delete_many(keys)
    monkeypatch.undo()
    assert await backend.list_files("d") == ["d/c", "d/d"]
    assert (await backend.get_usage()).used == 400
    await backend.save("more", b"y" * 600)  # fits: what was deleted is free again


async def test_delete_many_refuses_a_single_str(backend: StorageBackend) -> None:
    # a str is an iterable of one-character keys: "ab" would delete "a" and "b"
    await backend.save("a", b"1")
    await backend.save("b", b"2")
    with pytest.raises(TypeError):
        await backend.delete_many("ab")
    assert await backend.list_files() == ["a", "b"]
