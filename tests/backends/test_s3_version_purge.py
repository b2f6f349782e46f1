"""S3 only: purge_versions while another writer writes or deletes the key with versioning
suspended, when the new "null" version (or delete marker) takes the id of the "null"
version the purge listed to delete. A hook runs the other writer between the purge's
listing and its deletes (the window a slow listing of many versions leaves open)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from file_storage import ObjectVersion, StorageBackend

# moto drops every version of a key written while versioning is suspended (tests/s3util.py)
pytestmark = [pytest.mark.s3, pytest.mark.s3_needs("suspended_versioning")]


@pytest.fixture(params=["s3", "s3_obstore"])
def backend(request: pytest.FixtureRequest) -> StorageBackend:
    backend: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return backend


async def _null_then_kept(backend: StorageBackend) -> None:
    """``k.txt``: a prior ``"null"`` version (b"null") under the latest with an id."""
    await backend.set_versioning(True)
    await backend.set_versioning(False)
    await backend.save("k.txt", b"null")
    await backend.set_versioning(True)
    await backend.save("k.txt", b"kept")


def _after_the_listing(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch, other: Callable[[], Awaitable[None]]
) -> None:
    listing = backend._list_versions

    async def then_the_other_writer(key: str) -> list[ObjectVersion]:
        out = await listing(key)
        monkeypatch.undo()
        await other()
        return out

    monkeypatch.setattr(backend, "_list_versions", then_the_other_writer)


async def test_a_suspended_write_landing_after_the_listing_is_never_purged(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _null_then_kept(backend)

    async def write() -> None:
        await backend.set_versioning(False)
        await backend.save("k.txt", b"written after the listing")  # the new "null"

    _after_the_listing(backend, monkeypatch, write)
    await backend.purge_versions("k.txt", keep=1)
    assert await backend.load("k.txt") == b"written after the listing"
    [latest, *_] = await backend.list_versions("k.txt")
    assert (latest.version_id, latest.size, latest.is_latest) == ("null", 25, True)


async def test_a_suspended_delete_landing_after_the_listing_stays_a_delete(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _null_then_kept(backend)

    async def delete() -> None:
        await backend.set_versioning(False)
        await backend.delete("k.txt")  # a "null" delete marker replaces the "null" version

    _after_the_listing(backend, monkeypatch, delete)
    await backend.purge_versions("k.txt", keep=1)
    assert not await backend.exists("k.txt")  # the delete is not undone by the purge
    assert [v.size for v in await backend.list_versions("k.txt")] == [4]


async def test_the_listed_null_version_is_still_purged(backend: StorageBackend) -> None:
    await _null_then_kept(backend)
    await backend.set_versioning(False)  # as the writers above leave it
    assert await backend.purge_versions("k.txt", keep=1) == 1
    assert [(v.version_id == "null", v.size) for v in await backend.list_versions("k.txt")] == [
        (False, 4)
    ]


async def test_a_suspended_write_landing_after_the_listing_then_overwritten_stays(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _null_then_kept(backend)

    async def writes() -> None:
        await backend.set_versioning(False)
        await backend.save("k.txt", b"written after the listing")  # the new "null"
        await backend.set_versioning(True)
        await backend.save("k.txt", b"newest")  # the new "null" is a prior version now

    _after_the_listing(backend, monkeypatch, writes)
    await backend.purge_versions("k.txt", keep=1)
    listed = [(v.version_id == "null", v.size) for v in await backend.list_versions("k.txt")]
    assert listed == [(False, 6), (True, 25), (False, 4)]
