"""The S3 fallback spool's lock files (``keys.lock``, ``flush.lock``) replaced by what an
attacker with a way into the folder plants: a link out of it, a folder, a FIFO."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from file_storage import S3StorageBackend, StorageConfigError
from tests.faults.proxy import FaultProxy
from tests.s3util import stored_keys

pytestmark = pytest.mark.s3


def plant(path: Path, kind: str, outside: Path) -> None:
    path.unlink(missing_ok=True)
    if kind == "link":
        path.symlink_to(outside)
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)


@pytest.mark.parametrize("kind", ["link", "folder"])
async def test_a_keys_lock_replaced_by_a_link_or_folder_fails_writes_as_a_config_error(
    spooling: S3StorageBackend, spool_path: Path, tmp_path: Path, raw: object, s3_bucket: str,
    kind: str
) -> None:  # fmt: skip
    # a folder read as "a key cannot be both an object and a folder", naming the key
    await spooling.save("first.txt", b"1")
    outside = tmp_path / "outside"
    plant(spool_path / "keys.lock", kind, outside)
    with pytest.raises(StorageConfigError) as caught:
        await spooling.save("a.txt", b"x")
    assert (caught.value.operation, caught.value.key) == ("save", "a.txt")
    assert "keys.lock" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)
    assert not outside.exists()
    assert stored_keys(raw, s3_bucket) == ["storage/first.txt"]


async def test_a_keys_lock_replaced_by_a_fifo_still_orders_keys(
    spooling: S3StorageBackend, spool_path: Path, tmp_path: Path
) -> None:
    # opened O_RDWR a FIFO never blocks (Linux), and its record locks work as a file's
    await spooling.save("first.txt", b"1")
    plant(spool_path / "keys.lock", "fifo", tmp_path / "outside")
    await spooling.save("a.txt", b"x")
    assert await spooling.load("a.txt") == b"x"


async def test_a_flush_lock_replaced_by_a_link_out_creates_nothing_outside(
    spooling: S3StorageBackend, spool_path: Path, tmp_path: Path, proxy: FaultProxy
) -> None:
    # the flush opened flush.lock with O_CREAT through the link: an empty file appeared
    # wherever the link pointed
    proxy.refuse()
    await spooling.save("a.txt", b"spooled")
    proxy.restore()
    outside = tmp_path / "outside"
    plant(spool_path / "flush.lock", "link", outside)
    with pytest.raises(StorageConfigError) as caught:
        await spooling.flush_spool()
    assert caught.value.operation == "flush_spool"
    assert "flush.lock" in str(caught.value)
    assert not outside.exists()
    assert await spooling.load("a.txt") == b"spooled"  # still spooled, still read
