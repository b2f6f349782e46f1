"""Expiry per backend: local and memory apply their rules, S3 merges them into the bucket."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    ObjectEvent,
    ObjectInfo,
    StorageBackend,
    StorageConfigError,
)
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET

DAY = timedelta(days=1)


@pytest.fixture(params=["memory", "local"])
def applying(request: pytest.FixtureRequest) -> StorageBackend:
    """The backends that apply expiry rules themselves, with purge_expired."""
    result: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return result


# ---------------------------------------------------------------- local and memory


async def test_purge_expired_deletes_only_old_objects_under_a_rule(
    applying: StorageBackend,
) -> None:
    await applying.set_expiration("temp", 1)
    await applying.set_expiration("logs", 30)
    for key in ("temp/a.bin", "temp/sub/b.bin", "logs/x.log", "keep/c.bin", "temporary.bin"):
        await applying.save(key, b"12345")
    now = datetime.now(UTC)
    assert await applying.purge_expired(now=now + 2 * DAY) == 2
    assert await applying.list_files() == ["keep/c.bin", "logs/x.log", "temporary.bin"]
    assert await applying.purge_expired(now=now + 31 * DAY) == 1
    assert await applying.list_files() == ["keep/c.bin", "temporary.bin"]


async def test_purge_expired_goes_through_delete_quota_and_events(
    applying: StorageBackend,
) -> None:
    applying.set_quota("", 20)
    await applying.set_expiration("temp", 1)
    await applying.save("temp/a.bin", b"x" * 15)
    seen: list[ObjectEvent] = []
    applying.subscribe(seen.append)
    assert await applying.purge_expired(now=datetime.now(UTC) + 2 * DAY) == 1
    assert seen == [ObjectEvent("deleted", "temp/a.bin")]
    assert (await applying.get_usage()).used == 0
    await applying.save("temp/b.bin", b"y" * 15)  # the space is free again


async def test_nested_rules_the_shorter_one_wins(applying: StorageBackend) -> None:
    await applying.set_expiration("data", 30)
    await applying.set_expiration("data/cache", 1)
    await applying.save("data/cache/x", b"1")
    await applying.save("data/y", b"2")
    assert await applying.purge_expired(now=datetime.now(UTC) + 2 * DAY) == 1
    assert await applying.list_files() == ["data/y"]


async def test_purge_expired_without_rules_deletes_nothing(applying: StorageBackend) -> None:
    await applying.save("a.bin", b"1")
    assert await applying.purge_expired(now=datetime.now(UTC) + 3650 * DAY) == 0
    assert await applying.list_files() == ["a.bin"]


async def test_local_rules_survive_a_new_backend_on_the_same_root(tmp_path: Path) -> None:
    async with LocalStorageBackend(tmp_path / "st") as first:
        await first.set_expiration("temp", 2)
        await first.set_expiration("logs", 9)
        await first.save("temp/old.bin", b"x")
    async with LocalStorageBackend(tmp_path / "st") as second:
        assert await second.get_expiration() == {"logs/": 9, "temp/": 2}
        assert await second.purge_expired(now=datetime.now(UTC) + 3 * DAY) == 1
        assert await second.list_files() == []
    # one small file under the reserved name, replaced whole; no temp file left beside it
    names = sorted(os.listdir(tmp_path / "st"))
    assert "\\tmp-" not in "".join(names)
    assert ".file_storage\\lifecycle.json" in names


async def test_local_sweep_with_a_fixed_now_uses_file_times(tmp_path: Path) -> None:
    root = tmp_path / "st"
    async with LocalStorageBackend(root) as backend:
        await backend.set_expiration("recordings", 7)
        await backend.save("recordings/old.webm", b"old")
        await backend.save("recordings/new.webm", b"new")
        ten_days_ago = time.time() - 10 * 86400
        os.utime(root / "recordings" / "old.webm", (ten_days_ago, ten_days_ago))
        assert await backend.purge_expired(now=datetime.now(UTC)) == 1
        assert await backend.list_files() == ["recordings/new.webm"]


async def test_local_damaged_rules_file_is_a_storage_error(tmp_path: Path) -> None:
    from file_storage import StorageError

    root = tmp_path / "st"
    root.mkdir()
    (root / ".file_storage\\lifecycle.json").write_text("{not json")
    async with LocalStorageBackend(root) as backend:
        with pytest.raises(StorageError, match="damaged") as info:
            await backend.get_expiration()
        assert info.value.operation == "get_expiration"


async def test_background_interval_purges_while_the_backend_is_open(tmp_path: Path) -> None:
    root = tmp_path / "st"
    backend = LocalStorageBackend(root, expire_interval_seconds=0.01)
    purged = asyncio.Event()

    def on_event(event: ObjectEvent) -> None:
        if event.type == "deleted":
            purged.set()

    backend.subscribe(on_event)
    try:
        await backend.set_expiration("temp", 1)  # the first call starts the interval
        await backend.save("temp/old.bin", b"x")
        two_days_ago = time.time() - 2 * 86400
        os.utime(root / "temp" / "old.bin", (two_days_ago, two_days_ago))
        await asyncio.wait_for(purged.wait(), timeout=30)  # a bound, not a synchronization
        assert await backend.list_files() == []
    finally:
        await backend.aclose()
    assert backend._expiry._purger.task is None  # stopped by aclose


def test_background_interval_works_in_one_event_loop_after_another() -> None:
    backend = MemoryStorageBackend(expire_interval_seconds=0.01)

    async def job(key: str) -> None:
        gone = asyncio.Event()
        backend.subscribe(lambda e: gone.set() if e.key == key else None)
        await backend.set_expiration("temp", 1)
        await backend.save(key, b"x")
        # a far-future "now" is what the background purge cannot use: backdate instead
        old = datetime.now(UTC) - 2 * DAY
        backend._objects[key] = dataclasses.replace(backend._objects[key], last_modified=old)
        await asyncio.wait_for(gone.wait(), timeout=30)

    asyncio.run(job("temp/first.txt"))
    asyncio.run(job("temp/second.txt"))  # a new loop: the interval starts again there


@pytest.mark.parametrize("value", [0, -1, True, "10", float("nan")])
def test_bad_expire_interval_is_a_config_error(value: object) -> None:
    with pytest.raises(StorageConfigError, match="expire_interval_seconds"):
        MemoryStorageBackend(expire_interval_seconds=value)  # type: ignore[arg-type]


# ---------------------------------------------------------------- S3: the bucket's lifecycle

FOREIGN = [
    {
        "ID": "keep-logs-for-a-year",
        "Filter": {"Prefix": "storage/logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 365},
    },
    {
        "ID": "abort-stale-uploads",
        "Filter": {"Prefix": ""},
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    },
]


def lifecycle(raw: Any, bucket: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = raw.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return rules


@pytest.mark.s3
async def test_s3_rules_merge_with_foreign_rules_which_survive_untouched(
    s3_backend: StorageBackend, raw: Any, s3_bucket: str
) -> None:
    raw.put_bucket_lifecycle_configuration(
        Bucket=s3_bucket, LifecycleConfiguration={"Rules": FOREIGN}
    )
    before = lifecycle(raw, s3_bucket)
    await s3_backend.set_expiration("temp", 1)
    await s3_backend.set_expiration("sessions/recordings", 30)
    await s3_backend.set_expiration("temp", 2)  # replaces ours, adds none
    rules = lifecycle(raw, s3_bucket)
    assert [
        r for r in rules if r["ID"] in {"keep-logs-for-a-year", "abort-stale-uploads"}
    ] == before
    ours = {r["Filter"]["Prefix"]: r for r in rules if r["ID"].startswith("file_storage:")}
    assert sorted(ours) == ["storage/sessions/recordings/", "storage/temp/"]
    assert ours["storage/temp/"]["Expiration"] == {"Days": 2}
    assert ours["storage/temp/"]["Status"] == "Enabled"
    # the foreign rule on storage/logs/ is not ours: not listed, not changed
    assert await s3_backend.get_expiration() == {"sessions/recordings/": 30, "temp/": 2}

    await s3_backend.set_expiration("temp", None)
    await s3_backend.set_expiration("sessions/recordings", None)
    assert lifecycle(raw, s3_bucket) == before
    assert await s3_backend.get_expiration() == {}


@pytest.mark.s3
async def test_s3_removing_the_last_rule_removes_the_configuration(
    s3_backend: StorageBackend, raw: Any, s3_bucket: str
) -> None:
    await s3_backend.set_expiration("temp", 1)
    assert len(lifecycle(raw, s3_bucket)) == 1
    await s3_backend.set_expiration("temp", None)
    with pytest.raises(raw.exceptions.ClientError, match="NoSuchLifecycleConfiguration"):
        raw.get_bucket_lifecycle_configuration(Bucket=s3_bucket)


@pytest.mark.s3
async def test_s3_rules_of_another_prefix_are_not_ours(
    s3_backend: StorageBackend, moto_endpoint: str, s3_bucket: str
) -> None:
    from file_storage import S3StorageBackend

    other = S3StorageBackend(
        s3_bucket,
        prefix="other",
        endpoint_url=moto_endpoint,
        access_key_id=FAKE_KEY_ID,
        secret_access_key=FAKE_SECRET,
        addressing_style="path",
    )
    async with other:
        await other.set_expiration("temp", 5)
        await s3_backend.set_expiration("temp", 1)
        assert await other.get_expiration() == {"temp/": 5}
        assert await s3_backend.get_expiration() == {"temp/": 1}
        await s3_backend.set_expiration("temp", None)
        assert await other.get_expiration() == {"temp/": 5}


@pytest.mark.s3
async def test_s3_purge_expired_leaves_expiry_to_s3(s3_backend: StorageBackend) -> None:
    await s3_backend.set_expiration("temp", 1)
    await s3_backend.save("temp/a.bin", b"x")
    assert await s3_backend.purge_expired(now=datetime.now(UTC) + 10 * DAY) == 0
    assert await s3_backend.list_files() == ["temp/a.bin"]


async def test_purge_expired_keeps_an_object_rewritten_after_the_listing() -> None:
    class RewrittenDuringPurge(MemoryStorageBackend):
        """A writer replaces temp/a.bin right after the purge's listing saw it old."""

        async def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
            async for info in super()._iter_files(prefix):
                yield info
            fresh = datetime.now(UTC)
            self._objects["temp/a.bin"] = dataclasses.replace(
                self._objects["temp/a.bin"], data=b"new", last_modified=fresh
            )

    backend = RewrittenDuringPurge()
    await backend.set_expiration("temp", 1)
    for key in ("temp/a.bin", "temp/b.bin"):
        await backend.save(key, b"old")
        old = datetime.now(UTC) - 2 * DAY
        backend._objects[key] = dataclasses.replace(backend._objects[key], last_modified=old)
    assert await backend.purge_expired() == 1
    assert await backend.list_files() == ["temp/a.bin"]
    assert await backend.load("temp/a.bin") == b"new"


async def test_local_purge_expired_deletes_an_expired_link_not_what_it_names(
    local_backend: LocalStorageBackend,
) -> None:
    # a link in the root is an object whose listing shows what it names (size, time): the
    # purge's check of "the object listed" must look at it the same way
    await local_backend.set_expiration("links", 1)
    await local_backend.save("data/a.txt", b"object a")
    (local_backend.root / "links").mkdir()
    (local_backend.root / "links" / "b.txt").symlink_to(local_backend.root / "data" / "a.txt")
    assert await local_backend.purge_expired(now=datetime.now(UTC) + 2 * DAY) == 1
    assert await local_backend.list_files() == ["data/a.txt"]


async def test_local_rules_set_by_two_processes_at_once_lose_neither(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # two backends on one root stand for two processes: each reads the rules file,
    # adds its rule and writes the whole file back; the second must not write over the
    # first's rule with what it read before it
    from file_storage.backends.local import _rules

    first = LocalStorageBackend(tmp_path / "root")
    second = LocalStorageBackend(tmp_path / "root")
    both_read = threading.Barrier(2)
    real_read = _rules.LocalRules._read

    def read_then_meet(self: _rules.LocalRules) -> dict[str, int]:
        rules = real_read(self)
        with contextlib.suppress(threading.BrokenBarrierError):
            # both writers between their read and their write, unless one excludes the
            # other (then this one gives up waiting, and goes on alone)
            both_read.wait(timeout=1)
        return rules

    monkeypatch.setattr(_rules.LocalRules, "_read", read_then_meet)
    async with first, second:
        await asyncio.gather(first.set_expiration("a", 1), second.set_expiration("b", 2))
        monkeypatch.undo()
        assert await first.get_expiration() == {"a/": 1, "b/": 2}
