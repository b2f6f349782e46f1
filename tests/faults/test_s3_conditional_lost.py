"""A conditional S3 write whose answer was lost: the client sends it again, and S3
refuses the resend because of the first try itself, which landed. The write is a
success: the key holds its object. A refusal by any other object stands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from file_storage import (
    ObjectEvent,
    PreconditionFailedError,
    StorageQuotaExceededError,
    StorageUnavailableError,
)
from tests.faults.conftest import ATTEMPTS, SMALL, MakeBackend, chunks
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.s3, pytest.mark.parametrize("client", ["aioboto3", "obstore"])]

MiB = 1 << 20


async def test_a_create_refused_by_its_own_landed_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    backend = make_backend(max_size_bytes=10_000, client=client)
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    await backend.save("other.bin", b"o" * 100)
    proxy.cut_response_after(0, match="PUT")  # stored, never answered: resent, refused
    assert await backend.save("k.bin", b"k" * 600, overwrite=False) == "k.bin"
    # other.bin, then k.bin: resent by botocore and refused; obstore does not resend a
    # conditional write (an unknown outcome), and the key is looked at all the same
    assert proxy.count("PUT /") == (3 if client == "aioboto3" else 2)
    info = await backend.stat("k.bin")
    assert await backend.load("k.bin") == b"k" * 600
    assert seen[-1] == ObjectEvent("created", "k.bin", 600, info.etag)
    assert (await backend.get_usage("")).used == 700  # counted once
    # and a quota that is full by it refuses the next write
    backend.set_quota("", 750)
    with pytest.raises(StorageQuotaExceededError):
        await backend.save("more.bin", b"m" * 100)


async def test_a_replace_refused_by_its_own_landed_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, s3_bucket: str
) -> None:
    backend = make_backend(max_size_bytes=10_000, client=client)
    await backend.save("k.bin", b"a" * 100, metadata={"v": "1"})
    etag = (await backend.stat("k.bin")).etag
    proxy.cut_response_after(0, match=f"PUT /{s3_bucket}/storage/k.bin")  # not the probe's
    await backend.save("k.bin", b"b" * 300, metadata={"v": "2"}, if_match=etag)
    info = await backend.stat("k.bin")
    assert (info.size, info.metadata, info.etag != etag) == (300, {"v": "2"}, True)
    assert (await backend.get_usage("")).used == 300
    # the refusal stands for the writer that still names the old version
    with pytest.raises(PreconditionFailedError):
        await backend.save("k.bin", b"c" * 10, if_match=etag)


@pytest.mark.parametrize("resend_answer", ["moto's", "412", "none"])
async def test_a_long_create_whose_completion_answer_was_lost_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, s3_bucket: str, resend_answer: str
) -> None:
    # the resent completion finds its upload done: moto answers NoSuchUpload; a server
    # that checks If-None-Match first answers 412, because of the object it just made;
    # or no resend is answered either
    backend = make_backend(**SMALL, client=client)
    data = bytes(range(256)) * (12 * MiB // 256)  # three parts
    completion = f"POST /{s3_bucket}/storage/long.bin?uploadId="
    proxy.cut_response_after(0, match=completion)  # done, never answered: resent
    if resend_answer == "412":
        proxy.fail_next(status=412, code="PreconditionFailed", match=completion)
    if resend_answer == "none":  # every answer lost: the outcome is looked up
        proxy.cut_response_after(0, match=completion, times=ATTEMPTS - 1)
    await backend.save("long.bin", chunks(data), overwrite=False)
    assert proxy.count(completion) == (ATTEMPTS if resend_answer == "none" else 2)
    assert await backend.load("long.bin") == data


@pytest.mark.parametrize(
    "other",
    [
        {"metadata": {"owner": "b"}},  # the same bytes, other metadata
        {"content_type": "text/plain"},
        {"bytes": b"x" * 600},  # the same size and headers, other bytes
    ],
)
async def test_a_create_refused_by_another_writers_look_alike_is_refused(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, other: dict[str, Any]
) -> None:
    backend = make_backend(client=client)
    mine: dict[str, Any] = {"metadata": {"owner": "a"}, "content_type": "application/x-k"}
    theirs = {**mine, **other}
    await backend.save("k.bin", theirs.pop("bytes", b"k" * 600), **theirs)
    with pytest.raises(PreconditionFailedError, match="exists"):
        await backend.save("k.bin", b"k" * 600, overwrite=False, **mine)


async def test_a_create_refused_by_an_identical_object_stored_before_it_is_refused(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # the key held exactly these bytes and headers before the write began: it is not the
    # write's own, which the server's clock tells (moved on here: the HEAD's Date is a
    # minute later, as if the object had been stored a minute before). The refusal's
    # answer is lost, so the key is looked at: botocore resends and is refused again;
    # obstore does not resend, and the outcome stays unknown
    backend = make_backend(client=client)
    await backend.save("k.bin", b"k" * 600)
    later = datetime.now(UTC) + timedelta(minutes=1)
    proxy.cut_response_after(0, match="PUT")
    proxy.rewrite_header("Date", format_datetime(later, usegmt=True), match="HEAD")
    expected = PreconditionFailedError if client == "aioboto3" else StorageUnavailableError
    with pytest.raises(expected):
        await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert proxy.count("HEAD /") == 1  # it was looked at


async def test_a_create_refused_on_its_only_try_is_refused_without_a_look(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # as on every backend: an identical object stored just before is no write of this one
    backend = make_backend(client=client)
    await backend.save("k.bin", b"k" * 600)
    with pytest.raises(PreconditionFailedError, match="exists"):
        await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert (proxy.count("PUT /"), proxy.count("HEAD /")) == (2, 0)
