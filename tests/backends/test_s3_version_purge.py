"""S3 only: purge_versions while another writer writes or deletes the key with versioning
suspended, when the new "null" version (or delete marker) takes the id of the "null"
version the purge listed to delete. The suite's hook (``_purge_hooks``) runs the other
writer between the purge's listing and its deletes (the window a slow listing of many
versions leaves open)."""

from __future__ import annotations

import pytest

from file_storage import StorageBackend
from file_storage.backends.s3 import _versions as s3_versions
from file_storage.testing.suite._purge_hooks import (
    delete_suspended,
    null_then_kept,
    purge_racing,
    write_suspended,
    write_suspended_then_versioned,
)

pytestmark = pytest.mark.s3
# moto drops every version of a key written while versioning is suspended (tests/s3util.py)
suspended = pytest.mark.s3_needs("suspended_versioning")
# S3 holds no key through a purge: the other writer is waited for to its end after the
# listing, before the purge goes on
WHOLE = None


@pytest.fixture(params=["s3", "s3_obstore"])
def backend(request: pytest.FixtureRequest) -> StorageBackend:
    backend: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return backend


@suspended
async def test_a_suspended_write_landing_after_the_listing_is_never_purged(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await null_then_kept(backend)

    await purge_racing(backend, monkeypatch, write_suspended, passes=WHOLE)
    assert await backend.load("k.txt") == b"written after the listing"
    [latest, *_] = await backend.list_versions("k.txt")
    assert (latest.version_id, latest.size, latest.is_latest) == ("null", 25, True)


@suspended
async def test_a_suspended_delete_landing_after_the_listing_stays_a_delete(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await null_then_kept(backend)

    await purge_racing(backend, monkeypatch, delete_suspended, passes=WHOLE)
    assert not await backend.exists("k.txt")  # the delete is not undone by the purge
    assert [v.size for v in await backend.list_versions("k.txt")] == [4]


@suspended
async def test_the_listed_null_version_is_still_purged(backend: StorageBackend) -> None:
    await null_then_kept(backend)
    await backend.set_versioning(False)  # as the writers above leave it
    assert await backend.purge_versions("k.txt", keep=1) == 1
    assert [(v.version_id == "null", v.size) for v in await backend.list_versions("k.txt")] == [
        (False, 4)
    ]


@suspended
async def test_a_suspended_write_landing_after_the_listing_then_overwritten_stays(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await null_then_kept(backend)

    await purge_racing(backend, monkeypatch, write_suspended_then_versioned, passes=WHOLE)
    listed = [(v.version_id == "null", v.size) for v in await backend.list_versions("k.txt")]
    assert listed == [(False, 6), (True, 25), (False, 4)]


async def test_list_versions_stops_at_the_end_of_the_key_among_longer_keys(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 lists by prefix: the versions of "logs" come first, then those of every key
    # "logs" is a prefix of ("logs/...", "logs.1"), page after page
    monkeypatch.setattr(s3_versions, "LIST_PAGE", 2)
    await s3_backend.set_versioning(True)
    for n in range(3):
        await s3_backend.save("logs", b"x" * (n + 1))
    for n in range(6):
        await s3_backend.save(f"logs/{n}", b"y")
        await s3_backend.save(f"logs.{n}", b"z")
    asked: list[object] = []
    client = await s3_backend._client()  # type: ignore[attr-defined]
    client.meta.events.register(
        "before-call.s3.ListObjectVersions", lambda **kwargs: asked.append(kwargs)
    )
    assert [v.size for v in await s3_backend.list_versions("logs")] == [3, 2, 1]
    assert len(asked) == 2  # the key's own pages (3 versions, 2 a page), not the 12 after


async def test_purge_keep_0_over_small_pages_erases_the_key_and_leaves_longer_keys(
    s3_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_versions, "LIST_PAGE", 2)
    await s3_backend.set_versioning(True)
    for n in range(3):
        await s3_backend.save("logs", b"x" * (n + 1))
        await s3_backend.delete("logs")  # a delete marker each: 6 items over 3 pages
        await s3_backend.save(f"logs/{n}", b"y")
    assert await s3_backend.purge_versions("logs", keep=0) == 3
    assert await s3_backend.list_versions("logs") == []
    assert not await s3_backend.exists("logs")
    assert await s3_backend.list_files("logs/") == ["logs/0", "logs/1", "logs/2"]
    assert [v.size for v in await s3_backend.list_versions("logs/1")] == [1]
