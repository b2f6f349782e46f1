"""S3: the ``created`` event of a copy, move or restore carries the ETag S3 answered to
that copy (CopyObject, or the completion of an UploadPartCopy upload above CopyObject's
limit), not that of an object another process wrote at the key before the event was made.

The other process is a plain boto3 client on the same moto server; nothing is mocked."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from file_storage import ObjectEvent, S3StorageBackend
from tests.backends.conftest import MiB
from tests.s3util import MakeBackend

pytestmark = pytest.mark.s3

MULTIPART_ETAG = re.compile(r'^"[0-9a-f]{32}-3"$')  # an object of three parts


@pytest.fixture
def large_copies(make_backend: MakeBackend) -> S3StorageBackend:
    backend = make_backend()
    # stand-ins for S3's 5 GiB CopyObject limit, so UploadPartCopy runs on a small object
    backend._copy_threshold = 5 * MiB
    backend._copy_part_size = 5 * MiB
    return backend


def rival_after(
    backend: S3StorageBackend, monkeypatch: pytest.MonkeyPatch, hook: str, raw: Any, full: str
) -> None:
    """Another process writes ``full`` (bucket key) once ``hook`` is done, before the event."""
    real = getattr(backend, hook)

    async def rivalled(*args: Any) -> str | None:
        etag: str | None = await real(*args)
        raw.put_object(Bucket=backend._bucket, Key=full, Body=b"a rival's object")
        return etag

    monkeypatch.setattr(backend, hook, rivalled)


def created(seen: list[ObjectEvent]) -> ObjectEvent:
    [event] = [event for event in seen if event.type == "created"]
    return event


@pytest.mark.parametrize("operation", ["copy", "move"])
async def test_multipart_copy_event_carries_the_completions_etag(
    large_copies: S3StorageBackend, monkeypatch: pytest.MonkeyPatch, raw: Any, operation: str
) -> None:
    await large_copies.save("src.bin", os.urandom(11 * MiB))
    seen: list[ObjectEvent] = []
    large_copies.subscribe(seen.append)
    rival_after(large_copies, monkeypatch, "_copy", raw, "storage/dst.bin")
    await getattr(large_copies, operation)("src.bin", "dst.bin")
    rival = raw.head_object(Bucket=large_copies._bucket, Key="storage/dst.bin")["ETag"]
    event = created(seen)
    assert event.key == "dst.bin"
    assert event.etag != rival
    assert event.etag is not None
    assert MULTIPART_ETAG.match(event.etag)


async def test_multipart_restore_event_carries_the_completions_etag(
    large_copies: S3StorageBackend, monkeypatch: pytest.MonkeyPatch, raw: Any
) -> None:
    await large_copies.set_versioning(True)
    await large_copies.save("a.bin", os.urandom(11 * MiB))
    first = (await large_copies.list_versions("a.bin"))[0].version_id
    await large_copies.save("a.bin", b"second")
    seen: list[ObjectEvent] = []
    large_copies.subscribe(seen.append)
    rival_after(large_copies, monkeypatch, "_restore_version", raw, "storage/a.bin")
    await large_copies.restore_version("a.bin", first)
    rival = raw.head_object(Bucket=large_copies._bucket, Key="storage/a.bin")["ETag"]
    event = created(seen)
    assert event.etag != rival
    assert event.etag is not None
    assert MULTIPART_ETAG.match(event.etag)
