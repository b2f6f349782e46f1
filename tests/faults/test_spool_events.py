"""Events of the S3 fallback spool: a spooled write is "created" when it succeeds, and
again when flush_spool() puts it in S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from file_storage import ObjectEvent
from tests.faults.conftest import MakeBackend
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.s3


async def test_flush_emits_created_with_the_etag_s3_stored(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    spooling = make_backend(fallback_path=tmp_path / "spool")
    seen: list[ObjectEvent] = []
    spooling.subscribe(seen.append)
    proxy.refuse()
    await spooling.save("a.txt", b"hello")
    assert [(e.type, e.key, e.size) for e in seen] == [("created", "a.txt", 5)]
    proxy.restore()
    seen.clear()
    assert await spooling.flush_spool() == 1
    etag = raw.head_object(Bucket=s3_bucket, Key="storage/a.txt")["ETag"]
    assert seen == [ObjectEvent("created", "a.txt", 5, etag)]


async def test_flush_with_nothing_spooled_emits_nothing(
    make_backend: MakeBackend, tmp_path: Path
) -> None:
    spooling = make_backend(fallback_path=tmp_path / "spool")
    seen: list[ObjectEvent] = []
    spooling.subscribe(seen.append)
    assert await spooling.flush_spool() == 0
    assert seen == []


async def test_copy_of_a_spooled_source_emits_the_etag_its_upload_stored(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # S3 is back: the copy uploads the spooled source to dst; another process writing dst
    # before the event is made does not lend the event its ETag
    spooling = make_backend(fallback_path=tmp_path / "spool")
    proxy.refuse()
    await spooling.save("a.txt", b"hello")
    proxy.restore()
    seen: list[ObjectEvent] = []
    spooling.subscribe(seen.append)
    real_copy = spooling._copy

    async def then_a_rival(*args: Any) -> str | None:
        etag: str | None = await real_copy(*args)
        raw.put_object(Bucket=s3_bucket, Key="storage/b.txt", Body=b"a rival's object")
        return etag

    monkeypatch.setattr(spooling, "_copy", then_a_rival)
    await spooling.copy("a.txt", "b.txt")
    rival = raw.head_object(Bucket=s3_bucket, Key="storage/b.txt")["ETag"]
    [event] = seen
    assert (event.type, event.key) == ("created", "b.txt")
    assert event.etag is not None
    assert event.etag != rival
