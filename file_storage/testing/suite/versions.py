"""Versioning: set_versioning, list_versions, version_id reads, restore_version, purge_versions."""

from __future__ import annotations

import asyncio

import pytest

from file_storage import (
    ObjectNotFoundError,
    ObjectVersion,
    StorageBackend,
    StorageQuotaExceededError,
    StorageUnavailableError,
)

# an id shaped like S3's that no store gave
SHAPED_ID = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"


async def _ids(backend: StorageBackend, key: str) -> list[str]:
    return [v.version_id for v in await backend.list_versions(key)]


async def test_unversioned_object_has_one_null_version(backend: StorageBackend) -> None:
    await backend.save("a.txt", b"hello")
    [version] = await backend.list_versions("a.txt")
    assert isinstance(version, ObjectVersion)
    assert (version.version_id, version.size, version.is_latest) == ("null", 5, True)
    assert await backend.load("a.txt", version_id="null") == b"hello"


@pytest.mark.backend_needs("versions")
async def test_list_versions_of_missing_key_is_empty(versioned: StorageBackend) -> None:
    assert await versioned.list_versions("never/written.txt") == []


@pytest.mark.backend_needs("versions")
async def test_overwrite_keeps_the_prior_version(versioned: StorageBackend) -> None:
    await versioned.save("doc.txt", b"one")
    await versioned.save("doc.txt", b"second")
    newest, oldest = await versioned.list_versions("doc.txt")
    assert (newest.is_latest, newest.size) == (True, 6)
    assert (oldest.is_latest, oldest.size) == (False, 3)
    assert newest.version_id != oldest.version_id
    assert newest.last_modified >= oldest.last_modified
    assert await versioned.load("doc.txt") == b"second"
    assert await versioned.load("doc.txt", version_id=oldest.version_id) == b"one"
    assert await versioned.load("doc.txt", version_id=newest.version_id) == b"second"


@pytest.mark.backend_needs("versions")
async def test_versions_are_listed_newest_first(versioned: StorageBackend) -> None:
    for body in (b"1", b"22", b"333"):
        await versioned.save("n.txt", body)
    versions = await versioned.list_versions("n.txt")
    assert [v.size for v in versions] == [3, 2, 1]
    assert [v.is_latest for v in versions] == [True, False, False]


@pytest.mark.backend_needs("versions")
async def test_stat_of_a_version_describes_that_version(versioned: StorageBackend) -> None:
    await versioned.save("s.txt", b"old", content_type="text/csv", metadata={"rev": "1"})
    await versioned.save("s.txt", b"newer", metadata={"rev": "2"})
    old = (await versioned.list_versions("s.txt"))[1]
    info = await versioned.stat("s.txt", version_id=old.version_id)
    assert (info.key, info.size, info.content_type) == ("s.txt", 3, "text/csv")
    assert info.metadata == {"rev": "1"}
    assert (await versioned.stat("s.txt")).metadata == {"rev": "2"}


@pytest.mark.backend_needs("versions")
async def test_stream_reads_a_range_of_a_version(versioned: StorageBackend) -> None:
    await versioned.save("r.bin", b"0123456789")
    await versioned.save("r.bin", b"abcdefghij")
    old = (await versioned.list_versions("r.bin"))[1].version_id
    chunks = versioned.stream("r.bin", start=2, end=7, chunk_size=2, version_id=old)
    parts = [c async for c in chunks]
    assert b"".join(parts) == b"23456"
    assert all(len(p) <= 2 for p in parts)
    tail = versioned.stream("r.bin", start=-3, version_id=old)
    assert b"".join([c async for c in tail]) == b"789"


async def test_unknown_version_of_an_unversioned_object_raises_object_not_found(
    backend: StorageBackend,
) -> None:
    # found by the differential test (tests/parity): S3 answers a HEAD of an id it never
    # gave with a bare 400 when the key has a "null" version, which S3 through obstore
    # raised from stat as a plain StorageError
    await backend.save("a.txt", b"hello")
    for version_id in ("no-such-version", SHAPED_ID):
        with pytest.raises(ObjectNotFoundError) as err:
            await backend.stat("a.txt", version_id=version_id)
        assert (err.value.operation, err.value.key) == ("stat", "a.txt")
        with pytest.raises(ObjectNotFoundError) as err:
            await backend.load("a.txt", version_id=version_id)
        assert (err.value.operation, err.value.key) == ("load", "a.txt")


@pytest.mark.backend_needs("versions")
async def test_unknown_version_raises_object_not_found(versioned: StorageBackend) -> None:
    await versioned.save("u.txt", b"x")
    await versioned.save("other.txt", b"y")
    foreign = (await versioned.list_versions("other.txt"))[0].version_id
    for version_id in (foreign, "no-such-version", SHAPED_ID):
        with pytest.raises(ObjectNotFoundError) as err:
            await versioned.load("u.txt", version_id=version_id)
        assert (err.value.operation, err.value.key) == ("load", "u.txt")
        with pytest.raises(ObjectNotFoundError) as err:
            await versioned.stat("u.txt", version_id=version_id)
        assert (err.value.operation, err.value.key) == ("stat", "u.txt")
        with pytest.raises(ObjectNotFoundError) as err:
            _ = [c async for c in versioned.stream("u.txt", version_id=version_id)]
        assert (err.value.operation, err.value.key) == ("stream", "u.txt")


@pytest.mark.backend_needs("versions")
async def test_version_id_must_be_a_non_empty_str(versioned: StorageBackend) -> None:
    with pytest.raises(TypeError):
        await versioned.load("a.txt", version_id="")
    with pytest.raises(TypeError):
        versioned.stream("a.txt", version_id=3)  # type: ignore[arg-type]


@pytest.mark.backend_needs("versions")
async def test_delete_leaves_prior_versions_restorable(versioned: StorageBackend) -> None:
    await versioned.save("keep/me.txt", b"precious", metadata={"owner": "ann"})
    await versioned.delete("keep/me.txt")
    assert not await versioned.exists("keep/me.txt")
    with pytest.raises(ObjectNotFoundError):
        await versioned.load("keep/me.txt")
    [old] = await versioned.list_versions("keep/me.txt")
    assert (old.is_latest, old.size) == (False, 8)
    assert await versioned.restore_version("keep/me.txt", old.version_id) == "keep/me.txt"
    assert await versioned.load("keep/me.txt") == b"precious"
    assert (await versioned.stat("keep/me.txt")).metadata == {"owner": "ann"}
    versions = await versioned.list_versions("keep/me.txt")
    assert len(versions) == 2
    assert versions[0].is_latest
    assert versions[1].version_id == old.version_id


@pytest.mark.backend_needs("versions")
async def test_restore_after_overwrite_makes_a_new_latest(versioned: StorageBackend) -> None:
    await versioned.save("r.json", b'{"v": 1}', content_type="application/json")
    await versioned.save("r.json", b"broken", content_type="text/plain")
    before = await _ids(versioned, "r.json")
    await versioned.restore_version("r.json", before[1])
    assert await versioned.load("r.json") == b'{"v": 1}'
    assert (await versioned.stat("r.json")).content_type == "application/json"
    after = await versioned.list_versions("r.json")
    assert len(after) == 3
    assert after[0].is_latest
    assert after[0].version_id not in before
    assert [v.version_id for v in after[1:]] == before  # nothing was rewritten


@pytest.mark.backend_needs("versions")
async def test_restore_unknown_version_raises_and_writes_nothing(
    versioned: StorageBackend,
) -> None:
    await versioned.save("x.txt", b"x")
    with pytest.raises(ObjectNotFoundError) as err:
        await versioned.restore_version("x.txt", "no-such-version")
    assert (err.value.operation, err.value.key) == ("restore_version", "x.txt")
    assert len(await versioned.list_versions("x.txt")) == 1


@pytest.mark.backend_needs("versions")
async def test_purge_keep_1_keeps_only_the_latest(versioned: StorageBackend) -> None:
    for body in (b"a", b"bb", b"ccc"):
        await versioned.save("p.txt", body)
    latest = (await versioned.list_versions("p.txt"))[0]
    assert await versioned.purge_versions("p.txt") == 2
    assert await versioned.list_versions("p.txt") == [latest]
    assert await versioned.load("p.txt") == b"ccc"
    assert await versioned.purge_versions("p.txt") == 0


@pytest.mark.backend_needs("versions")
async def test_purge_keep_2_keeps_the_two_newest(versioned: StorageBackend) -> None:
    for body in (b"a", b"bb", b"ccc", b"dddd"):
        await versioned.save("p.txt", body)
    assert await versioned.purge_versions("p.txt", keep=2) == 2
    versions = await versioned.list_versions("p.txt")
    assert [v.size for v in versions] == [4, 3]
    assert await versioned.load("p.txt", version_id=versions[1].version_id) == b"ccc"


@pytest.mark.backend_needs("versions")
async def test_purge_after_delete_keeps_the_newest_prior_version(
    versioned: StorageBackend,
) -> None:
    await versioned.save("d.txt", b"v1")
    await versioned.save("d.txt", b"v22")
    await versioned.delete("d.txt")
    assert await versioned.purge_versions("d.txt", keep=1) == 1
    [left] = await versioned.list_versions("d.txt")
    assert (left.size, left.is_latest) == (3, False)
    assert not await versioned.exists("d.txt")
    await versioned.restore_version("d.txt", left.version_id)
    assert await versioned.load("d.txt") == b"v22"


@pytest.mark.backend_needs("versions")
async def test_purge_keep_0_erases_the_key_and_its_history(versioned: StorageBackend) -> None:
    await versioned.save("gone.txt", b"1")
    await versioned.save("gone.txt", b"2")
    assert await versioned.purge_versions("gone.txt", keep=0) == 2
    assert await versioned.list_versions("gone.txt") == []
    assert not await versioned.exists("gone.txt")


@pytest.mark.backend_needs("versions", "suspended_versioning", "exact_version_purge")
async def test_purge_keep_1_never_purges_a_write_landing_while_it_runs(
    versioned: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await versioned.set_versioning(False)
    await versioned.save("k.txt", b"null")  # the "null" version
    await versioned.set_versioning(True)
    await versioned.save("k.txt", b"kept")  # an id; "null" is a prior version now
    listing = versioned._list_versions
    writes: list[asyncio.Task[None]] = []

    async def write() -> None:
        # another task suspends versioning and writes: a new "null" version, the latest
        await versioned.set_versioning(False)
        await versioned.save("k.txt", b"written after the listing")

    async def then_a_write(key: str) -> list[ObjectVersion]:
        # the hook: a write lands between the purge's listing and its deletes (as far as
        # it can: a ledger that holds the key through the purge makes it wait for it)
        out = await listing(key)
        monkeypatch.undo()
        writes.append(asyncio.ensure_future(write()))
        # bounded loop passes, no clock: enough for a backend whose writes run in
        # threads to land (each pass lets the loop take their results)
        for _ in range(20_000):
            if writes[0].done():
                break
            await asyncio.sleep(0)
        return out

    monkeypatch.setattr(versioned, "_list_versions", then_a_write)
    await versioned.purge_versions("k.txt", keep=1)  # purges the listed "null" version
    await writes[0]
    assert await versioned.load("k.txt") == b"written after the listing"
    [latest, *_] = await versioned.list_versions("k.txt")
    assert (latest.version_id, latest.size, latest.is_latest) == ("null", 25, True)


@pytest.mark.backend_needs("versions")
async def test_purge_rejects_a_negative_keep(versioned: StorageBackend) -> None:
    with pytest.raises(ValueError, match="keep"):
        await versioned.purge_versions("a.txt", keep=-1)


@pytest.mark.backend_needs("versions")
async def test_listings_hide_prior_versions(versioned: StorageBackend) -> None:
    await versioned.save("f/a.txt", b"1")
    await versioned.save("f/a.txt", b"22")
    await versioned.save("f/b.txt", b"3")
    await versioned.delete("f/b.txt")
    assert await versioned.list_files() == ["f/a.txt"]
    assert [i.key async for i in versioned.iter_files("f")] == ["f/a.txt"]
    assert await versioned.list_dirs() == ["f"]
    assert await versioned.get_total_size() == 2


@pytest.mark.backend_needs("versions")
async def test_quota_counts_prior_versions(versioned: StorageBackend) -> None:
    versioned.set_quota("", 25)
    await versioned.save("q.bin", b"x" * 10)
    await versioned.save("q.bin", b"y" * 10)  # the first 10 bytes stay stored
    assert (await versioned.get_usage()).used == 20
    with pytest.raises(StorageQuotaExceededError) as err:
        await versioned.save("q.bin", b"z" * 10)  # would be 30 bytes stored
    assert (err.value.used, err.value.limit) == (20, 25)
    await versioned.delete("q.bin")  # a delete frees nothing either
    assert (await versioned.get_usage()).used == 20
    await versioned.purge_versions("q.bin", keep=1)
    assert (await versioned.get_usage()).used == 10
    await versioned.save("q.bin", b"z" * 10)
    assert (await versioned.get_usage()).used == 20


@pytest.mark.backend_needs("versions")
async def test_prefix_quota_scan_counts_every_version(versioned: StorageBackend) -> None:
    await versioned.save("docs/a.txt", b"a" * 10)
    await versioned.save("docs/a.txt", b"b" * 10)
    await versioned.save("docs/gone.txt", b"c" * 5)
    await versioned.delete("docs/gone.txt")
    await versioned.save("other/o.txt", b"o" * 100)
    versioned.set_quota("docs", 30)  # learned by one scan: objects and their versions
    assert (await versioned.get_usage("docs")).used == 25
    with pytest.raises(StorageQuotaExceededError):
        await versioned.save("docs/b.txt", b"d" * 6)
    await versioned.purge_versions("docs/gone.txt", keep=0)
    await versioned.save("docs/b.txt", b"d" * 6)
    await versioned.refresh_usage("docs")
    assert (await versioned.get_usage("docs")).used == 26


@pytest.mark.backend_needs("versions")
async def test_copy_and_move_keep_what_they_replace(versioned: StorageBackend) -> None:
    await versioned.save("src.txt", b"source")
    await versioned.save("dst.txt", b"old dst")
    await versioned.copy("src.txt", "dst.txt")
    assert [v.size for v in await versioned.list_versions("dst.txt")] == [6, 7]
    await versioned.move("src.txt", "moved.txt")
    [src] = await versioned.list_versions("src.txt")  # the move's delete kept it
    assert not src.is_latest
    assert await versioned.load("src.txt", version_id=src.version_id) == b"source"


@pytest.mark.backend_needs("versions")
async def test_copy_and_move_carry_only_the_latest_version(versioned: StorageBackend) -> None:
    # as on S3: the destination gets one new version, the source keeps its history
    await versioned.save("src.txt", b"first")
    await versioned.save("src.txt", b"second")
    await versioned.copy("src.txt", "copied.txt")
    [copied] = await versioned.list_versions("copied.txt")
    assert (copied.size, copied.is_latest) == (6, True)
    assert [v.size for v in await versioned.list_versions("src.txt")] == [6, 5]
    await versioned.move("src.txt", "moved.txt")
    [moved] = await versioned.list_versions("moved.txt")
    assert (moved.size, moved.is_latest) == (6, True)
    left = await versioned.list_versions("src.txt")
    assert [(v.size, v.is_latest) for v in left] == [(6, False), (5, False)]
    assert await versioned.load("src.txt", version_id=left[1].version_id) == b"first"


@pytest.mark.backend_needs("versions")
@pytest.mark.backend_needs("suspended_versioning")
async def test_suspended_versioning_keeps_versions_and_replaces_null(
    versioned: StorageBackend,
) -> None:
    await versioned.save("s.txt", b"v1")
    await versioned.save("s.txt", b"v2")
    kept = await _ids(versioned, "s.txt")
    await versioned.set_versioning(False)
    await versioned.save("s.txt", b"v3")
    assert await _ids(versioned, "s.txt") == ["null", *kept]
    await versioned.save("s.txt", b"v4")  # replaces the "null" version
    versions = await versioned.list_versions("s.txt")
    assert [v.version_id for v in versions] == ["null", *kept]
    assert [v.size for v in versions] == [2, 2, 2]
    assert await versioned.load("s.txt", version_id="null") == b"v4"
    assert await versioned.load("s.txt", version_id=kept[1]) == b"v1"


async def test_never_versioned_overwrite_replaces(backend: StorageBackend) -> None:
    await backend.set_versioning(False)  # nothing to suspend: stays unversioned
    await backend.save("plain.txt", b"1")
    await backend.save("plain.txt", b"2")
    assert await _ids(backend, "plain.txt") == ["null"]
    await backend.delete("plain.txt")
    assert await backend.list_versions("plain.txt") == []


@pytest.mark.backend_needs("versions")
async def test_concurrent_overwrites_under_quota_count_every_version(
    versioned: StorageBackend,
) -> None:
    versioned.set_quota("", 45)
    results = await asyncio.gather(
        *(versioned.save("hot.bin", bytes([i]) * 10) for i in range(6)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, StorageQuotaExceededError)]
    assert len(refused) == 2  # 4 x 10 bytes fit under 45, each overwrite keeping the last
    assert len(await versioned.list_versions("hot.bin")) == 4
    assert (await versioned.get_usage()).used == 40
    await versioned.refresh_usage()
    assert (await versioned.get_usage()).used == 40


@pytest.mark.backend_needs("versions")
@pytest.mark.backend_needs("suspended_versioning")
async def test_suspended_versioning_counts_the_null_version_it_replaces(
    versioned: StorageBackend,
) -> None:
    async def used() -> int:
        return (await versioned.get_usage()).used

    versioned.set_quota("", 1000)
    await versioned.save("s", b"x" * 10)  # a version of its own: kept from now on
    await versioned.set_versioning(False)
    await versioned.save("s", b"y" * 7)
    assert await used() == 17
    await versioned.save("s", b"z" * 5)  # replaces the "null" version
    assert await used() == 15
    await versioned.copy("s", "c")
    await versioned.copy("s", "c")
    assert await used() == 20
    await versioned.move("s", "c")  # c's null replaced; s's null replaced by a marker
    assert await used() == 15
    await versioned.delete("c")
    assert await used() == 10
    vs = await versioned.list_versions("s")
    await versioned.restore_version("s", vs[-1].version_id)
    await versioned.restore_version("s", vs[-1].version_id)
    assert await used() == 20
    await versioned.refresh_usage()
    assert await used() == 20


@pytest.mark.backend_needs("versions")
async def test_moved_back_object_keeps_its_prior_version(versioned: StorageBackend) -> None:
    versioned.set_quota("", 1000)
    await versioned.save("b", b"b" * 36)
    await versioned.move("b", "c")
    await versioned.move("c", "b")  # renamed, then renamed back
    versions = await versioned.list_versions("b")
    assert [(v.size, v.is_latest) for v in versions] == [(36, True), (36, False)]
    assert (await versioned.get_usage()).used == 108  # b, its prior version, c's prior one
    assert await versioned.purge_versions("b") == 1
    assert [v.is_latest for v in await versioned.list_versions("b")] == [True]
    assert (await versioned.get_usage()).used == 72
    await versioned.refresh_usage()
    assert (await versioned.get_usage()).used == 72


@pytest.mark.backend_needs("versions")
async def test_set_versioning_failing_after_the_store_switched_counts_what_it_keeps(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set_quota("", 1000)
    await backend.save("s.bin", b"x" * 100)
    assert (await backend.get_usage()).used == 100
    switch = backend._set_versioning

    async def switched_then_lost(enabled: bool) -> None:  # a timeout after it applied
        await switch(enabled)
        raise StorageUnavailableError("the answer was lost")

    monkeypatch.setattr(backend, "_set_versioning", switched_then_lost)
    with pytest.raises(StorageUnavailableError):
        await backend.set_versioning(True)
    monkeypatch.undo()
    await backend.save("s.bin", b"y" * 50)  # the store keeps the 100 bytes
    stored = sum(v.size for v in await backend.list_versions("s.bin"))
    assert stored == 150
    assert (await backend.get_usage()).used == 150


@pytest.mark.backend_needs("versions")
async def test_usage_after_refresh_is_the_sum_of_listed_versions(
    versioned: StorageBackend,
) -> None:
    versioned.set_quota("q", 10**6)
    keys = ("q/a", "q/b", "q/c")
    for size in (10, 20, 30):
        await versioned.save("q/a", b"a" * size)  # overwritten: each version stays
    await versioned.move("q/a", "q/b")
    await versioned.move("q/b", "q/a")  # moved away and back onto its key
    await versioned.move("q/a", "q/c")
    await versioned.save("q/a", b"n" * 5)
    await versioned.delete("q/c")
    await versioned.refresh_usage("q")
    listed = 0
    for key in keys:
        listed += sum(v.size for v in await versioned.list_versions(key))
    assert (await versioned.get_usage("q")).used == listed
