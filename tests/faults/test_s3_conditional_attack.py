"""Attacks on the S3 conditional write refused by its own landed try (s3._landed): a
write that landed must succeed however the server spells its object back, and however
the client retried; one that did not must stay refused."""

from __future__ import annotations

import base64
import hashlib
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from file_storage import (
    ObjectEvent,
    PreconditionFailedError,
    StorageQuotaExceededError,
    StorageUnavailableError,
)
from tests.faults.conftest import SMALL, MakeBackend, chunks
from tests.faults.proxy import FaultProxy
from tests.quota_redis.server import RedisServer

MiB = 1 << 20

pytestmark = [pytest.mark.s3, pytest.mark.parametrize("client", ["aioboto3", "obstore"])]


async def test_a_create_stored_and_answered_500_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # S3's 500 InternalError may come after the object was stored; both clients retry a
    # 5xx, and the retry is refused because of the first try's object
    backend = make_backend(max_size_bytes=10_000, client=client)
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    proxy.rewrite_status("500 Internal Server Error", match="PUT")
    await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert proxy.count("PUT /") == 2
    info = await backend.stat("k.bin")
    assert seen == [ObjectEvent("created", "k.bin", 600, info.etag)]
    assert (await backend.get_usage("")).used == 600


async def test_a_replace_stored_and_answered_500_is_done(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    client: str,
    s3_bucket: str,
) -> None:
    backend = make_backend(max_size_bytes=10_000, client=client)
    await backend.save("k.bin", b"a" * 100)
    etag = (await backend.stat("k.bin")).etag
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    put = f"PUT /{s3_bucket}/storage/k.bin"
    proxy.rewrite_status("500 Internal Server Error", match=put)
    await backend.save("k.bin", b"b" * 300, if_match=etag)
    info = await backend.stat("k.bin")
    assert await backend.load("k.bin") == b"b" * 300
    assert seen == [ObjectEvent("created", "k.bin", 300, info.etag)]
    assert (await backend.get_usage("")).used == 300


async def test_a_create_refused_after_a_500_that_stored_nothing_is_refused(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # the first try was answered 500 without reaching the server; the retry is refused
    # by another writer's object: looked at, not this write's, refused
    backend = make_backend(client=client)
    await backend.save("k.bin", b"theirs" * 100)
    proxy.fail_next(status=500, code="InternalError", match="PUT")
    with pytest.raises(PreconditionFailedError, match="exists"):
        await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert await backend.load("k.bin") == b"theirs" * 100


def _b_words(text: str) -> str:
    """``text`` as one RFC 2047 B encoded-word (as a server may re-encode it)."""
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


@pytest.mark.parametrize("spelling", ["as sent", "re-encoded"])
async def test_a_create_with_non_ascii_metadata_refused_by_its_own_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, spelling: str
) -> None:
    # S3 decodes RFC 2047 metadata values when storing and encodes them again when
    # answering: the words may differ from the ones sent, the value is the same
    value = "Zoë Ünicode " * 8  # longer than one encoded-word
    backend = make_backend(client=client)
    proxy.cut_response_after(0, match="PUT")
    if spelling == "re-encoded":
        proxy.rewrite_header("x-amz-meta-owner", _b_words(value), match="HEAD")
    await backend.save("k.bin", b"k" * 600, overwrite=False, metadata={"owner": value})
    assert (await backend.stat("k.bin")).metadata == {"owner": value}


async def test_an_empty_create_refused_by_its_own_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    backend = make_backend(max_size_bytes=10_000, client=client)
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    proxy.cut_response_after(0, match="PUT")
    await backend.save("empty.bin", b"", overwrite=False)
    info = await backend.stat("empty.bin")
    assert seen == [ObjectEvent("created", "empty.bin", 0, info.etag)]


async def test_a_create_refused_409_after_its_own_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # the resend meets a concurrent-write conflict (409: the first try still in flight at
    # the server); sent again after it, the write is refused (412) by that first try's
    # object, on a request botocore sent once: the earlier try counts all the same
    backend = make_backend(client=client)
    proxy.cut_response_after(0, match="PUT")
    proxy.fail_next(status=409, code="ConditionalRequestConflict", match="PUT")
    if client == "obstore":  # not resent: an unknown outcome, settled by the look
        proxy.clear()
        proxy.cut_response_after(0, match="PUT")
    await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert await backend.load("k.bin") == b"k" * 600


async def test_a_long_create_from_a_file_with_a_bare_etag_refused_by_its_own_try_is_done(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    client: str,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    # Ceph RGW spells ETags bare; with Content-MD5 only (no CRC32 kept) the composite
    # ETag of the parts alone says the object is this upload's
    backend = make_backend(**SMALL, checksum="md5", client=client)
    seen: list[ObjectEvent] = []
    backend.subscribe(seen.append)
    data = bytes(range(256)) * (11 * MiB // 256)  # three parts
    source = tmp_path / "long.bin"
    source.write_bytes(data)
    completion = f"POST /{s3_bucket}/storage/long.bin?uploadId="
    proxy.cut_response_after(0, match=completion)
    proxy.fail_next(status=412, code="PreconditionFailed", match=completion)
    etag = await _bare_etag_of(data)
    proxy.rewrite_header("ETag", etag, match="HEAD")
    await backend.upload_file(source, "long.bin", overwrite=False)
    assert proxy.count(completion) == 2
    assert await backend.load("long.bin") == data
    etag = f'"{etag}"'
    assert (await backend.stat("long.bin")).etag == etag
    assert seen == [ObjectEvent("created", "long.bin", len(data), etag)]


async def _bare_etag_of(data: bytes) -> str:
    """The composite ETag S3 gives ``data`` uploaded in 5 MiB parts, without quotes."""
    part = 5 * MiB
    digests = b"".join(
        hashlib.md5(data[i : i + part], usedforsecurity=False).digest()
        for i in range(0, len(data), part)
    )
    count = -(-len(data) // part)
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{count}"


async def test_a_create_with_a_non_md5_etag_and_a_kept_crc32_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # SSE-KMS: the ETag is no MD5 of the bytes (moto's is: made another here); the
    # CRC32 S3 keeps tells them
    if client == "obstore":
        pytest.skip("the obstore transport sends no CRC32 for S3 to keep")
    backend = make_backend(checksum="crc32", sse="aws:kms", client=client)
    proxy.cut_response_after(0, match="PUT")
    proxy.rewrite_header("ETag", '"' + "ab" * 16 + '"', match="HEAD")
    await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert await backend.load("k.bin") == b"k" * 600


async def test_a_create_refused_by_its_own_try_is_counted_once_by_a_shared_ledger(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    client: str,
    redis_server: RedisServer,
) -> None:
    options = {"quota_redis_url": redis_server.url, "quota_redis_namespace": uuid.uuid4().hex}
    backend = make_backend(max_size_bytes=1_000, client=client, **options)
    other = make_backend(max_size_bytes=1_000, client=client, **options)  # a second process
    proxy.cut_response_after(0, match="PUT /")
    await backend.save("a.bin", b"a" * 400, overwrite=False)
    proxy.rewrite_status("500 Internal Server Error", match="PUT /")
    await backend.save("b.bin", b"b" * 400, overwrite=False)
    assert (await other.get_usage("")).used == 800
    with pytest.raises(StorageQuotaExceededError):
        await other.save("c.bin", b"c" * 300)


def _same_crc32(data: bytes) -> bytes:
    """Other bytes of ``data``'s length and CRC32 (its first byte changed, its last four
    chosen to make up for it: CRC32 is linear, anyone can forge one)."""

    def delta(diff: bytes) -> int:  # the CRC32 change a difference of these bytes makes
        return zlib.crc32(diff) ^ zlib.crc32(bytes(len(diff)))

    size = len(data)
    target = delta(b"\x01" + bytes(size - 1))
    rows: list[tuple[int, int]] = []  # (delta, bits of the tail) in echelon form
    for bit in range(32):
        tail = (1 << bit).to_bytes(4, "big")
        value, bits = delta(bytes(size - 4) + tail), 1 << bit
        for pivot_value, pivot_bits in rows:
            if value ^ pivot_value < value:
                value, bits = value ^ pivot_value, bits ^ pivot_bits
        if value:
            rows.append((value, bits))
    rows.sort(reverse=True)
    value, bits = target, 0
    for pivot_value, pivot_bits in rows:
        if value ^ pivot_value < value:
            value, bits = value ^ pivot_value, bits ^ pivot_bits
    assert value == 0
    diff = b"\x01" + bytes(size - 5) + bits.to_bytes(4, "big")
    forged = bytes(a ^ b for a, b in zip(data, diff, strict=True))
    assert forged != data
    assert zlib.crc32(forged) == zlib.crc32(data)
    return forged


async def test_a_create_refused_by_another_writers_crc32_look_alike_is_refused(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # another writer stored other bytes of the same size and CRC32 (and headers) just
    # before; this write's first try never reached S3 (500), its retry is refused. The
    # ETag, an MD5 of other bytes (no SSE-KMS), says the object is not this write's
    mine = b"k" * 600
    theirs = _same_crc32(mine)
    writer = make_backend(checksum="crc32")
    await writer.save("k.bin", theirs)
    backend = make_backend(checksum="crc32", client=client)
    proxy.fail_next(status=500, code="InternalError", match="PUT")
    with pytest.raises(PreconditionFailedError, match="exists"):
        await backend.save("k.bin", mine, overwrite=False)
    assert await backend.load("k.bin") == theirs


async def test_a_create_whose_every_answer_was_lost_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    # the first try stored it; every answer, refusals included, is lost: an outage whose
    # outcome the look settles
    backend = make_backend(max_size_bytes=10_000, client=client)
    proxy.cut_response_after(0, times=3, match="PUT")
    await backend.save("k.bin", b"k" * 600, overwrite=False, metadata={"note": "", "a": "=?x"})
    assert proxy.count("PUT /") == (3 if client == "aioboto3" else 1)
    assert (await backend.get_usage("")).used == 600


async def test_a_spooling_backends_create_refused_by_its_own_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, spool_path: Path
) -> None:
    backend = make_backend(max_size_bytes=10_000, client=client, fallback_path=spool_path)
    proxy.cut_response_after(0, match="PUT")
    await backend.save("k.bin", b"k" * 600, overwrite=False)
    proxy.refuse()  # read from S3 alone: nothing of it waits in the spool
    with pytest.raises(StorageUnavailableError):
        await backend.load("k.bin")
    proxy.restore()
    assert await backend.load("k.bin") == b"k" * 600
    assert (await backend.get_usage("")).used == 600


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        ({"cache_control": "max-age=60"}, {}),
        ({}, {"content_disposition": "attachment"}),
        ({"cache_control": "max-age=60"}, {"cache_control": "no-store"}),
    ],
)
async def test_a_create_refused_by_an_object_with_other_stored_headers_is_refused(
    make_backend: MakeBackend,
    proxy: FaultProxy,
    client: str,
    mine: dict[str, str],
    theirs: dict[str, str],
) -> None:
    # the same bytes, content type and metadata, stored by another writer just before;
    # this write's first try never reached S3 (500): the headers it asked for are not
    # the object's, so the object is not its own
    writer = make_backend()
    await writer.save("k.bin", b"k" * 600, **theirs)
    backend = make_backend(client=client)
    proxy.fail_next(status=500, code="InternalError", match="PUT")
    with pytest.raises(PreconditionFailedError, match="exists"):
        await backend.save("k.bin", b"k" * 600, overwrite=False, **mine)


async def test_a_create_with_stored_headers_refused_by_its_own_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str
) -> None:
    backend = make_backend(client=client)
    headers = {"cache_control": "max-age=60", "content_disposition": "attachment"}
    proxy.cut_response_after(0, match="PUT")
    await backend.save("k.bin", b"k" * 600, overwrite=False, **headers)
    assert await backend.load("k.bin") == b"k" * 600


@pytest.mark.parametrize(
    "spelling",
    [
        "%a, %d %b %Y %H:%M:%S -0000",  # RFC 5322's UTC of no known zone
        "%a, %d %b %Y %H:%M:%S",  # no zone: HTTP dates are GMT
        "%A, %d-%b-%y %H:%M:%S GMT",  # RFC 850, which HTTP/1.1 clients must accept
        "%a %b %d %H:%M:%S %Y",  # asctime, which they must accept too
    ],
)
async def test_a_create_refused_by_its_own_try_with_an_oddly_spelled_date_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, spelling: str
) -> None:
    backend = make_backend(client=client)
    proxy.cut_response_after(0, match="PUT")
    now = datetime.now(UTC).strftime(spelling)
    proxy.rewrite_header("Date", now, match="HEAD")
    await backend.save("k.bin", b"k" * 600, overwrite=False)
    assert await backend.load("k.bin") == b"k" * 600


async def test_a_long_create_refused_after_a_409_that_followed_its_own_try_is_done(
    make_backend: MakeBackend, proxy: FaultProxy, client: str, s3_bucket: str
) -> None:
    # the completion's answer is lost; botocore's resend meets a 409 (raced by the first
    # try, still in flight at the server); sent again after the 409, it is refused (412)
    # because of that first try's object, on a request botocore sent once
    backend = make_backend(**SMALL, client=client)
    data = bytes(range(256)) * (11 * MiB // 256)
    completion = f"POST /{s3_bucket}/storage/long.bin?uploadId="
    proxy.cut_response_after(0, match=completion)
    proxy.fail_next(status=409, code="ConditionalRequestConflict", match=completion)
    proxy.fail_next(status=412, code="PreconditionFailed", match=completion)
    await backend.save("long.bin", chunks(data), overwrite=False)
    assert proxy.count(completion) == 3
    assert await backend.load("long.bin") == data
