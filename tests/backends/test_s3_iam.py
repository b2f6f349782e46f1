"""The S3 backend under the least-privilege IAM policy of docs/compatibility.md.

A moto server of this module's own checks IAM (tests/backends/iam_moto.py says what it
checks and what not). Each test makes an IAM user whose only policy is the documented
core policy (read from the page, with the test's bucket put in), minus or plus actions,
and drives the backend with that user's key.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    MemoryStorageBackend,
    S3StorageBackend,
    StoragePermissionError,
    StorageQuotaExceededError,
    migrate,
)
from tests.backends.iam_moto import IamMoto, Keys
from tests.faults.proxy import FaultProxy
from tests.s3util import s3_backends

pytestmark = pytest.mark.s3

DOC = Path(__file__).resolve().parents[2] / "docs" / "compatibility.md"
MiB = 1 << 20
# the smallest multipart setup S3 allows: 5 MiB parts (AWS multipart limits)
SMALL: dict[str, Any] = {"multipart_threshold": 5 * MiB, "multipart_chunk_size": 5 * MiB}

# the actions of each optional feature (docs/compatibility.md, "Permissions (IAM)"),
# on the bucket or on its objects
BUCKET_ACTIONS = frozenset(
    {
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:GetBucketVersioning",
        "s3:PutBucketVersioning",
        "s3:GetLifecycleConfiguration",
        "s3:PutLifecycleConfiguration",
    }
)
VERSIONS = ("s3:PutBucketVersioning", "s3:GetBucketVersioning", "s3:ListBucketVersions")
VERSION_OBJECTS = ("s3:GetObjectVersion", "s3:DeleteObjectVersion")
EXPIRY = ("s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration")
SPOOL_VERSIONED = ("s3:GetBucketVersioning", "s3:ListBucketVersions")

MakeUser = Callable[..., S3StorageBackend]


def documented_policy() -> dict[str, Any]:
    """The core policy docs/compatibility.md gives (the fence after its marker)."""
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- iam-core-policy -->\n```json\n(.*?)\n```", text, re.S)
    assert found is not None, "docs/compatibility.md lost its core IAM policy"
    policy: dict[str, Any] = json.loads(found.group(1))
    return policy


def policy_for(bucket: str, without: tuple[str, ...], extra: tuple[str, ...]) -> dict[str, Any]:
    """The documented policy on ``bucket``, without the actions ``without``, plus ``extra``
    (each in the statement of its resource: the bucket, or its objects)."""
    policy = copy.deepcopy(documented_policy())
    for statement in policy["Statement"]:
        resource = statement["Resource"].replace("my-bucket", bucket)
        statement["Resource"] = resource
        on_bucket = "/" not in resource.removeprefix("arn:aws:s3:::")
        mine = [a for a in extra if (a in BUCKET_ACTIONS) == on_bucket]
        statement["Action"] = [a for a in statement["Action"] if a not in without] + mine
    policy["Statement"] = [s for s in policy["Statement"] if s["Action"]]
    return policy


@pytest.fixture(scope="module")
def iam() -> Iterator[IamMoto]:
    server = IamMoto()
    yield server
    server.close()


@pytest.fixture
def bucket(iam: IamMoto) -> str:
    name = f"iam-{uuid.uuid4().hex[:20]}"
    iam.s3().create_bucket(Bucket=name)
    return name


@pytest.fixture
async def as_user(iam: IamMoto, bucket: str) -> AsyncIterator[MakeUser]:
    """``as_user(without=(...), extra=(...), **options)``: a backend signing with the key
    of a new user holding the documented policy, changed so; ``admin=True``: the admin's."""
    async with s3_backends(iam.endpoint, bucket) as make:

        def build(
            without: tuple[str, ...] = (),
            extra: tuple[str, ...] = (),
            admin: bool = False,
            **options: Any,
        ) -> S3StorageBackend:
            keys: Keys = iam.admin if admin else iam.user(policy_for(bucket, without, extra))
            return make(
                access_key_id=keys["AccessKeyId"],
                secret_access_key=keys["SecretAccessKey"],
                **options,
            )

        yield build


async def denied(call: Awaitable[Any], operation: str, secret: str | None = None) -> None:
    """``call`` raises StoragePermissionError naming ``operation``, without a secret."""
    with pytest.raises(StoragePermissionError) as caught:
        await call
    assert caught.value.operation == operation
    assert "denied" in str(caught.value)
    if secret is not None:
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value)


def test_the_server_checks_iam(iam: IamMoto, bucket: str) -> None:
    # the guard of every test below: a key of no user is refused
    from botocore.exceptions import ClientError

    stranger = iam.s3({"AccessKeyId": "AKIA" + "X" * 16, "SecretAccessKey": "nope"})
    with pytest.raises(ClientError) as caught:
        stranger.list_objects_v2(Bucket=bucket)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def gather(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


@pytest.mark.parametrize("client", ["aioboto3", "obstore"])
async def test_the_documented_policy_allows_every_core_operation(
    as_user: MakeUser, tmp_path: Path, client: str
) -> None:
    backend = as_user(max_size_bytes=64 * MiB, client=client, **SMALL)
    await backend.save("docs/a.txt", b"alpha", content_type="text/plain")
    await backend.save("docs/new.txt", b"new", overwrite=False)
    assert await backend.load("docs/a.txt") == b"alpha"
    assert await gather(backend.stream("docs/a.txt", start=1)) == b"lpha"
    assert (await backend.stat("docs/a.txt")).size == 5
    assert await backend.exists("docs/a.txt")
    assert not await backend.exists("docs/missing.txt")
    assert await backend.get_size("docs/a.txt") == 5
    await backend.copy("docs/a.txt", "docs/b.txt")
    await backend.move("docs/b.txt", "other/c.txt")
    assert await backend.list_files("") == ["docs/a.txt", "docs/new.txt", "other/c.txt"]
    assert await backend.list_dirs("") == ["docs", "other"]
    assert [info.key async for info in backend.iter_files("other")] == ["other/c.txt"]
    big = bytes(range(256)) * (6 * MiB // 256)  # above the multipart threshold
    (tmp_path / "big.bin").write_bytes(big)
    await backend.upload_file(tmp_path / "big.bin", "big.bin")
    await backend.download_file("big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big
    await backend.copy("big.bin", "big-copy.bin")
    assert await backend.get_total_size("") == 5 + 3 + 5 + 2 * len(big)
    assert (await backend.get_presigned_url("docs/a.txt")).startswith("http://127.0.0.1")
    # if_match: the one-off probe of what the server checks (a multipart upload, aborted)
    etag = (await backend.stat("docs/a.txt")).etag
    await backend.save("docs/a.txt", b"alpha", if_match=etag)
    await backend.delete("docs/new.txt")
    await backend.delete_many(["big.bin", "big-copy.bin"])
    assert await backend.delete_prefix("docs") == 1
    assert await backend.list_files("") == ["other/c.txt"]


@pytest.mark.parametrize(
    ("action", "operation", "call"),
    [
        ("s3:GetObject", "load", lambda b: b.load("kept.txt")),
        ("s3:GetObject", "stat", lambda b: b.stat("kept.txt")),
        ("s3:PutObject", "save", lambda b: b.save("new.txt", b"x")),
        ("s3:PutObject", "copy", lambda b: b.copy("kept.txt", "copy.txt")),
        ("s3:DeleteObject", "delete", lambda b: b.delete("kept.txt")),
        ("s3:DeleteObject", "delete_many", lambda b: b.delete_many(["kept.txt"])),
        ("s3:ListBucket", "list_files", lambda b: b.list_files("")),
        ("s3:ListBucket", "get_total_size", lambda b: b.get_total_size("")),
    ],
)
async def test_an_action_left_out_fails_with_a_permission_error(
    as_user: MakeUser, iam: IamMoto, bucket: str, action: str, operation: str,
    call: Callable[[S3StorageBackend], Awaitable[Any]],
) -> None:  # fmt: skip
    await as_user(admin=True).save("kept.txt", b"kept")
    backend = as_user(without=(action,))
    secret = backend._options.secret_access_key
    await denied(call(backend), operation, secret.get_secret_value() if secret else None)
    keys = [item["Key"] for item in iam.s3().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["storage/kept.txt"]  # nothing written, nothing deleted


@pytest.mark.parametrize("given", [True, False], ids=["with", "without"])
async def test_the_start_up_check_needs_list_bucket(
    iam: IamMoto, bucket: str, monkeypatch: pytest.MonkeyPatch, given: bool
) -> None:
    from file_storage.fastapi import storage_lifespan

    keys = iam.user(policy_for(bucket, () if given else ("s3:ListBucket",), ()))
    settings = {
        "TYPE": "s3",
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": iam.endpoint,
        "S3_ADDRESSING_STYLE": "path",
        "S3_ACCESS_KEY_ID": keys["AccessKeyId"],
        "S3_SECRET_ACCESS_KEY": keys["SecretAccessKey"],
    }
    for name, value in settings.items():
        monkeypatch.setenv(f"STORAGE_{name}", value)

    async def start() -> None:
        async with storage_lifespan():
            pass

    if given:
        await start()
    else:
        await denied(start(), "check", keys["SecretAccessKey"])


async def test_a_move_without_delete_keeps_both_objects_and_says_so(
    as_user: MakeUser,
) -> None:
    await as_user(admin=True).save("a.txt", b"a")
    backend = as_user(without=("s3:DeleteObject",))
    await denied(backend.move("a.txt", "b.txt"), "move")
    assert await backend.list_files("") == ["a.txt", "b.txt"]


async def test_moves_without_delete_leave_one_probe_object_not_one_each(
    as_user: MakeUser, iam: IamMoto, bucket: str
) -> None:
    # the probe of conditional deletes cannot remove its object under such a policy:
    # it is left once, and not probed again at every move
    admin = as_user(admin=True)
    await admin.save("a.txt", b"a")
    await admin.save("c.txt", b"c")
    backend = as_user(without=("s3:DeleteObject",))
    await denied(backend.move("a.txt", "b.txt"), "move")
    await denied(backend.move("c.txt", "d.txt"), "move")
    keys = [item["Key"] for item in iam.s3().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len([key for key in keys if ".file-storage-probe" in key]) == 1


async def test_a_migration_source_without_put_object_still_deletes_what_it_moved(
    as_user: MakeUser, caplog: pytest.LogCaptureFixture
) -> None:
    # the probe of conditional deletes cannot write its object: the deletes stay plain
    # (logged), rather than every source delete failing for a write it never needed
    await as_user(admin=True).save("m/a.txt", b"a")
    source = as_user(without=("s3:PutObject",))
    report = await migrate(source, MemoryStorageBackend(), delete_source=True)
    assert (report.copied, report.failed) == (1, {})
    assert await source.list_files("") == []
    assert "could not probe conditional deletes" in caplog.text


async def test_the_versions_feature_works_with_its_actions(as_user: MakeUser) -> None:
    backend = as_user(extra=VERSIONS + VERSION_OBJECTS)
    await backend.set_versioning(True)
    await backend.save("a.txt", b"one")
    await backend.save("a.txt", b"two")
    versions = await backend.list_versions("a.txt")
    old = next(v.version_id for v in versions if not v.is_latest)
    assert await backend.load("a.txt", version_id=old) == b"one"
    await backend.restore_version("a.txt", old)
    assert await backend.load("a.txt") == b"one"
    await backend.purge_versions("a.txt", keep=1)
    assert len(await backend.list_versions("a.txt")) == 1


async def test_versions_without_their_actions_fail_with_a_permission_error(
    as_user: MakeUser,
) -> None:
    admin = as_user(admin=True)
    await admin.set_versioning(True)
    await admin.save("a.txt", b"one")
    backend = as_user()
    await denied(backend.set_versioning(True), "set_versioning")
    await denied(backend.list_versions("a.txt"), "list_versions")
    await denied(backend.purge_versions("a.txt", keep=0), "purge_versions")
    assert len(await admin.list_versions("a.txt")) == 1  # nothing purged


async def test_expiry_works_with_its_actions(as_user: MakeUser) -> None:
    backend = as_user(extra=EXPIRY)
    await backend.set_expiration("temp", 1)
    assert await backend.get_expiration() == {"temp/": 1}
    await backend.set_expiration("temp", None)  # the last rule: the configuration goes
    assert await backend.get_expiration() == {}


async def test_expiry_without_its_actions_fails_with_a_permission_error(
    as_user: MakeUser,
) -> None:
    backend = as_user()
    await denied(backend.set_expiration("temp", 1), "set_expiration")
    await denied(backend.get_expiration(), "get_expiration")
    assert await as_user(admin=True).get_expiration() == {}


@pytest.fixture
def proxy(iam: IamMoto) -> Iterator[FaultProxy]:
    """A fault proxy in front of the IAM server: S3 "down" for the spool tests."""
    fault_proxy = FaultProxy(iam.endpoint)
    fault_proxy.start()
    yield fault_proxy
    fault_proxy.stop()


@pytest.mark.parametrize("given", [False, True], ids=["without", "with"])
async def test_a_versioned_spool_flush_needs_list_bucket_versions(
    as_user: MakeUser, proxy: FaultProxy, tmp_path: Path, given: bool,
    monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    admin = as_user(admin=True)
    await admin.set_versioning(True)
    await admin.save("a.txt", b"stored")
    extra = SPOOL_VERSIONED if given else ("s3:GetBucketVersioning",)
    spooling = as_user(
        extra=extra,
        endpoint_url=proxy.endpoint,
        fallback_path=tmp_path / "spool",
        max_attempts=2,
        connect_timeout=1.0,
        read_timeout=1.0,
    )
    proxy.refuse()
    await spooling.save("a.txt", b"spooled")  # S3 is down: spooled
    proxy.restore()
    await admin.delete("a.txt")  # another server's delete: a delete marker
    if not given:
        await denied(spooling.flush_spool(), "flush_spool")
        assert await spooling.load("a.txt") == b"spooled"  # kept in the spool
        assert not await admin.exists("a.txt")
        return
    assert await spooling.flush_spool() == 0  # dropped: S3's delete is newer
    assert not await spooling.exists("a.txt")
    assert not await admin.exists("a.txt")


class ClientGone(Exception):
    """The uploader's stream broke off (a client that went away)."""


async def broken_body() -> AsyncIterator[bytes]:
    yield b"x" * (5 * MiB)
    yield b"y" * (5 * MiB)  # the first part is sent before the stream breaks
    raise ClientGone


@pytest.mark.parametrize("given", [True, False], ids=["with", "without"])
async def test_a_failed_multipart_upload_is_aborted_with_abort_multipart_upload(
    as_user: MakeUser, iam: IamMoto, bucket: str, given: bool
) -> None:
    backend = as_user(without=() if given else ("s3:AbortMultipartUpload",), **SMALL)
    with pytest.raises(ClientGone):
        await backend.save("big.bin", broken_body())
    await backend.aclose()  # waits for the abort
    uploads = iam.s3().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    # without the right the write still fails with its own error; its parts stay
    assert len(uploads) == (0 if given else 1)
    assert not await as_user(admin=True).exists("big.bin")


@pytest.mark.parametrize(
    ("extra", "refused"),
    [(SPOOL_VERSIONED, True), ((), False)],
    ids=["versions-counted", "unversioned-guess"],
)
async def test_a_quota_counts_prior_versions_only_with_the_versioning_actions(
    as_user: MakeUser, extra: tuple[str, ...], refused: bool
) -> None:
    admin = as_user(admin=True)
    await admin.set_versioning(True)
    await admin.save("a.txt", b"0123456789")
    await admin.save("a.txt", b"x")  # 10 bytes stay as a prior version
    backend = as_user(extra=extra, max_size_bytes=15)
    if refused:
        with pytest.raises(StorageQuotaExceededError):
            await backend.save("b.txt", b"12345")
    else:  # the bucket taken as unversioned (logged): 1 + 5 bytes fit
        await backend.save("b.txt", b"12345")


async def test_a_quota_on_a_versioned_bucket_without_list_bucket_versions_is_refused(
    as_user: MakeUser,
) -> None:
    admin = as_user(admin=True)
    await admin.set_versioning(True)
    backend = as_user(extra=("s3:GetBucketVersioning",), max_size_bytes=15)
    await denied(backend.save("b.txt", b"12345"), "save")
    assert not await admin.exists("b.txt")


async def test_suspending_versioning_without_the_versioning_actions_is_refused(
    as_user: MakeUser, iam: IamMoto, bucket: str
) -> None:
    # the bucket's state cannot be read: the suspend is sent, not skipped as a no-op
    await as_user(admin=True).set_versioning(True)
    await denied(as_user().set_versioning(False), "set_versioning")
    assert iam.s3().get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"


async def test_suspending_versioning_without_get_bucket_versioning_suspends_it(
    as_user: MakeUser, iam: IamMoto, bucket: str
) -> None:
    await as_user(admin=True).set_versioning(True)
    await as_user(extra=("s3:PutBucketVersioning",)).set_versioning(False)
    assert iam.s3().get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
