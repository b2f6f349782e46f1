"""The fallback spool and versions: a write spooled while S3 was down is the key's newest
version, which list_versions shows and purge_versions(keep=0) erases with the rest."""

from __future__ import annotations

import pytest

from file_storage import S3StorageBackend
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.s3


async def _spooled_over_two(spooling: S3StorageBackend, proxy: FaultProxy) -> None:
    await spooling.set_versioning(True)
    await spooling.save("k.txt", b"one")
    await spooling.save("k.txt", b"two!")
    proxy.refuse()
    await spooling.save("k.txt", b"spooled")  # S3 down: kept in the spool
    proxy.restore()


async def test_a_purge_of_everything_is_not_undone_by_a_spooled_write(
    spooling: S3StorageBackend, proxy: FaultProxy
) -> None:
    await _spooled_over_two(spooling, proxy)
    await spooling.purge_versions("k.txt", keep=0)
    await spooling.flush_spool()
    assert not await spooling.exists("k.txt")  # erased, and it stays so
    assert await spooling.list_versions("k.txt") == []


async def test_list_versions_shows_a_spooled_write_as_the_latest(
    spooling: S3StorageBackend, proxy: FaultProxy
) -> None:
    await _spooled_over_two(spooling, proxy)
    [latest, *older] = await spooling.list_versions("k.txt")
    assert (latest.size, latest.is_latest) == (7, True)  # what load returns
    assert await spooling.load("k.txt", version_id=latest.version_id) == b"spooled"
    assert [v.size for v in older] == [4, 3]
