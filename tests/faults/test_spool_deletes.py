"""The S3 fallback spool and deletes: a delete made after a save was spooled is not undone
by the flush (the deleted bytes never come back), whether this backend made it, before or
during the flush, or another server did in a versioned bucket (its delete marker)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest

from file_storage import S3StorageBackend, StorageUnavailableError
from file_storage import _spool as spool_module
from file_storage._spool import Entry
from file_storage.backends.s3 import _fallback as fallback
from tests.faults.conftest import MakeBackend, appears
from tests.faults.proxy import FaultProxy
from tests.forks import DEADLINE, forked, in_child
from tests.s3util import stored_keys

pytestmark = pytest.mark.s3

VERSIONED = pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])


def spooled_manifests(spool_path: Path) -> list[str]:
    return sorted(p.name for p in (spool_path / "entries").glob("*.json"))


async def spool(backend: S3StorageBackend, proxy: FaultProxy, key: str, body: bytes) -> None:
    """Save ``key`` while S3 is unreachable (so it is spooled), then bring S3 back."""
    proxy.refuse()
    await backend.save(key, body)
    proxy.restore()


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
async def test_flush_drops_a_version_spooled_before_another_servers_delete(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str,
    spool_path: Path, client: str
) -> None:  # fmt: skip
    # obstore's not-found names no delete marker: the bucket's versioning is asked instead
    spooling = make_backend(fallback_path=spool_path, client=client)
    other = make_backend()  # another server, without this spool
    await other.set_versioning(True)
    await spooling.save("a.txt", b"stored")
    await spool(spooling, proxy, "a.txt", b"spooled")
    await other.delete("a.txt")  # S3 keeps a delete marker
    assert await spooling.flush_spool() == 0
    assert not await spooling.exists("a.txt")
    assert stored_keys(raw, s3_bucket) == []
    assert spooled_manifests(spool_path) == []
    # the deleted bytes are not even a version: the flush sent nothing
    assert [v.size for v in await spooling.list_versions("a.txt")] == [len(b"stored")]


@pytest.mark.s3_needs("marks_missing_deletes")
async def test_flush_drops_a_version_spooled_before_another_servers_delete_of_a_new_key(
    make_backend: MakeBackend, spooling: S3StorageBackend, proxy: FaultProxy, raw: Any,
    s3_bucket: str, spool_path: Path
) -> None:  # fmt: skip
    # S3 keeps a delete marker even for a key it never held: the other server saw the
    # spooled object nowhere, but its delete is still newer than the spooled save
    await spooling.set_versioning(True)
    await spool(spooling, proxy, "a.txt", b"spooled")
    await make_backend().delete("a.txt")
    assert await spooling.flush_spool() == 0
    assert not await spooling.exists("a.txt")
    assert stored_keys(raw, s3_bucket) == []
    assert spooled_manifests(spool_path) == []


class _Later(datetime):
    """This server's clock, two seconds ahead: S3's times are whole seconds."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _Later:
        return cls.fromtimestamp((datetime.now(tz) + timedelta(seconds=2)).timestamp(), tz)


async def test_flush_uploads_a_version_spooled_after_a_delete(
    make_backend: MakeBackend, spooling: S3StorageBackend, proxy: FaultProxy, raw: Any,
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    await spooling.set_versioning(True)
    await spooling.save("a.txt", b"stored")
    await make_backend().delete("a.txt")  # the marker is older than the save below
    monkeypatch.setattr(spool_module, "datetime", _Later)
    await spool(spooling, proxy, "a.txt", b"spooled after the delete")
    assert await spooling.flush_spool() == 1
    assert stored_keys(raw, s3_bucket) == ["storage/a.txt"]
    assert await spooling.load("a.txt") == b"spooled after the delete"


@VERSIONED
async def test_delete_of_a_spooled_key_stays_deleted_after_the_flush(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str,
    spool_path: Path, versioned: bool
) -> None:  # fmt: skip
    if versioned:
        await spooling.set_versioning(True)
    await spooling.save("b.txt", b"stored")
    for key in ("a.txt", "b.txt", "c.txt"):
        await spool(spooling, proxy, key, b"spooled")
    await spooling.delete("a.txt")
    await spooling.delete_many(["b.txt", "c.txt"])
    assert spooled_manifests(spool_path) == []
    assert await spooling.flush_spool() == 0
    assert await spooling.list_files() == []
    assert stored_keys(raw, s3_bucket) == []


@VERSIONED
async def test_delete_while_the_key_is_being_flushed_leaves_it_deleted(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str,
    spool_path: Path, monkeypatch: pytest.MonkeyPatch, versioned: bool
) -> None:  # fmt: skip
    if versioned:
        await spooling.set_versioning(True)
    await spool(spooling, proxy, "a.txt", b"spooled")
    sending = asyncio.Event()
    deleting = asyncio.Event()
    send = spooling._send_spooled
    asked = spool_module.Spool.spooled

    async def slow_send(
        entry: Entry, path: Path, condition: dict[str, str] | None = None
    ) -> str | None:
        sending.set()
        await deleting.wait()  # the delete has looked at the spool: it runs meanwhile
        return await send(entry, path, condition)

    async def observed(self: spool_module.Spool, keys: list[str]) -> list[str]:
        try:
            return await asked(self, keys)
        finally:
            deleting.set()

    monkeypatch.setattr(spooling, "_send_spooled", slow_send)
    monkeypatch.setattr(spool_module.Spool, "spooled", observed)
    flush = asyncio.create_task(spooling.flush_spool())
    await sending.wait()  # the flush holds the spooled copy, on its way to S3
    await spooling.delete("a.txt")
    assert await flush == 1
    assert not await spooling.exists("a.txt")
    assert stored_keys(raw, s3_bucket) == []
    assert spooled_manifests(spool_path) == []


async def test_delete_while_s3_is_down_fails_and_keeps_the_spooled_version(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str
) -> None:
    proxy.refuse()
    await spooling.save("a.txt", b"spooled")
    with pytest.raises(StorageUnavailableError) as info:
        await spooling.delete("a.txt")  # a delete needs S3: it fails, and drops nothing
    assert (info.value.operation, info.value.key) == ("delete", "a.txt")
    assert await spooling.load("a.txt") == b"spooled"
    proxy.restore()
    assert await spooling.flush_spool() == 1
    assert stored_keys(raw, s3_bucket) == ["storage/a.txt"]


@VERSIONED
async def test_a_delete_while_another_process_flushes_the_key_is_not_undone(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str,
    spool_path: Path, tmp_path: Path, versioned: bool
) -> None:  # fmt: skip
    # two workers of one app share the spool folder (one STORAGE_S3_FALLBACK_PATH): the
    # child flushes a.txt, and stops with the key held, before its upload
    spooling = make_backend(fallback_path=spool_path)
    if versioned:
        await spooling.set_versioning(True)
    await spool(spooling, proxy, "a.txt", b"spooled")
    paused, go = tmp_path / "paused", tmp_path / "go"

    async def child() -> int:
        def checked(path: Path, entry: Entry) -> bool:
            paused.touch()
            for _ in range(int(DEADLINE / 0.01)):  # a bound: the parent says go at once
                if go.exists():
                    break
                time.sleep(0.01)  # (in the flush's thread: the child's loop is not blocked)
            return spool_module.intact(path, entry)

        fallback.intact = checked  # the child's copy of the module only
        return await spooling.flush_spool()

    result = forked(in_child(lambda: asyncio.run(child())))
    assert await appears(paused), "the child's flush never reached the key"
    found_held = asyncio.Event()

    async def seen(self: spool_module.Spool) -> None:
        found_held.set()
        go.touch()  # the child's flush goes on: this delete waits for its end

    original = spool_module.Spool._waiting_for_key
    spool_module.Spool._waiting_for_key = seen  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(spooling.delete("a.txt"), timeout=DEADLINE)
    finally:
        spool_module.Spool._waiting_for_key = original  # type: ignore[method-assign]
    assert found_held.is_set(), "the delete did not wait for the other process's flush"
    assert await asyncio.to_thread(result) == 1
    assert not await spooling.exists("a.txt")
    assert stored_keys(raw, s3_bucket) == []
    assert spooled_manifests(spool_path) == []
