"""A flush whose conditional upload S3 refused reads S3's object back, to tell its own
first try (landed, its answer lost, the resend refused by it) from another server's
write. Another server's write during that read-back is newer, and wins."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest

import file_storage._spool
from file_storage import StorageUnavailableError
from tests.faults.conftest import ATTEMPTS, MakeBackend
from tests.faults.proxy import FaultProxy
from tests.faults.test_spool import s3_body, spool_files
from tests.faults.test_spool_conditional import after_heads, spool

pytestmark = pytest.mark.s3


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
async def test_a_write_during_the_read_back_of_a_refused_flush_wins(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str,
    spool_path: Path, client: str
) -> None:  # fmt: skip
    # another server writes the key after the flush's check (the upload is refused),
    # with bytes of the spooled size and type; and again after the read-back's HEAD:
    # its GET finds another object, newer than the spooled version
    spooling = make_backend(fallback_path=spool_path, client=client)
    await spool(spooling, proxy, "a.txt", b"spooled")
    events: list[Any] = []
    spooling.subscribe(events.append)

    def put(body: bytes) -> Callable[[], Any]:
        return lambda: raw.put_object(
            Bucket=s3_bucket, Key="storage/a.txt", Body=body, ContentType="text/plain"
        )

    after_heads(spooling, put(b"other 1"), put(b"newer, the last"))
    assert await spooling.flush_spool() == 0
    assert s3_body(raw, s3_bucket, "a.txt") == b"newer, the last"
    assert spool_files(spool_path) == []
    assert events == []


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
async def test_a_refused_flush_finding_the_same_bytes_with_other_metadata_is_dropped(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str,
    spool_path: Path, client: str
) -> None:  # fmt: skip
    # another server stores the spooled bytes and type with metadata of its own after
    # the flush's check: its object is newer and stays; the spooled version, with other
    # metadata, is not what S3 holds, so it is dropped, never announced as flushed
    spooling = make_backend(fallback_path=spool_path, client=client)
    proxy.refuse()
    await spooling.save("a.txt", b"spooled", metadata={"who": "spool"})
    proxy.restore()
    events: list[Any] = []
    spooling.subscribe(events.append)
    after_heads(
        spooling,
        lambda: raw.put_object(
            Bucket=s3_bucket,
            Key="storage/a.txt",
            Body=b"spooled",
            ContentType="text/plain",
            Metadata={"who": "other"},
        ),
    )
    assert await spooling.flush_spool() == 0
    assert raw.head_object(Bucket=s3_bucket, Key="storage/a.txt")["Metadata"] == {"who": "other"}
    assert spool_files(spool_path) == []
    assert events == []


async def test_an_if_match_naming_a_version_flushed_on_read_back_holds(
    make_backend: MakeBackend, proxy: FaultProxy, raw: Any, s3_bucket: str, spool_path: Path
) -> None:
    # the flush's upload lands, its answer lost; the resend is refused by it and the
    # read-back finds the spooled bytes: an if_match naming the spooled version names
    # what S3 holds, and the write conditional on it goes through
    spooling = make_backend(fallback_path=spool_path)
    await spool(spooling, proxy, "a.txt", b"spooled")
    etag = (await spooling.stat("a.txt")).etag
    proxy.cut_response_after(0, match="PUT")
    await spooling.save("a.txt", b"after it", if_match=etag)
    assert proxy.count("PUT") >= 3  # the flush, its resend, the write
    assert s3_body(raw, s3_bucket, "a.txt") == b"after it"
    assert spool_files(spool_path) == []


class _AMinuteAgo(datetime):
    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) - timedelta(minutes=1)


@pytest.mark.parametrize("look", ["answered", "unanswered"])
async def test_a_flush_whose_every_answer_was_lost_is_counted_once_done(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    raw: Any,
    s3_bucket: str,
    spool_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    look: str,
) -> None:
    # the upload lands, and every answer (the resends' too) is lost: the flush looks at
    # the key, finds its own object (the spooled bytes, stored since it began) and is
    # done. When that look gets no answer either, the flush fails and the version stays
    # spooled; the next flush's check finds S3's object written after the spooled write:
    # it is the flush's own, not another server's newer write. Flushed and announced
    # once, never dropped
    spooling = make_backend(fallback_path=spool_path)
    with monkeypatch.context() as patch:
        patch.setattr(file_storage._spool, "datetime", _AMinuteAgo)  # S3 back a minute on
        await spool(spooling, proxy, "a.txt", b"spooled")
    events: list[Any] = []
    spooling.subscribe(events.append)
    a_txt = f"PUT /{s3_bucket}/storage/a.txt"
    proxy.cut_response_after(0, times=ATTEMPTS, match=a_txt)
    if look == "answered":
        assert await spooling.flush_spool() == 1
    else:  # the HEADs after the flush's check (its first) fail
        after_heads(spooling, lambda: proxy.fail_next(ATTEMPTS, match="HEAD"))
        with pytest.raises(StorageUnavailableError):
            await spooling.flush_spool()
        assert s3_body(raw, s3_bucket, "a.txt") == b"spooled"
        proxy.clear()
        assert await spooling.flush_spool() == 1
    assert spool_files(spool_path) == []
    assert s3_body(raw, s3_bucket, "a.txt") == b"spooled"
    assert [(e.type, e.key, e.size) for e in events] == [("created", "a.txt", 7)]
