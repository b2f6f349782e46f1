"""What only the S3 backend has: prefix layout, multipart, ranged GETs, signing, the client.

The moto server is observed with a plain boto3 client; nothing about the server is mocked.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from file_storage import (
    InvalidKeyError,
    ObjectInfo,
    ObjectNotFoundError,
    PreconditionFailedError,
    S3StorageBackend,
    StorageBackend,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)
from file_storage.backends.s3._errors import batch_delete_error, is_outage, map_s3_error
from tests.backends.conftest import SMALL, MiB, client_of
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET
from tests.s3util import MakeBackend, closed_port, stored_keys

pytestmark = pytest.mark.s3

# ---------------------------------------------------------------- layout


async def test_keys_are_stored_under_the_prefix(
    s3_backend: StorageBackend, raw: Any, s3_bucket: str
) -> None:
    await s3_backend.save("a/b.txt", b"x")
    raw.put_object(Bucket=s3_bucket, Key="outside.txt", Body=b"y")
    assert sorted(stored_keys(raw, s3_bucket)) == ["outside.txt", "storage/a/b.txt"]
    assert await s3_backend.list_files() == ["a/b.txt"]
    assert not await s3_backend.exists("outside.txt")


async def test_empty_prefix_uses_the_bucket_root(
    make_backend: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend(prefix="")
    await backend.save("a/b.txt", b"x")
    assert stored_keys(raw, s3_bucket) == ["a/b.txt"]
    assert await backend.list_dirs() == ["a"]


async def test_key_overflowing_1024_bytes_with_the_prefix_is_rejected(
    s3_backend: StorageBackend, raw: Any, s3_bucket: str
) -> None:
    segments = "/".join(["s" * 200] * 5)  # 1004 bytes
    fits = segments + "/" + "k" * 11  # 1016 + len("storage/") = 1024
    with pytest.raises(InvalidKeyError) as info:
        await s3_backend.save(fits + "x", b"x")
    assert info.value.operation == "save"
    await s3_backend.save(fits, b"x")
    assert [len(k.encode()) for k in stored_keys(raw, s3_bucket)] == [1024]


async def test_listings_skip_names_outside_the_key_grammar(
    s3_backend: StorageBackend, raw: Any, s3_bucket: str
) -> None:
    for name in ("storage/console-folder/", "storage/a//b", "storage/ok/c.txt"):
        raw.put_object(Bucket=s3_bucket, Key=name, Body=b"")
    assert await s3_backend.list_files() == ["ok/c.txt"]


async def test_listing_order_is_pythons_sorted_order(s3_backend: StorageBackend) -> None:
    # UTF-16 would put U+1F600 (a surrogate pair) before U+FB01; code points do not
    keys = ["z.txt", "\ufb01.txt", "\U0001f600.txt", "A.txt", "a-b/c.txt", "a/b.txt"]
    for key in keys:
        await s3_backend.save(key, b"x")
    assert await s3_backend.list_files() == sorted(keys)


# ---------------------------------------------------------------- deletes, downloads, copies


async def test_delete_many_sends_batches_of_1000(s3_backend: StorageBackend, raw: Any) -> None:
    await s3_backend.save("k0001", b"x")
    await s3_backend.save("k2500", b"x")
    batches: list[int] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        batches.append(len(params["Delete"]["Objects"]))

    client = await client_of(s3_backend)
    client.meta.events.register("provide-client-params.s3.DeleteObjects", record)
    # missing keys are fine: deleting is idempotent
    await s3_backend.delete_many(f"k{i:04}" for i in range(2501))
    assert batches == [1000, 1000, 501]
    assert await s3_backend.list_files() == []


@pytest.mark.parametrize(
    ("codes", "expected", "named"),
    [
        (["SlowDown", "AccessDenied"], StoragePermissionError, "k1"),
        (["AccessDenied", "InternalError"], StoragePermissionError, "k0"),
        (["InternalError", "InvalidArgument"], StorageError, "k1"),
        (["InvalidArgument", "SlowDown"], StorageError, "k0"),
        (["SlowDown", "InternalError"], StorageUnavailableError, "k0"),
    ],
)
async def test_delete_many_with_mixed_refusals_reports_the_most_severe(
    s3_backend: StorageBackend, codes: list[str], expected: type[Exception], named: str
) -> None:
    # DeleteObjects refuses keys one by one, each with its code: a key denied among keys
    # throttled cannot be fixed by retrying, whatever order S3 lists them in
    def refuse(parsed: dict[str, Any], **_: Any) -> None:
        parsed["Errors"] = [
            {"Key": f"storage/k{i}", "Code": code, "Message": "refused"}
            for i, code in enumerate(codes)
        ]

    (await client_of(s3_backend)).meta.events.register("after-call.s3.DeleteObjects", refuse)
    with pytest.raises(StorageError) as info:
        await s3_backend.delete_many(["k0", "k1", "k2"])
    assert type(info.value) is expected
    assert info.value.operation == "delete_many"
    assert info.value.key == named
    for code in codes:
        assert code in str(info.value)


async def test_download_file_uses_parallel_ranged_gets(
    make_backend: MakeBackend, raw: Any, s3_bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(12 * MiB)
    raw.put_object(Bucket=s3_bucket, Key="storage/video.webm", Body=data)
    backend = make_backend(**SMALL)
    ranges: list[str | None] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        ranges.append(params.get("Range"))
        assert params.get("IfMatch")  # every range from the same version

    (await client_of(backend)).meta.events.register("provide-client-params.s3.GetObject", record)
    out = await backend.download_file("video.webm", tmp_path / "out" / "video.webm")
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert set(ranges) == {
        f"bytes=0-{5 * MiB - 1}",
        f"bytes={5 * MiB}-{10 * MiB - 1}",
        f"bytes={10 * MiB}-{12 * MiB - 1}",
    }
    assert len(ranges) == 3


@pytest.mark.parametrize("planted", ["link", "file"])
async def test_a_download_never_writes_into_what_replaced_its_temp_file(
    make_backend: MakeBackend, raw: Any, s3_bucket: str, tmp_path: Path, planted: str
) -> None:
    # the parallel ranged GETs open the temp file again for each range: another local
    # process that swapped it (its name shows in the folder) for a link to a file of the
    # user's, or for a file of its own, must get no byte of the object
    raw.put_object(Bucket=s3_bucket, Key="storage/video.webm", Body=os.urandom(12 * MiB))
    backend = make_backend(**SMALL)
    folder = tmp_path / "out"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")

    def swap(**_: Any) -> None:
        (part,) = folder.glob(".video.webm.*.part")
        part.unlink()
        if planted == "link":
            part.symlink_to(victim)
        else:
            part.write_bytes(b"")

    (await client_of(backend)).meta.events.register_first("before-send.s3.GetObject", swap)
    with pytest.raises(StorageError):
        await backend.download_file("video.webm", folder / "video.webm")
    assert victim.read_bytes() == b"precious"
    assert not (folder / "video.webm").exists()


async def test_copy_above_the_copyobject_limit_uses_upload_part_copy(
    make_backend: MakeBackend, raw: Any, s3_bucket: str
) -> None:
    backend = make_backend()
    # stand-ins for S3's 5 GiB CopyObject limit, so the path runs on a small object
    backend._copy_threshold = 6 * MiB
    backend._copy_part_size = 5 * MiB
    data = os.urandom(12 * MiB)
    await backend.save("src.bin", data, content_type="video/mp4", metadata={"a": "1"})
    await backend.copy("src.bin", "dst.bin")
    head = raw.head_object(Bucket=s3_bucket, Key="storage/dst.bin")
    assert head["ETag"].endswith('-3"')
    assert (head["ContentType"], head["Metadata"]) == ("video/mp4", {"a": "1"})
    assert await backend.load("dst.bin") == data


# ---------------------------------------------------------------- presigned URLs


async def test_presigned_get_downloads_over_http(s3_backend: StorageBackend) -> None:
    await s3_backend.save("doc.txt", b"hello")
    url = await s3_backend.get_presigned_url("doc.txt", expires_in=60)
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == b"hello"


async def test_presigned_put_uploads_over_http(s3_backend: StorageBackend) -> None:
    url = await s3_backend.get_presigned_url("up/new.txt", method="PUT")
    async with httpx.AsyncClient() as http:
        response = await http.put(url, content=b"from the browser")
    assert response.status_code == 200
    assert await s3_backend.load("up/new.txt") == b"from the browser"


async def test_public_endpoint_signs_for_its_host_without_connecting(
    make_backend: MakeBackend, s3_bucket: str
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        public = f"http://127.0.0.1:{listener.getsockname()[1]}"
        backend = make_backend(public_endpoint_url=public)
        url = await backend.get_presigned_url("a b.txt")
        assert url.startswith(f"{public}/{s3_bucket}/storage/a%20b.txt?")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected: signing is local


# ---------------------------------------------------------------- errors


async def test_missing_bucket_raises_config_error(make_backend: MakeBackend) -> None:
    backend = make_backend(bucket="no-such-bucket-here")
    with pytest.raises(StorageConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        await backend.load("a.txt")


async def test_unreachable_server_raises_unavailable_quickly(make_backend: MakeBackend) -> None:
    backend = make_backend(
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        max_attempts=1,
        connect_timeout=1,
        read_timeout=1,
    )
    started = time.perf_counter()
    with pytest.raises(StorageUnavailableError) as info:
        await backend.save("a.txt", b"x")
    assert time.perf_counter() - started < 5
    assert (info.value.operation, info.value.key) == ("save", "a.txt")


async def test_no_credentials_raise_permission_error(make_backend: MakeBackend) -> None:
    backend = make_backend(access_key_id=None, secret_access_key=None)
    with pytest.raises(StoragePermissionError, match="STORAGE_S3_ACCESS_KEY_ID"):
        await backend.exists("a.txt")


async def test_secret_never_appears_in_repr_errors_or_logs(
    make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="file_storage")
    failing = [
        make_backend(bucket="no-such-bucket-here"),
        make_backend(endpoint_url=f"http://127.0.0.1:{closed_port()}", max_attempts=1),
    ]
    texts = [repr(backend) for backend in failing]
    for backend in failing:
        with pytest.raises(StorageError) as info:
            await backend.save("a.txt", b"x")
        texts += [str(info.value), repr(info.value)]
    texts += [record.getMessage() for record in caplog.records]
    assert all(FAKE_SECRET not in text for text in texts)
    assert "no-such-bucket-here" in texts[0]


def client_error(code: str, status: int, retries: int = 0) -> Exception:
    from botocore.exceptions import ClientError

    meta = {"HTTPStatusCode": status, "RetryAttempts": retries}
    error: Exception = ClientError({"Error": {"Code": code}, "ResponseMetadata": meta}, "PutObject")
    return error


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, ObjectNotFoundError),
        ("404", 404, ObjectNotFoundError),
        ("AccessDenied", 403, StoragePermissionError),
        ("SignatureDoesNotMatch", 403, StoragePermissionError),
        ("BadDigest", 400, StorageUnavailableError),
        ("XAmzContentChecksumMismatch", 400, StorageUnavailableError),
        ("SlowDown", 503, StorageUnavailableError),
        ("PreconditionFailed", 412, PreconditionFailedError),
        ("412", 412, PreconditionFailedError),  # a HEAD answer has no error body
        ("EntityTooSmall", 400, StorageError),
    ],
)
def test_client_errors_map_by_cause(code: str, status: int, expected: type[Exception]) -> None:
    mapped = map_s3_error(client_error(code, status), bucket="b")
    assert type(mapped) is expected


async def test_stream_with_a_stale_etag_chains_s3s_412(s3_backend: StorageBackend) -> None:
    from botocore.exceptions import ClientError

    await s3_backend.save("a.txt", b"one")
    stale = (await s3_backend.stat("a.txt")).etag
    assert stale is not None
    await s3_backend.save("a.txt", b"two")
    with pytest.raises(PreconditionFailedError) as info:
        await anext(aiter(s3_backend.stream("a.txt", if_match=stale)))
    assert isinstance(info.value.__cause__, ClientError)


def test_unavailable_error_reports_botocores_attempt_count() -> None:
    mapped = map_s3_error(client_error("InternalError", 500, retries=4), bucket="b")
    assert isinstance(mapped, StorageUnavailableError)
    assert "after 5 attempts" in str(mapped)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("AccessDenied", StoragePermissionError),
        ("SlowDown", StorageUnavailableError),
        ("InvalidArgument", StorageError),
    ],
)
def test_delete_many_refusals_map_to_typed_errors(code: str, expected: type[Exception]) -> None:
    mapped, named = batch_delete_error([{"Key": "a", "Code": code}] * 2, total=10)
    assert named == "a"
    assert type(mapped) is expected
    assert "2 of 10 keys not deleted" in str(mapped)


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (lambda: client_error("SlowDown", 503, retries=4), True),
        (lambda: client_error("InternalError", 500), True),
        (lambda: client_error("AccessDenied", 403), False),
        (lambda: client_error("NoSuchBucket", 404), False),
        (lambda: ConnectionResetError("peer"), True),
        (lambda: TimeoutError(), True),
        (lambda: OSError(28, "No space left on device"), False),
        (lambda: StorageUnavailableError("ours"), False),
        (lambda: ValueError("bug"), False),
    ],
)
def test_only_outages_are_absorbed_by_the_spool(
    error: Callable[[], Exception], outage: bool
) -> None:
    assert is_outage(error()) is outage


def test_bugs_and_cancellation_are_not_translated() -> None:
    assert map_s3_error(TypeError("bug"), bucket="b") is None
    assert map_s3_error(asyncio.CancelledError(), bucket="b") is None


# ---------------------------------------------------------------- metadata


async def test_metadata_stored_rfc_2047_encoded_by_another_tool_decodes_on_stat(
    s3_backend: StorageBackend, raw: Any, s3_bucket: str
) -> None:
    raw.put_object(
        Bucket=s3_bucket,
        Key="storage/a.txt",
        Body=b"x",
        Metadata={
            "b-word": "=?UTF-8?B?0J/RgNC40LLQtdGC?=",
            "q-word": "=?iso-8859-1?Q?caf=E9_cr=E8me?=",
            "split": "=?utf-8?b?0J8=?= =?utf-8?b?0YA=?=",  # words joined without the space
            "mixed": "name: =?UTF-8?B?w6k=?= ok",
            "malformed": "=?UTF-8?B?!!not base64!!?=",
            "unknown-charset": "=?x-nope?B?aGk=?=",
            "not-a-word": "x=?UTF-8?B?aGk=?=y",
            "plain": "just text",
        },
    )
    assert dict((await s3_backend.stat("a.txt")).metadata) == {
        "b-word": "Привет",
        "q-word": "café crème",
        "split": "Пр",
        "mixed": "name: é ok",
        "malformed": "=?UTF-8?B?!!not base64!!?=",
        "unknown-charset": "=?x-nope?B?aGk=?=",
        "not-a-word": "x=?UTF-8?B?aGk=?=y",
        "plain": "just text",
    }


async def test_unicode_metadata_travels_as_rfc_2047_words_of_at_most_75_chars(
    s3_backend: StorageBackend, raw: Any, s3_bucket: str
) -> None:
    value = "Отчёт " * 40
    await s3_backend.save("a.txt", b"x", metadata={"name": value, "plain": "ascii"})
    sent = raw.head_object(Bucket=s3_bucket, Key="storage/a.txt")["Metadata"]
    assert sent["plain"] == "ascii"
    words = sent["name"].split(" ")
    assert len(words) > 1
    assert all(w.startswith("=?UTF-8?B?") and w.endswith("?=") and len(w) <= 75 for w in words)
    assert sent["name"].isascii()


# ---------------------------------------------------------------- the client


@pytest.fixture
def client_creations(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Record every aiobotocore client creation (endpoint URLs)."""
    from aiobotocore.session import AioSession

    created: list[str | None] = []
    original = AioSession.create_client

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        created.append(kwargs.get("endpoint_url"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AioSession, "create_client", counting)
    return created


async def test_one_client_serves_every_call(
    make_backend: MakeBackend, client_creations: list[str | None]
) -> None:
    backend = make_backend()
    calls: list[Awaitable[object]] = [backend.save(f"k{i}.txt", b"x") for i in range(20)]
    await asyncio.gather(*calls)
    await asyncio.gather(*(backend.load(f"k{i}.txt") for i in range(20)))
    assert await backend.list_files() == sorted(f"k{i}.txt" for i in range(20))
    assert len(client_creations) == 1


async def test_aclose_then_reuse_opens_a_new_client(
    make_backend: MakeBackend, client_creations: list[str | None]
) -> None:
    backend = make_backend()
    await backend.save("a.txt", b"x")
    await backend.aclose()
    assert await backend.load("a.txt") == b"x"
    assert len(client_creations) == 2


def test_import_does_not_load_the_sdk() -> None:
    code = (
        "import file_storage, sys; "
        "from file_storage import S3StorageBackend; "
        "S3StorageBackend('bucket', secret_access_key='s', access_key_id='k'); "
        "print(*sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {"aioboto3", "aiobotocore", "botocore", "boto3", "aiohttp"} & set(out)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        ({"bucket": "a/b"}, "bucket"),
        ({"prefix": "/storage"}, "prefix"),
        ({"prefix": "storage/"}, "prefix"),
        ({"prefix": "a//b"}, "prefix"),
        ({"multipart_chunk_size": 5 * MiB - 1}, "multipart_chunk_size"),
        ({"multipart_threshold": -1}, "multipart_threshold"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"addressing_style": "dns"}, "addressing_style"),
        ({"sse": "AES128"}, "sse"),
        ({"sse_kms_key_id": "key"}, "sse_kms_key_id"),
        ({"endpoint_url": "ftp://host"}, "endpoint_url"),
        ({"public_endpoint_url": "https://user:pw@host"}, "public_endpoint_url"),
        ({"secret_access_key": None}, "secret_access_key"),
        ({"max_size_bytes": -1}, "max_size_bytes"),
        ({"quota_refresh_seconds": -1}, "quota_refresh_seconds"),
        ({"retry_mode": "legacy"}, "retry_mode"),
        ({"read_timeout": float("inf")}, "read_timeout"),
        ({"fallback_path": 42}, "fallback_path"),
        ({"flush_interval_seconds": 60}, "flush_interval_seconds"),
        ({"fallback_path": "spool", "flush_interval_seconds": 0}, "flush_interval_seconds"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_parameter(
    overrides: dict[str, Any], parameter: str
) -> None:
    options: dict[str, Any] = {"access_key_id": FAKE_KEY_ID, "secret_access_key": FAKE_SECRET}
    options.update(overrides)
    with pytest.raises(StorageConfigError, match=parameter) as info:
        S3StorageBackend(options.pop("bucket", "bucket"), **options)
    assert "pw" not in str(info.value)


def test_repr_shows_bucket_prefix_and_endpoint_only() -> None:
    backend = S3StorageBackend(
        "bucket",
        access_key_id=FAKE_KEY_ID,
        secret_access_key=FAKE_SECRET,
        session_token="token-secret",
        endpoint_url="http://127.0.0.1:9000/",
    )
    assert repr(backend) == (
        "S3StorageBackend(bucket='bucket', prefix='storage', endpoint_url='http://127.0.0.1:9000')"
    )


async def test_stat_of_a_prior_version_carries_its_headers(s3_backend: StorageBackend) -> None:
    await s3_backend.set_versioning(True)
    await s3_backend.save("v.txt", b"one", cache_control="no-cache", content_disposition="inline")
    await s3_backend.save("v.txt", b"two")
    prior = [v for v in await s3_backend.list_versions("v.txt") if not v.is_latest]
    info = await s3_backend.stat("v.txt", version_id=prior[0].version_id)
    assert (info.size, info.cache_control, info.content_disposition) == (3, "no-cache", "inline")


@pytest.mark.parametrize("spelling", ["trailing slash", "upper case"])
async def test_migrate_onto_the_same_bucket_under_another_spelling_of_its_endpoint_is_refused(
    make_backend: MakeBackend, moto_endpoint: str, spelling: str
) -> None:
    # the same server, bucket and prefix: every object looked already copied, and
    # delete_source=True deleted the only copies
    from file_storage import migrate

    scheme, rest = moto_endpoint.split("://", 1)
    endpoint = f"{moto_endpoint}/" if spelling == "trailing slash" else f"{scheme.upper()}://{rest}"
    source = make_backend(prefix="data")
    dest = make_backend(prefix="data", endpoint_url=endpoint)
    await source.save("a/precious.txt", b"the only copy")
    with pytest.raises(ValueError, match="same place"):
        await migrate(source, dest, delete_source=True)
    assert await source.load("a/precious.txt") == b"the only copy"


class NeverListed(S3StorageBackend):
    """An S3 backend that must send no request (these tests name AWS's endpoints)."""

    def _iter_files(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        raise AssertionError("a request was about to be sent")


@pytest.mark.parametrize(
    ("source_endpoint", "dest_endpoint"),
    [
        (None, "https://s3.amazonaws.com"),
        (None, "https://s3.eu-west-1.amazonaws.com/"),
        ("https://s3-us-west-2.amazonaws.com", "https://S3.dualstack.us-east-1.amazonaws.com"),
    ],
)
async def test_migrate_onto_the_same_aws_bucket_through_another_endpoint_is_refused(
    source_endpoint: str | None, dest_endpoint: str
) -> None:
    # AWS bucket names are global: every region's endpoint (and the default) reaches the
    # same bucket, and delete_source=True would delete the only copies
    from file_storage import migrate

    def backend(endpoint_url: str | None) -> S3StorageBackend:
        return NeverListed(
            "media", prefix="data", endpoint_url=endpoint_url,
            access_key_id=FAKE_KEY_ID, secret_access_key=FAKE_SECRET,
        )  # fmt: skip

    with pytest.raises(ValueError, match="same place"):
        await migrate(backend(source_endpoint), backend(dest_endpoint), delete_source=True)


async def test_a_stored_header_that_is_no_utf8_fails_its_reads_at_once_as_a_storage_error(
    s3_backend: StorageBackend,
) -> None:
    # a presigned PUT (or another tool) stored a Content-Type of raw Latin-1 bytes, which
    # HTTP allows: the client could not decode the answer, and that was taken for an
    # outage, retried for ~12 s and raised as StorageUnavailableError (a 503 in an app)
    url = await s3_backend.get_presigned_url("odd.bin", method="PUT")
    async with httpx.AsyncClient() as http:
        response = await http.put(url, content=b"x", headers={"Content-Type": b"text/caf\xe9"})
    assert response.status_code == 200
    sent: list[str] = []
    client = await client_of(s3_backend)
    client.meta.events.register("before-send.s3", lambda **_: sent.append("x"))
    for read in (s3_backend.stat, s3_backend.load):
        sent.clear()
        with pytest.raises(StorageError, match="UTF-8") as info:
            await read("odd.bin")
        assert not isinstance(info.value, StorageUnavailableError)
        assert info.value.key == "odd.bin"
        assert len(sent) == 1  # not retried: the same answer would come back
    assert await s3_backend.list_files() == ["odd.bin"]  # listings do not read it
