"""The S3 fallback spool's flush sends a spooled version only over what its check saw:
``If-Match`` the object the flush's ``HEAD`` found (older than the spooled write), or
``If-None-Match: *`` when it found none. A write or delete another server makes between
that check and the upload (in any bucket, versioned or not) is newer than the spooled
write: it wins, and the spooled version is dropped, not sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from file_storage import S3StorageBackend
from tests.faults.conftest import SMALL, MakeBackend, MiB
from tests.faults.proxy import FaultProxy
from tests.faults.test_spool import s3_body, spool_files
from tests.s3util import open_uploads, stored_keys

pytestmark = pytest.mark.s3


async def spool(backend: S3StorageBackend, proxy: FaultProxy, key: str, body: bytes) -> None:
    """Save ``key`` while S3 is unreachable (so it is spooled), then bring S3 back."""
    proxy.refuse()
    await backend.save(key, body)
    proxy.restore()


def after_heads(backend: S3StorageBackend, *meanwhile: Callable[[], Any]) -> None:
    """Run each of ``meanwhile`` (another server's call, in a thread) right after the
    backend's next ``HEAD``s, one per ``HEAD``: the first, after the flush's check, before
    its upload."""
    head = backend._head
    steps = list(meanwhile)

    async def hooked(key: str) -> dict[str, Any]:
        try:
            return await head(key)
        finally:
            if steps:
                await asyncio.to_thread(steps.pop(0))

    backend._head = hooked  # type: ignore[method-assign]


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
async def test_a_delete_between_the_flush_check_and_its_upload_stays_deleted(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str,
    spool_path: Path, client: str
) -> None:  # fmt: skip
    # a bucket never versioned: nothing but the condition tells the upload of the delete
    spooling = make_backend(fallback_path=spool_path, client=client)
    await spooling.save("a.txt", b"stored before the outage")
    await spool(spooling, proxy, "a.txt", b"spooled")
    after_heads(spooling, lambda: raw.delete_object(Bucket=s3_bucket, Key="storage/a.txt"))
    assert await spooling.flush_spool() == 0
    assert stored_keys(raw, s3_bucket) == []
    assert spool_files(spool_path) == []


@pytest.mark.parametrize("stored", [True, False], ids=["write", "create"])
async def test_a_write_between_the_flush_check_and_its_upload_is_kept(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    spool_path: Path,
    stored: bool,
) -> None:
    # over an object the check saw, or where it saw none (another server's first write
    # of the key): the other server's write is newer
    spooling = make_backend(fallback_path=spool_path)
    if stored:
        await spooling.save("a.txt", b"stored before the outage")
    await spool(spooling, proxy, "a.txt", b"spooled")
    newer = b"newer, from another server"
    after_heads(spooling, lambda: raw.put_object(Bucket=s3_bucket, Key="storage/a.txt", Body=newer))
    assert await spooling.flush_spool() == 0
    assert s3_body(raw, s3_bucket, "a.txt") == newer
    assert spool_files(spool_path) == []


async def test_a_flush_with_nothing_changed_meanwhile_still_sends_the_spooled_version(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    spooling = make_backend(fallback_path=spool_path)
    await spooling.save("a.txt", b"stored before the outage")
    await spool(spooling, proxy, "a.txt", b"spooled over an object")
    await spool(spooling, proxy, "b.txt", b"spooled, a new key")
    assert await spooling.flush_spool() == 2
    assert s3_body(raw, s3_bucket, "a.txt") == b"spooled over an object"
    assert s3_body(raw, s3_bucket, "b.txt") == b"spooled, a new key"
    assert spool_files(spool_path) == []


@pytest.mark.parametrize("stored", [True, False], ids=["over-an-object", "new-key"])
async def test_a_flush_whose_answer_was_lost_counts_its_own_upload(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    spool_path: Path,
    stored: bool,
) -> None:
    # the upload lands and its answer is lost (as a read timeout under load): botocore
    # sends it again, and S3 refuses the resend's condition because of that very
    # upload. The spooled version is in S3: flushed, not dropped as another's write
    spooling = make_backend(fallback_path=spool_path)
    events: list[Any] = []
    spooling.subscribe(events.append)
    if stored:
        await spooling.save("a.txt", b"stored before the outage")
    await spool(spooling, proxy, "a.txt", b"spooled")
    proxy.cut_response_after(0, match="PUT")
    assert await spooling.flush_spool() == 1
    assert proxy.count("PUT") >= 2  # the resend was made (and refused)
    assert s3_body(raw, s3_bucket, "a.txt") == b"spooled"
    assert spool_files(spool_path) == []
    assert [(e.type, e.key, e.size) for e in events][-1] == ("created", "a.txt", 7)


@pytest.mark.s3_needs("conditional_completion")
async def test_a_create_between_the_check_and_a_multipart_flush_is_kept(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    # above the threshold the condition goes on the completion, where the server (probed
    # once) checks it
    spooling = make_backend(fallback_path=spool_path, **SMALL)
    await spool(spooling, proxy, "big.bin", b"s" * (6 * MiB))
    newer = b"newer, from another server"
    after_heads(
        spooling, lambda: raw.put_object(Bucket=s3_bucket, Key="storage/big.bin", Body=newer)
    )
    assert await spooling.flush_spool() == 0
    assert s3_body(raw, s3_bucket, "big.bin") == newer
    assert spool_files(spool_path) == []
    assert open_uploads(raw, s3_bucket) == []
