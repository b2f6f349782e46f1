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
