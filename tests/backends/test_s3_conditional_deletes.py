"""S3 only: the deletes that follow a look or a copy (a move's source, migrate's
delete_source) carry If-Match where the server checks it, on both transports.

The probe that tells (backends/s3/_conditions.py) is compared with what tests/s3util.py
declares about the server (moto checks; Ceph RGW 16 deletes on any ETag), and it leaves
nothing behind. On a server that does not check, the delete is the plain one of before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from file_storage import MemoryStorageBackend, PreconditionFailedError, S3StorageBackend, migrate
from file_storage.backends._write_options import PLAIN, WriteOptions
from file_storage.backends.s3._conditions import _STALE_ETAG as STALE
from file_storage.backends.s3._conditions import PROBE_NAME
from tests.s3util import SERVER, s3_backends, stored_keys

pytestmark = pytest.mark.s3

CHECKS = "if_match_on_delete" in SERVER.features


@pytest.fixture(params=["aioboto3", "obstore"])
async def s3(
    request: pytest.FixtureRequest, moto_endpoint: str, s3_bucket: str
) -> AsyncIterator[S3StorageBackend]:
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make(client=request.param)


def rewrite_after_copy(backend: S3StorageBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace ``src.txt`` with ``b"new"`` once the move's copy is stored."""
    copy = backend._copy

    async def copy_then_rewrite(src: str, dst: str, options: WriteOptions = PLAIN) -> str | None:
        etag = await copy(src, dst, options)
        await backend.save("src.txt", b"new")
        return etag

    monkeypatch.setattr(backend, "_copy", copy_then_rewrite)


async def test_probe_learns_whether_deletes_are_checked_and_leaves_nothing(
    s3: S3StorageBackend, raw: Any, s3_bucket: str
) -> None:
    await s3.save("src.txt", b"x")
    await s3.move("src.txt", "dst.txt")  # the first conditional delete probes
    assert s3._conditions.delete_probed
    assert (s3._conditions.delete_form is not None) is CHECKS
    assert stored_keys(raw, s3_bucket) == ["storage/dst.txt"]


async def test_move_sends_if_match_with_the_etag_it_looked_at(
    s3: S3StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await s3.save("src.txt", b"x")
    etag = (await s3.stat("src.txt")).etag
    client = await s3._client()
    sent: list[dict[str, Any]] = []
    delete_object = client.delete_object

    async def recorded(**params: Any) -> Any:
        sent.append(params)
        return await delete_object(**params)

    await s3.save("warm.txt", b"")
    await s3.move("warm.txt", "warmed.txt")  # probed: only the move's delete is recorded
    monkeypatch.setattr(client, "delete_object", recorded)
    await s3.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert [p["Key"] for p in sent] == ["storage/src.txt"]
    assert sent[0].get("IfMatch") == (etag if CHECKS else None)


@pytest.mark.s3_needs("if_match_on_delete")
async def test_move_keeps_a_source_rewritten_after_its_copy_in_a_versioned_bucket(
    s3: S3StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rewrite is the key's latest version, and the move's delete refused leaves no
    # delete marker over it: the old version is a prior one, as after any overwrite
    await s3.set_versioning(True)
    await s3.save("src.txt", b"old")
    rewrite_after_copy(s3, monkeypatch)
    with pytest.raises(PreconditionFailedError) as info:
        await s3.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert (info.value.operation, info.value.key) == ("move", "src.txt")
    assert (await s3.load("src.txt"), await s3.load("dst.txt")) == (b"new", b"old")
    assert [v.size for v in await s3.list_versions("src.txt")] == [3, 3]


async def test_move_of_a_source_rewritten_before_its_copy_fails_and_copies_nothing(
    s3: S3StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the write lands after the move looked at the source, before its copy reads it: the
    # copy is pinned to the version looked at, so it fails and nothing lands at dst (no
    # move that raises while src and dst both hold the new bytes)
    await s3.save("src.txt", b"old")
    copy = s3._copy

    async def rewrite_then_copy(src: str, dst: str, options: WriteOptions = PLAIN) -> str | None:
        await s3.save("src.txt", b"new")
        return await copy(src, dst, options)

    monkeypatch.setattr(s3, "_copy", rewrite_then_copy)
    with pytest.raises(PreconditionFailedError) as info:
        await s3.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert (info.value.operation, info.value.key) == ("move", "src.txt")
    assert await s3.list_files() == ["src.txt"]
    assert await s3.load("src.txt") == b"new"


async def test_move_in_a_versioned_bucket_keeps_the_moved_version_as_a_prior_one(
    s3: S3StorageBackend,
) -> None:
    # the conditional delete is a delete like any other there: a delete marker over the
    # version moved, which stays listed as the source's prior version
    await s3.set_versioning(True)
    await s3.save("src.txt", b"moved")
    await s3.move("src.txt", "dst.txt")
    assert not await s3.exists("src.txt")
    versions = await s3.list_versions("src.txt")
    assert [(v.size, v.is_latest) for v in versions] == [(5, False)]
    assert await s3.load("dst.txt") == b"moved"


@pytest.mark.s3_needs("if_match_on_delete")
async def test_migrate_keeps_an_s3_source_rewritten_after_its_last_look(
    s3: S3StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await s3.save("m/a.txt", b"old")
    dest = MemoryStorageBackend()
    delete_looked_at = s3._delete_looked_at

    async def rewritten_then_deleted(key: str, current: Any) -> bool:
        await s3.save(key, b"new")
        return await delete_looked_at(key, current)

    monkeypatch.setattr(s3, "_delete_looked_at", rewritten_then_deleted)
    report = await migrate(s3, dest, delete_source=True)
    monkeypatch.undo()
    assert "changed after it was copied" in report.failed["m/a.txt"]
    assert (await s3.load("m/a.txt"), await dest.load("m/a.txt")) == (b"new", b"old")


async def test_a_server_that_ignores_if_match_on_delete_gets_the_plain_move(
    s3: S3StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as a Ceph RGW 16 probe finds: the move deletes as it did before (nothing is sent
    # that the server would take for an unconditional delete anyway, and no move fails)
    s3._conditions.delete_probed, s3._conditions.delete_form = True, None
    await s3.save("src.txt", b"old")
    rewrite_after_copy(s3, monkeypatch)
    await s3.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert await s3.list_files() == ["dst.txt"]  # the documented loss where unchecked


class _Server:
    """A DeleteObject that compares If-Match as ``checks`` says: ``"quoted"``, ``"bare"``
    (Ceph's form on PutObject), ``"ignored"`` (Ceph 16 on DeleteObject) or ``"unknown"``
    (the header refused as not implemented)."""

    def __init__(self, checks: str) -> None:
        self.checks = checks
        self.objects: dict[str, str] = {}

    @staticmethod
    def _error(code: str, status: int) -> Exception:
        from botocore.exceptions import ClientError

        answer: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(answer, "DeleteObject")

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> dict[str, str]:
        self.objects[Key] = f'"{len(self.objects)}{Body.hex()}"'
        return {"ETag": self.objects[Key]}

    async def head_object(self, *, Bucket: str, Key: str) -> dict[str, str]:
        if Key not in self.objects:
            raise self._error("404", 404)
        return {"ETag": self.objects[Key]}

    async def delete_object(self, *, Bucket: str, Key: str, IfMatch: str | None = None) -> None:
        etag = self.objects.get(Key)
        if IfMatch is not None and self.checks == "unknown":
            raise self._error("NotImplemented", 501)
        if IfMatch is not None and self.checks in ("quoted", "bare"):
            if etag is None:
                raise self._error("NoSuchKey", 404)
            if IfMatch != (etag if self.checks == "quoted" else etag.strip('"')):
                raise self._error("PreconditionFailed", 412)
        self.objects.pop(Key, None)


@pytest.mark.parametrize(
    ("checks", "learnt"),
    [("quoted", "quoted"), ("bare", "bare"), ("ignored", None), ("unknown", None)],
)
async def test_the_delete_probe_tells_each_kind_of_server_and_leaves_nothing(
    checks: str, learnt: str | None
) -> None:
    from file_storage.backends.s3._conditions import probe_delete

    server = _Server(checks)
    assert await probe_delete(server, "bucket", "storage/.probe") == learnt
    assert server.objects == {}


@pytest.mark.s3_needs("if_match_on_delete")
async def test_a_probe_delete_whose_answer_was_lost_still_learns_the_check(
    s3: S3StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the probe's delete on its object's own ETag landed, its answer was lost, and
    # botocore sent it again: the resend finds nothing (404). The server checks If-Match
    # all the same, so a move still keeps a source rewritten after its copy
    client = await s3._client()
    delete_object = client.delete_object

    async def resent_once_landed(**params: Any) -> Any:
        if PROBE_NAME in params["Key"] and params.get("IfMatch") not in (None, STALE):
            await delete_object(**params)  # landed; the answer lost on the way back
        return await delete_object(**params)

    monkeypatch.setattr(client, "delete_object", resent_once_landed)
    await s3.save("src.txt", b"old")
    rewrite_after_copy(s3, monkeypatch)
    with pytest.raises(PreconditionFailedError):
        await s3.move("src.txt", "dst.txt")
    monkeypatch.undo()
    assert (await s3.load("src.txt"), await s3.load("dst.txt")) == (b"new", b"old")
    assert s3._conditions.delete_form is not None
