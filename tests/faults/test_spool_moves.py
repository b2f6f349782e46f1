"""The S3 fallback spool and a move's conditional delete of its source: never spooled (a
condition cannot wait in the spool for a later flush), and a spooled source is deleted
only while it is the version the move found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from file_storage import PreconditionFailedError, S3StorageBackend, StorageUnavailableError
from file_storage.backends._write_options import PLAIN, WriteOptions
from tests.faults.conftest import ATTEMPTS
from tests.faults.proxy import FaultProxy
from tests.s3util import stored_keys

pytestmark = pytest.mark.s3


def spooled_manifests(spool_path: Path) -> list[str]:
    return sorted(p.name for p in (spool_path / "entries").glob("*.json"))


async def spool(backend: S3StorageBackend, proxy: FaultProxy, key: str, body: bytes) -> None:
    """Save ``key`` while S3 is unreachable (so it is spooled), then bring S3 back."""
    proxy.refuse()
    await backend.save(key, body)
    proxy.restore()


async def test_a_moves_delete_while_s3_is_down_fails_typed_and_spools_nothing(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    await spooling.save("first", b"")
    await spooling.move("first", "moved")  # learns what the server checks, once
    await spooling.delete("moved")
    await spooling.save("src.txt", b"kept")
    proxy.fail_next(ATTEMPTS, status=503, code="ServiceUnavailable", match="DELETE")
    with pytest.raises(StorageUnavailableError) as info:
        await spooling.move("src.txt", "dst.txt")
    assert (info.value.operation, info.value.key) == ("move", "src.txt")
    assert stored_keys(raw, s3_bucket) == ["storage/dst.txt", "storage/src.txt"]
    assert spooled_manifests(spool_path) == []  # no delete waits to be replayed later
    assert await spooling.flush_spool() == 0
    assert await spooling.load("src.txt") == b"kept"


async def test_a_spooled_source_moves_with_the_older_s3_object_it_replaced(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    await spooling.save("src.txt", b"in s3")
    await spool(spooling, proxy, "src.txt", b"spooled")
    await spooling.move("src.txt", "dst.txt")
    assert await spooling.load("dst.txt") == b"spooled"
    assert not await spooling.exists("src.txt")
    assert stored_keys(raw, s3_bucket) == ["storage/dst.txt"]
    assert spooled_manifests(spool_path) == []


async def test_a_spooled_source_spooled_again_after_the_copy_is_kept(
    spooling: S3StorageBackend,
    proxy: FaultProxy,
    spool_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await spool(spooling, proxy, "src.txt", b"old")
    copy = spooling._copy

    async def copy_then_spooled_again(
        src: str, dst: str, options: WriteOptions = PLAIN
    ) -> str | None:
        etag = await copy(src, dst, options)
        await spool(spooling, proxy, "src.txt", b"new")
        return etag

    monkeypatch.setattr(spooling, "_copy", copy_then_spooled_again)
    with pytest.raises(PreconditionFailedError):
        await spooling.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert (await spooling.load("src.txt"), await spooling.load("dst.txt")) == (b"new", b"old")
    assert len(spooled_manifests(spool_path)) == 1  # the new version, still to be flushed


@pytest.mark.s3_needs("if_match_on_delete")
@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
async def test_a_direct_s3_write_under_a_spooled_source_during_its_move_is_kept(
    client: str,
    make_backend: Any,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    spool_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # another process, outside this spool, writes the key straight to S3 just before the
    # move deletes S3's older object under the spooled source: that delete takes only
    # what S3 held when the move looked (If-Match), so the other process's write stays
    spooling: S3StorageBackend = make_backend(fallback_path=spool_path, client=client)
    await spooling.save("src.txt", b"in s3")
    await spool(spooling, proxy, "src.txt", b"spooled")
    s3 = await spooling._client()
    delete_object = s3.delete_object

    async def written_from_outside_first(**params: Any) -> Any:
        if params["Key"] == "storage/src.txt":
            raw.put_object(Bucket=s3_bucket, Key="storage/src.txt", Body=b"outside")
        return await delete_object(**params)

    monkeypatch.setattr(s3, "delete_object", written_from_outside_first)
    with pytest.raises(PreconditionFailedError) as info:
        await spooling.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert (info.value.operation, info.value.key) == ("move", "src.txt")
    assert raw.get_object(Bucket=s3_bucket, Key="storage/src.txt")["Body"].read() == b"outside"
    assert await spooling.load("dst.txt") == b"spooled"


async def test_a_spooled_source_on_a_server_that_ignores_if_match_on_delete_moves_plainly(
    spooling: S3StorageBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    # as a Ceph RGW 16 probe finds: S3's object under the spooled source goes with the
    # plain delete of before, unlooked at (no HEAD first), and the move is done
    spooling._conditions.delete_probed, spooling._conditions.delete_form = True, None
    await spooling.save("src.txt", b"in s3")
    await spool(spooling, proxy, "src.txt", b"spooled")
    await spooling.move("src.txt", "dst.txt")
    assert stored_keys(raw, s3_bucket) == ["storage/dst.txt"]
    assert spooled_manifests(spool_path) == []
