"""The Redis ledger's scripts at their edges: sizes, limits, keys, copies onto themselves.

Each test drives the public API with an edge input and checks what a user sees: the
ledger's usage equals what a fresh listing finds (and, unversioned, the bytes stored), no
quota is passed, and a refused write raises the typed error. A script that fails in Redis
half-way fails the test too (see ``_no_failed_redis_scripts`` in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    ObjectInfo,
    ObjectVersion,
    StorageQuotaExceededError,
)
from tests.quota_redis.ledger import gated_pair, local, pause_listing
from tests.quota_redis.server import RedisServer


async def counted(
    backend: LocalStorageBackend, prefix: str = "", *, versioned: bool = False
) -> int:
    """The ledger's usage under ``prefix``, checked against a fresh listing of the store."""
    used = (await backend.get_usage(prefix)).used
    await backend.refresh_usage(prefix)
    assert (await backend.get_usage(prefix)).used == used, "the ledger drifted from the store"
    if not versioned:
        assert used == await backend.get_total_size(prefix)
    return used


# -- sizes and limits ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 99, 100])
async def test_a_save_up_to_exactly_the_limit_fits_and_one_byte_more_does_not(
    tmp_path: Path, redis_server: RedisServer, namespace: str, size: int
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=100) as backend:
        await backend.save("a", b"x" * size)
        await backend.save("b", b"y" * (100 - size))
        with pytest.raises(StorageQuotaExceededError) as caught:
            await backend.save("c", b"z")
        assert (caught.value.used, caught.value.limit) == (100, 100)
        assert await counted(backend) == 100


async def test_a_limit_of_zero_takes_empty_objects_only(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path / "store", redis_server, namespace, max_size_bytes=0) as backend:
        await backend.save("empty", b"")
        await backend.save("empty", b"")  # an overwrite that needs nothing more
        with pytest.raises(StorageQuotaExceededError):
            await backend.save("one", b"x")
        source = tmp_path / "empty-upload"
        source.write_bytes(b"")
        await backend.upload_file(source, "uploaded")
        await backend.copy("empty", "copied")
        await backend.move("copied", "moved")
        assert await counted(backend) == 0
        assert sorted(await backend.list_files()) == ["empty", "moved", "uploaded"]


@pytest.mark.parametrize(
    "limit", [2**53 - 1, 2**53, 2**53 + 1, 10**17, 2**63 - 1, 2**63, 2**64, 10**30]
)
async def test_a_huge_limit_is_kept_exactly_and_writes_under_it_are_counted(
    tmp_path: Path, redis_server: RedisServer, namespace: str, limit: int
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=limit) as backend:
        await backend.save("a", b"x" * 10)
        await backend.save("a", b"x" * 3)
        await backend.copy("a", "b")
        await backend.delete("a")
        usage = await backend.get_usage()
        assert (usage.used, usage.limit) == (3, limit)
        assert await counted(backend) == 3


@pytest.mark.parametrize("size", [0, 1, 5])
@pytest.mark.parametrize("old", [0, 1, 5])
async def test_an_overwrite_of_any_size_onto_any_size_is_counted_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str, size: int, old: int
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=10) as backend:
        await backend.save("k", b"x" * old)
        await backend.save("k", b"y" * size)
        await backend.save("other", b"z" * (10 - size))  # the rest fits exactly
        assert await counted(backend) == 10


class HugeLocal(LocalStorageBackend):
    """A store whose listing finds one more object of ``huge`` bytes (a bucket of petabytes:
    no test writes so many bytes, the listing is what tells the ledger)."""

    huge = 0

    async def _usage_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in super()._usage_scan(prefix):
            yield info
        if self.huge and "big/".startswith(prefix):
            yield ObjectInfo("big/object", self.huge, datetime.now(UTC))


@pytest.mark.parametrize("huge", [2**53 - 10, 10**16, 10**17 - 1, 10**17, 2**60, 2**62])
async def test_a_listing_of_a_huge_store_is_counted_exactly_and_writes_go_on(
    tmp_path: Path, redis_server: RedisServer, namespace: str, huge: int
) -> None:
    backend = HugeLocal(
        tmp_path,
        max_size_bytes=2**63 - 1,
        quota_redis_url=redis_server.url,
        quota_redis_namespace=namespace,
    )
    backend.huge = huge
    async with backend:
        await backend.save("a", b"x" * 7)
        await backend.save("a", b"x" * 2)
        await backend.delete("a")
        await backend.save("b", b"y" * 3)
        usage = await backend.get_usage()
        assert usage.used == huge + 3


# -- keys and prefixes --------------------------------------------------------------------

ODD_KEYS = [
    "é/ü/名前.txt",
    "with space/a b",
    "%/%d%s%%.x",
    "a.b/c-d/e[1]/f]",
    "^$()/+*?",
    # with "-moved" (below) 1024 bytes, S3's limit: in ASCII, and in UTF-8
    "/".join(["k" * 250] * 4) + "/" + "e" * 14,
    "/".join(["é" * 125] * 4) + "/" + "x" * 14,
    "/".join(["a"] * 509),  # 509 folders deep: as many prefixes looked up
]


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_an_odd_key_is_counted_under_every_quota_that_covers_it(
    tmp_path: Path, redis_server: RedisServer, namespace: str, key: str
) -> None:
    folder = key.rsplit("/", 1)[0] + "/"
    async with local(tmp_path, redis_server, namespace, max_size_bytes=100) as backend:
        backend.set_quota(folder, 10)
        await backend.save(key, b"x" * 10)
        with pytest.raises(StorageQuotaExceededError) as caught:
            await backend.save(key, b"x" * 11)
        assert caught.value.prefix == folder
        await backend.save(key, b"x" * 4)
        assert await counted(backend, folder) == 4
        await backend.copy(key, key + "-copy")
        await backend.move(key + "-copy", key + "-moved")
        assert await counted(backend, folder) == 8
        await backend.delete_many([key, key + "-moved"])
        assert await counted(backend, folder) == 0
        assert await counted(backend) == 0


async def test_sibling_prefixes_that_share_a_beginning_count_apart(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=1000) as backend:
        backend.set_quota("a", 10)
        backend.set_quota("ab", 20)
        backend.set_quota("a/b", 5)  # nested in "a/"
        await backend.save("a/b/x", b"x" * 5)
        await backend.save("ab/x", b"y" * 20)
        await backend.save("a/other", b"z" * 5)
        with pytest.raises(StorageQuotaExceededError) as caught:
            await backend.save("a/c", b"!")
        assert caught.value.prefix == "a/"
        with pytest.raises(StorageQuotaExceededError) as caught:
            await backend.save("a/b/y", b"!")
        assert caught.value.prefix in ("a/", "a/b/")
        with pytest.raises(StorageQuotaExceededError) as caught:
            await backend.save("ab/y", b"!")
        assert caught.value.prefix == "ab/"
        await backend.save("abc", b"w" * 7)  # under no folder quota
        assert [await counted(backend, p) for p in ("a", "ab", "a/b", "")] == [10, 20, 5, 37]


async def test_a_quota_set_removed_and_set_again_counts_from_the_store(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace) as backend:
        backend.set_quota("d", 10)
        await backend.save("d/a", b"x" * 6)
        backend.set_quota("d", None)
        await backend.save("d/b", b"x" * 6)  # no quota: not refused
        backend.set_quota("d", 20)
        assert await counted(backend, "d") == 12
        backend.set_quota("d", 0)
        with pytest.raises(StorageQuotaExceededError):
            await backend.save("d/c", b"x")
        await backend.save("d/a", b"")  # shrinking is always allowed
        await backend.delete("d/b")
        assert await counted(backend, "d") == 0


# -- copies and moves ---------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["copy", "move"])
async def test_a_copy_or_move_onto_itself_changes_no_count(
    tmp_path: Path, redis_server: RedisServer, namespace: str, operation: str
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=10) as backend:
        await backend.save("k", b"x" * 10)
        assert await getattr(backend, operation)("k", "k") == "k"  # at the limit: fits
        assert await backend.load("k") == b"x" * 10
        assert await counted(backend) == 10


@pytest.mark.parametrize("operation", ["copy", "move"])
@pytest.mark.parametrize("existing", [0, 3, 5, 8])
async def test_a_copy_or_move_onto_an_existing_key_counts_the_difference(
    tmp_path: Path, redis_server: RedisServer, namespace: str, operation: str, existing: int
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=13) as backend:
        await backend.save("src", b"s" * 5)
        await backend.save("dst", b"d" * existing)
        await getattr(backend, operation)("src", "dst")
        assert await backend.load("dst") == b"s" * 5
        assert await counted(backend) == (5 if operation == "move" else 10)


async def test_a_copy_onto_a_bigger_key_frees_what_it_replaces_at_the_limit(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=10) as backend:
        await backend.save("small", b"s" * 2)
        await backend.save("big", b"b" * 8)  # at the limit
        await backend.copy("small", "big")
        await backend.save("more", b"m" * 6)
        assert await counted(backend) == 10
        with pytest.raises(StorageQuotaExceededError):
            await backend.copy("more", "small")  # 6 onto 2: one byte too many... 14
        assert await counted(backend) == 10


@pytest.mark.parametrize("operation", ["copy", "move"])
async def test_a_copy_or_move_across_quotas_counts_in_both(
    tmp_path: Path, redis_server: RedisServer, namespace: str, operation: str
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=100) as backend:
        backend.set_quota("in", 12)
        backend.set_quota("out", 6)
        await backend.save("in/a", b"x" * 6)
        await backend.save("out/b", b"y" * 1)
        with pytest.raises(StorageQuotaExceededError) as caught:
            await getattr(backend, operation)("in/a", "out/c")
        assert caught.value.prefix == "out/"
        await getattr(backend, operation)("in/a", "out/b")  # replaces its 1 byte: fits
        expected_in = 0 if operation == "move" else 6
        assert await counted(backend, "in") == expected_in
        assert await counted(backend, "out") == 6
        await backend.move("out/b", "in/back")
        assert await counted(backend, "out") == 0
        assert await counted(backend, "in") == expected_in + 6


# -- empty stores, no quota ---------------------------------------------------------------


async def test_an_empty_store_and_missing_keys_count_nothing(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path / "store", redis_server, namespace) as backend:
        await backend.refresh_usage()  # no quota at all
        await backend.refresh_usage("nothing")
        assert (await backend.get_usage("nothing")).limit is None
        backend.set_quota("", 5)
        backend.set_quota("f", 0)
        assert await counted(backend) == 0
        assert await counted(backend, "f") == 0
        await backend.delete("missing")
        await backend.delete_many([])
        await backend.delete_many(["missing", "f/missing", "missing"])
        await backend.save("f/empty", b"")
        assert await counted(backend, "f") == 0
        assert await counted(backend) == 0


# -- a store keeping prior versions -------------------------------------------------------


async def versioned(
    tmp_path: Path, server: RedisServer, namespace: str, limit: int
) -> LocalStorageBackend:
    backend = local(tmp_path / "store", server, namespace, max_size_bytes=limit)
    await backend.set_versioning(True)
    return backend


@pytest.mark.parametrize("sizes", [[0, 0], [0, 5], [5, 0], [5, 5], [5, 3, 0, 7]])
async def test_versioned_overwrites_of_any_size_count_every_version(
    tmp_path: Path, redis_server: RedisServer, namespace: str, sizes: list[int]
) -> None:
    async with await versioned(tmp_path, redis_server, namespace, 100) as backend:
        for size in sizes:
            await backend.save("k", b"x" * size)
        assert await counted(backend, versioned=True) == sum(sizes)
        await backend.delete("k")
        assert await counted(backend, versioned=True) == sum(sizes)
        await backend.purge_versions("k", keep=1)
        assert await counted(backend, versioned=True) == sizes[-1]
        await backend.purge_versions("k", keep=0)
        assert await counted(backend, versioned=True) == 0


@pytest.mark.parametrize("operation", ["copy", "move"])
async def test_a_versioned_copy_or_move_onto_itself_counts_what_the_store_keeps(
    tmp_path: Path, redis_server: RedisServer, namespace: str, operation: str
) -> None:
    async with await versioned(tmp_path, redis_server, namespace, 100) as backend:
        await backend.save("k", b"x" * 10)
        await getattr(backend, operation)("k", "k")
        assert await backend.load("k") == b"x" * 10
        assert await counted(backend, versioned=True) == 10  # nothing replaced, nothing kept


@pytest.mark.parametrize("operation", ["copy", "move"])
@pytest.mark.parametrize("existing", [0, 3, 8])
async def test_a_versioned_copy_or_move_onto_an_existing_key_keeps_it_counted(
    tmp_path: Path, redis_server: RedisServer, namespace: str, operation: str, existing: int
) -> None:
    async with await versioned(tmp_path, redis_server, namespace, 100) as backend:
        await backend.save("src", b"s" * 5)
        await backend.save("dst", b"d" * existing)
        await getattr(backend, operation)("src", "dst")
        assert await counted(backend, versioned=True) == 10 + existing


async def test_versioning_suspended_keeps_counting_what_was_kept(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with await versioned(tmp_path, redis_server, namespace, 20) as backend:
        await backend.save("k", b"x" * 8)
        await backend.save("k", b"y" * 8)
        await backend.set_versioning(False)
        await backend.save("k", b"z" * 4)
        used = await counted(backend, versioned=True)
        with pytest.raises(StorageQuotaExceededError):
            await backend.save("other", b"o" * (21 - used))
        await backend.save("other", b"o" * (20 - used))
        assert await counted(backend, versioned=True) == 20


async def test_a_versioned_delete_many_with_missing_and_repeated_keys_counts_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with await versioned(tmp_path, redis_server, namespace, 100) as backend:
        await backend.save("a", b"x" * 3)
        await backend.save("b", b"")
        await backend.delete_many(["a", "missing", "a", "b"])
        await backend.delete("a")  # deleted already: keeps nothing more
        assert await counted(backend, versioned=True) == 3


@pytest.mark.parametrize("huge", [2**53, 2**60, 10**18 + 1])
async def test_a_huge_store_is_refused_exactly_at_its_limit(
    tmp_path: Path, redis_server: RedisServer, namespace: str, huge: int
) -> None:
    # past 2^53 a double steps by more than a byte: a check in doubles lets some bytes
    # past the limit (2^60 + 101 rounds to 2^60, "not more" than 2^60 + 100)
    backend = HugeLocal(
        tmp_path,
        max_size_bytes=huge + 100,
        quota_redis_url=redis_server.url,
        quota_redis_namespace=namespace,
    )
    backend.huge = huge
    async with backend:
        await backend.save("a", b"x" * 60)
        with pytest.raises(StorageQuotaExceededError) as caught:
            await backend.save("b", b"y" * 41)
        assert (caught.value.used, caught.value.limit) == (huge + 60, huge + 100)
        await backend.save("b", b"y" * 40)
        with pytest.raises(StorageQuotaExceededError):
            await backend.save("c", b"z")
        assert (await backend.get_usage()).used == huge + 100


async def test_a_refresh_of_a_folder_without_a_quota_leaves_no_count_behind(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace) as backend:
        await backend.save("f/a", b"x" * 4)
        await backend.refresh_usage("f")  # no quota there (yet)
        await backend.save("f/b", b"y" * 10)
        await backend.delete("f/a")
        backend.set_quota("f", 15)
        assert await counted(backend, "f") == 10
        with pytest.raises(StorageQuotaExceededError):
            await backend.save("f/c", b"z" * 6)


async def test_a_quota_removed_and_set_again_during_a_write_counts_it_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    a, b = gated_pair(tmp_path, redis_server, namespace, "f/x")
    async with a, b:
        a.set_quota("f", 10)
        b.set_quota("f", 10)
        write = asyncio.create_task(a.save("f/x", b"x" * 6))
        await a.landed.wait()  # reserved, landed, not committed
        b.set_quota("f", None)
        await b.get_usage("f")  # pushed
        b.set_quota("f", 10)
        await b.get_usage("f")
        a.gate.set()
        await write
        assert await counted(b, "f") == 6
        with pytest.raises(StorageQuotaExceededError):
            await b.save("f/y", b"y" * 5)


# -- streams, concurrency, folders --------------------------------------------------------


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    "parts", [(), (b"",), (b"", b""), (b"x" * 10,), (b"x" * 5, b"", b"y" * 5), (b"x",) * 10]
)
async def test_a_stream_up_to_the_limit_is_counted_as_landed(
    tmp_path: Path, redis_server: RedisServer, namespace: str, parts: tuple[bytes, ...]
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=10) as backend:
        await backend.save("s", chunks(*parts))
        await backend.save("s", chunks(*parts))  # over itself: needs nothing more
        assert await counted(backend) == sum(map(len, parts))


@pytest.mark.parametrize("existing", [0, 4])
async def test_a_stream_past_the_limit_is_refused_and_leaves_the_count_as_it_was(
    tmp_path: Path, redis_server: RedisServer, namespace: str, existing: int
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=10) as backend:
        await backend.save("other", b"o" * 2)
        await backend.save("s", b"e" * existing)
        with pytest.raises(StorageQuotaExceededError):
            await backend.save("s", chunks(b"x" * 4, b"", b"y" * 4, b"z"))
        assert await counted(backend) == 2 + existing
        await backend.save("s", chunks(b"x" * 4, b"y" * 4))  # exactly the limit
        assert await counted(backend) == 10


async def test_concurrent_saves_of_one_key_in_two_processes_count_the_last(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    # (a limit no round reaches: three objects of at most 39 bytes)
    a = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    b = local(tmp_path, redis_server, namespace, max_size_bytes=1000)
    async with a, b:
        for round_ in range(5):
            sizes = [(round_ * 7 + n * 13) % 40 for n in range(6)]
            await asyncio.gather(
                *[(a if n % 2 else b).save("k", b"x" * size) for n, size in enumerate(sizes)],
                *[(b if n % 2 else a).copy("k", f"c{n}") for n in range(2)],
            )
            assert await counted(a) == await a.get_total_size()
            await a.delete_many(["c0", "c1"])


async def test_a_delete_prefix_under_nested_quotas_frees_each(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace, max_size_bytes=100) as backend:
        backend.set_quota("p", 30)
        backend.set_quota("p/q", 10)
        await backend.save("p/a", b"x" * 10)
        await backend.save("p/q/b", b"y" * 10)
        await backend.save("p/q/r/c", b"")
        await backend.save("pq/d", b"z" * 5)
        assert await backend.delete_prefix("p/q") == 2
        assert [await counted(backend, p) for p in ("p", "p/q", "")] == [10, 0, 15]
        await backend.delete_prefix("")
        assert [await counted(backend, p) for p in ("p", "p/q", "")] == [0, 0, 0]


async def test_writes_whose_leases_run_out_at_once_are_still_counted_exactly(
    tmp_path: Path, redis_server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a lease of 1 ms, below what users may set: every commit finds its reservation gone
    # and checks again, as one does after a loop stalled for longer than a lease
    from file_storage import _settings_common

    monkeypatch.setattr(_settings_common, "MIN_LEASE_SECONDS", 0.001)
    async with local(
        tmp_path, redis_server, namespace, max_size_bytes=20, quota_lease_seconds=0.001
    ) as backend:
        for n in range(4):
            await backend.save(f"k{n}", b"x" * 5)
        with pytest.raises(StorageQuotaExceededError):
            await backend.save("more", b"y")
        await backend.save("k0", b"")
        await backend.copy("k1", "k0")
        await backend.move("k2", "k5")
        assert await counted(backend) == 20


async def test_versions_under_nested_quotas_set_late_are_counted_in_each(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with await versioned(tmp_path, redis_server, namespace, 1000) as backend:
        await backend.save("p/q/k", b"1" * 3)
        await backend.save("p/q/k", b"2" * 5)
        await backend.save("p/j", b"3" * 7)
        await backend.delete("p/j")
        backend.set_quota("p", 100)
        backend.set_quota("p/q", 8)
        assert [await counted(backend, p, versioned=True) for p in ("p", "p/q")] == [15, 8]
        with pytest.raises(StorageQuotaExceededError) as caught:
            await backend.save("p/q/k", b"4")  # the 5 bytes become a kept version
        assert caught.value.prefix == "p/q/"
        backend.set_quota("p/q", 20)
        oldest = (await backend.list_versions("p/q/k"))[-1]
        await backend.restore_version("p/q/k", oldest.version_id)
        used = await counted(backend, "p/q", versioned=True)
        assert used == sum(v.size for v in await backend.list_versions("p/q/k"))
        await backend.purge_versions("p/q/k", keep=1)
        await backend.copy("p/q/k", "p/j")
        assert [await counted(backend, p, versioned=True) for p in ("p", "p/q")] == [13, 3]


@pytest.mark.parametrize("versioning", [False, True])
async def test_writes_during_a_listing_of_more_than_a_batch_are_counted_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str, versioning: bool
) -> None:
    # 2500 objects: listed in batches of 1000, the last one not staged yet when paused
    store = tmp_path / "store"
    for n in range(2500):
        (store / "d").mkdir(parents=True, exist_ok=True)
        (store / "d" / f"{n:04d}").write_bytes(b"x" * (n % 3))
    async with local(store, redis_server, namespace) as backend:
        await backend.set_versioning(versioning)
        backend.set_quota("d", 10**6)
        await backend.get_usage("d")  # listed once: writes go on while it lists again
        listed, go = pause_listing(backend)
        listing = asyncio.create_task(backend.refresh_usage("d"))
        await listed.wait()
        other = local(store, redis_server, namespace)
        async with other:
            other.set_quota("d", 10**6)
            await other.save("d/0005", b"y" * 9)  # staged already
            await other.save("d/2400", b"y" * 9)  # not staged yet
            await other.delete("d/0007")
            await other.delete("d/2401")
            await other.save("d/new", b"")
            go.set()
            await listing
            assert await counted(other, "d", versioned=versioning) > 0


async def test_a_quota_removed_and_set_again_during_its_listing_is_listed_at_once(
    tmp_path: Path, redis_server: RedisServer, namespace: str
) -> None:
    async with local(tmp_path, redis_server, namespace) as backend:
        backend.set_quota("f", 100)
        await backend.save("f/a", b"x" * 4)
        listed, go = pause_listing(backend)
        listing = asyncio.create_task(backend.refresh_usage("f"))
        await listed.wait()
        other = local(tmp_path, redis_server, namespace)
        async with other:
            other.set_quota("f", None)
            await other.get_usage("f")  # pushed
            other.set_quota("f", 100)
            # listed at once, not once the paused listing's lock ran out (a lease: 60 s)
            await asyncio.wait_for(other.get_usage("f"), timeout=10)
            go.set()
            await listing
            await asyncio.wait_for(backend.save("f/b", b"y" * 6), timeout=10)
            assert await counted(other, "f") == 10


class HugeVersionedLocal(LocalStorageBackend):
    """Lists ``big/object`` at ``huge`` bytes first, then 1000 empty objects: the first
    batch of a listing (and so ``big/object``) is staged before the listing ends."""

    huge = 0

    async def _usage_scan(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        now = datetime.now(UTC)
        if self.huge:
            yield ObjectInfo("big/object", self.huge, now)
            for n in range(1000):
                yield ObjectInfo(f"big/filler{n}", 0, now)
        async for info in super()._usage_scan(prefix):
            if info.key != "big/object":
                yield info

    async def _list_versions(self, key: str) -> list[ObjectVersion]:
        # the huge object, as the listing shows it: a prior version once overwritten
        versions = await super()._list_versions(key)
        if self.huge and key == "big/object" and versions:
            versions.append(ObjectVersion("huge", self.huge, datetime.now(UTC), False))
        return versions


@pytest.mark.parametrize("huge", [10**14 + 12345, 2**52 + 1])
async def test_a_huge_object_kept_while_its_quota_is_listed_is_counted_exactly(
    tmp_path: Path, redis_server: RedisServer, namespace: str, huge: int
) -> None:
    # an object of 100 TB or more overwritten in a versioned store while its quota is
    # listed again: its bytes, kept as a prior version, must not be rounded
    backend = HugeVersionedLocal(
        tmp_path / "store",
        max_size_bytes=2**62,
        quota_redis_url=redis_server.url,
        quota_redis_namespace=namespace,
    )
    backend.huge = huge
    async with backend:
        await backend.set_versioning(True)
        assert (await backend.get_usage()).used == huge  # listed
        listed, go = pause_listing(backend)
        listing = asyncio.create_task(backend.refresh_usage(""))
        await listed.wait()
        await backend.save("big/object", b"y" * 9)  # the huge one becomes a prior version
        go.set()
        await listing
        assert (await backend.get_usage()).used == huge + 9
