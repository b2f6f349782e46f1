"""Expiry under attack: a hostile rules file on local disk, and writes racing a purge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    ObjectInfo,
    StorageBackend,
    StorageError,
)
from file_storage.backends.local import _files as files_module

DAY = timedelta(days=1)
RULES = ".file_storage\\lifecycle.json"


def plant_rules(root: Path, rules: dict[str, object]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / RULES).write_text(json.dumps({"expiration": rules}))


@pytest.mark.parametrize(
    "prefix",
    [
        "../",  # the root's parent: every file beside the root, and the root itself
        "../storage/temp/",
        "temp/../",
        "./",
        "/tmp/",
        "temp",  # no folder: would be every key starting with the text "temp"
        "temp//",
        "a\\b/",
        "nul\x00/",
    ],
)
async def test_a_planted_rule_whose_prefix_is_no_folder_deletes_nothing(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # the rules file is the backend's own, but anyone with write access to the root can
    # edit it: a rule set_expiration would refuse is ignored (and logged), never applied
    # outside the folder it names, and the valid rules beside it still apply
    root = tmp_path / "storage"
    plant_rules(root, {prefix: 1, "logs/": 1})
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not an object")
    async with LocalStorageBackend(root) as backend:
        for key in ("temp/a.bin", "temporary.bin", "logs/x.log"):
            await backend.save(key, b"x")
        with caplog.at_level(logging.WARNING, logger="file_storage"):
            assert await backend.get_expiration() == {"logs/": 1}
            assert await backend.purge_expired(now=datetime.now(UTC) + 2 * DAY) == 1
        assert await backend.list_files() == ["temp/a.bin", "temporary.bin"]
    assert outside.read_bytes() == b"not an object"
    assert "expiry rule" in caplog.text


async def test_a_planted_rule_is_logged_once_per_purge_not_once_per_object(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the purge reads the rules again before each delete: that read says nothing more
    root = tmp_path / "storage"
    plant_rules(root, {"../": 1, "temp/": 1})
    async with LocalStorageBackend(root) as backend:
        for i in range(5):
            await backend.save(f"temp/{i}", b"x")
        with caplog.at_level(logging.WARNING, logger="file_storage"):
            assert await backend.purge_expired(now=datetime.now(UTC) + 2 * DAY) == 5
    assert len([r for r in caplog.records if "expiry rule" in r.getMessage()]) == 1


async def test_a_rules_file_nested_too_deep_to_parse_is_a_damaged_rules_file(
    tmp_path: Path,
) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    (root / RULES).write_text('{"expiration": ' + "[" * 100_000 + "]" * 100_000 + "}")
    async with LocalStorageBackend(root) as backend:
        with pytest.raises(StorageError, match="damaged") as info:
            await backend.get_expiration()
        assert info.value.operation == "get_expiration"


async def test_a_rules_file_replaced_by_a_link_is_a_damaged_rules_file(tmp_path: Path) -> None:
    # a link in place of the rules (to rules outside the root, here expiring everything)
    # is never followed: every call says the file is damaged, and nothing is deleted
    root = tmp_path / "storage"
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps({"expiration": {"": 1}}))
    async with LocalStorageBackend(root) as backend:
        await backend.save("a.txt", b"x")
        os.symlink(planted, root / RULES)
        with pytest.raises(StorageError, match="damaged"):
            await backend.get_expiration()
        with pytest.raises(StorageError, match="damaged"):
            await backend.set_expiration("temp", 1)
        with pytest.raises(StorageError, match="damaged"):
            await backend.purge_expired(now=datetime.now(UTC) + 3 * DAY)
        assert await backend.list_files() == ["a.txt"]
    assert json.loads(planted.read_text()) == {"expiration": {"": 1}}


async def test_a_planted_rule_whose_days_are_no_positive_int_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    (root / RULES).write_text('{"expiration": {"a/": "7", "b/": 1e400, "c/": 0, "d/": 2}}')
    async with LocalStorageBackend(root) as backend:
        with caplog.at_level(logging.WARNING, logger="file_storage"):
            assert await backend.get_expiration() == {"d/": 2}
    assert [r.getMessage() for r in caplog.records] == [
        f"expiry rule of {prefix!r} ignored: its days are no positive whole number (fix the rules)"
        for prefix in ("a/", "b/", "c/")
    ]


# ------------------------------------------------- a write landing while purge checks


async def _write_at_key(root: Path, how: str, version_id: str | None) -> None:
    async with LocalStorageBackend(root) as other:  # another backend: another process
        if how == "save":
            await other.save("temp/a.txt", b"new")
        elif how == "copy":
            await other.copy("keep/src.txt", "temp/a.txt")
        elif how == "move":
            await other.move("keep/src.txt", "temp/a.txt")
        else:
            assert version_id is not None
            await other.restore_version("temp/a.txt", version_id)


@pytest.mark.parametrize("how", ["save", "copy", "move", "restore_version"])
async def test_local_purge_keeps_what_lands_at_the_key_between_its_check_and_its_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # the widest window there is: purge has compared the file on disk with the one its
    # listing judged expired, and is about to unlink it; a write of the key by another
    # backend starts right then, and gets half a second to land. It must wait for the
    # unlink (the key's lock), or the fresh object it lands is the one unlinked
    root = tmp_path / "storage"
    backend = LocalStorageBackend(root)
    version_id = None
    if how == "restore_version":
        await backend.set_versioning(True)
        await backend.save("temp/a.txt", b"new")
        version_id = (await backend.list_versions("temp/a.txt"))[0].version_id
    await backend.save("keep/src.txt", b"new")
    await backend.save("temp/a.txt", b"old")
    await backend.set_expiration("temp", 1)
    etag_of, listing = backend._etag, backend._iter_files
    writers: list[threading.Thread] = []
    landed = threading.Event()
    listed = False

    async def seen(prefix: str) -> AsyncIterator[ObjectInfo]:
        nonlocal listed
        async for info in listing(prefix):
            yield info
        listed = True

    def checked_then_written(st: os.stat_result) -> str:
        etag = etag_of(st)
        if listed and not writers:  # the purge's comparison, under the key's lock

            def write() -> None:
                asyncio.run(_write_at_key(root, how, version_id))
                landed.set()

            writers.append(threading.Thread(target=write))
            writers[0].start()
            landed.wait(timeout=0.5)  # a bound: it lands now, unless the lock holds it
        return etag

    monkeypatch.setattr(backend, "_iter_files", seen)
    monkeypatch.setattr(backend, "_etag", checked_then_written)
    try:
        await backend.purge_expired(now=datetime.now(UTC) + 3 * DAY)
    finally:
        for writer in writers:
            await asyncio.to_thread(writer.join)
        monkeypatch.undo()
    try:
        assert writers, "the purge never compared temp/a.txt"
        assert await backend.load("temp/a.txt") == b"new"
    finally:
        await backend.aclose()


@pytest.mark.parametrize("kind", ["memory", "local"])
async def test_purge_on_a_versioned_store_keeps_the_expired_object_as_a_prior_version(
    tmp_path: Path, kind: str
) -> None:
    # as a delete does: the rules expire current objects only, never prior versions
    backend: StorageBackend = (
        MemoryStorageBackend(max_size_bytes=1000)
        if kind == "memory"
        else LocalStorageBackend(tmp_path / "storage", max_size_bytes=1000)
    )
    async with backend:
        await backend.set_versioning(True)
        await backend.set_expiration("temp", 1)
        await backend.save("temp/a.txt", b"one")
        await backend.save("temp/a.txt", b"two two")
        assert await backend.purge_expired(now=datetime.now(UTC) + 3 * DAY) == 1
        assert await backend.list_files() == []
        versions = await backend.list_versions("temp/a.txt")
        assert [(v.size, v.is_latest) for v in versions] == [(7, False), (3, False)]
        assert (await backend.get_usage()).used == 10
        assert await backend.purge_expired(now=datetime.now(UTC) + 30 * DAY) == 0
        assert len(await backend.list_versions("temp/a.txt")) == 2


async def test_local_object_moved_into_an_expiring_folder_is_not_purged_at_once(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("uploads/a.bin", b"kept for ten days so far")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(local_backend.root / "uploads" / "a.bin", (ten_days_ago, ten_days_ago))
    await local_backend.set_expiration("temp", 1)
    await local_backend.move("uploads/a.bin", "temp/a.bin")
    assert await local_backend.purge_expired() == 0
    assert await local_backend.list_files() == ["temp/a.bin"]


# ------------------------------------------- folder links: a rule's folder, not an alias


async def test_local_purge_never_deletes_through_a_linked_folder(tmp_path: Path) -> None:
    # temp/sub is a link to keep/, which no rule covers: keep/x is listed under temp/ too
    # (links are aliases), but the rule of temp/ is no rule of the file's own folder
    root = tmp_path / "storage"
    async with LocalStorageBackend(root) as backend:
        await backend.save("keep/x", b"precious")
        await backend.save("temp/a", b"scratch")
        os.symlink("../keep", root / "temp" / "sub")
        await backend.set_expiration("temp", 1)
        assert await backend.purge_expired(now=datetime.now(UTC) + 3 * DAY) == 1
        assert await backend.load("keep/x") == b"precious"
        assert await backend.list_files("temp") == ["temp/sub/x"]


async def test_local_purge_keeps_an_object_whose_folder_moved_out_after_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another process moves the folder temp/sub out to keep/sub once the purge has listed
    # it, and leaves a link in its place: the object now lives under keep/, no rule's
    root = tmp_path / "storage"
    async with LocalStorageBackend(root) as backend:
        await backend.save("temp/sub/x", b"moved out")
        await backend.set_expiration("temp", 1)
        listing = backend._iter_files

        async def then_moved(prefix: str) -> AsyncIterator[ObjectInfo]:
            async for info in listing(prefix):
                yield info
            (root / "keep").mkdir()
            os.rename(root / "temp" / "sub", root / "keep" / "sub")
            os.symlink("../keep/sub", root / "temp" / "sub")

        monkeypatch.setattr(backend, "_iter_files", then_moved)
        assert await backend.purge_expired(now=datetime.now(UTC) + 3 * DAY) == 0
        monkeypatch.undo()
        assert await backend.load("keep/sub/x") == b"moved out"


async def test_local_purge_keeps_an_object_whose_folder_moved_out_as_it_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the latest moment: the purge holds the folder it opened and waits for the key's
    # lock; the folder moves out right then. The file it compares must be the one it
    # would unlink, in the folder it holds (now keep/sub), not what the key's path
    # leads to afresh (the same file, through the link)
    root = tmp_path / "storage"
    async with LocalStorageBackend(root) as backend:
        await backend.save("temp/sub/x", b"moved out")
        await backend.set_expiration("temp", 1)
        real_locks = files_module.key_locks
        moved: list[str] = []

        @contextlib.contextmanager
        def moved_first(root_: object, *keys: str) -> Iterator[None]:
            if keys == ("temp/sub/x",) and not moved:
                moved.append(keys[0])
                (root / "keep").mkdir()
                os.rename(root / "temp" / "sub", root / "keep" / "sub")
                os.symlink("../keep/sub", root / "temp" / "sub")
            with real_locks(root_, *keys):  # type: ignore[arg-type]
                yield

        monkeypatch.setattr(files_module, "key_locks", moved_first)
        assert await backend.purge_expired(now=datetime.now(UTC) + 3 * DAY) == 0
        monkeypatch.undo()
        assert moved, "the purge never took the key's lock"
        assert await backend.load("keep/sub/x") == b"moved out"


# ------------------------------------------------ rules changed while the purge deletes


async def test_local_purge_stops_deleting_once_another_process_removed_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another process removes the rule once the purge has deleted temp/a: its call has
    # returned, so temp/b and temp/c, expired under the old rule only, stay
    root = tmp_path / "storage"
    async with LocalStorageBackend(root) as backend, LocalStorageBackend(root) as other:
        for key in ("temp/a", "temp/b", "temp/c"):
            await backend.save(key, b"x")
        await backend.set_expiration("temp", 1)
        delete_expired = backend._delete_expired

        async def then_removed(key: str, listed: ObjectInfo) -> bool:
            gone = await delete_expired(key, listed)
            await other.set_expiration("temp", None)
            return gone

        monkeypatch.setattr(backend, "_delete_expired", then_removed)
        assert await backend.purge_expired(now=datetime.now(UTC) + 3 * DAY) == 1
        monkeypatch.undo()
        assert await backend.list_files() == ["temp/b", "temp/c"]


async def test_local_rule_on_a_linked_folder_deletes_nothing_through_it(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    async with LocalStorageBackend(root) as backend:
        await backend.save("keep/x", b"precious")
        os.symlink("keep", root / "temp")
        await backend.set_expiration("temp", 1)
        assert await backend.list_files("temp") == ["temp/x"]
        assert await backend.purge_expired(now=datetime.now(UTC) + 3 * DAY) == 0
        assert await backend.load("keep/x") == b"precious"
