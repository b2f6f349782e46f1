"""JSON nested too deeply to parse (``[[[[...]]]]``) in what the library reads back is a
damaged document like any other invalid JSON, never a RecursionError out of a call."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, parse_s3_event
from file_storage._json import parse_json
from file_storage._spool import Spool

DEEP = "[" * 100_000 + "]" * 100_000


def test_parse_json_raises_value_error_for_deep_nesting() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_json(DEEP)


@pytest.mark.parametrize("message", [DEEP, DEEP.encode(), '{"Records": ' + DEEP + "}"])
def test_a_notification_nested_too_deeply_is_a_value_error(message: str | bytes) -> None:
    with pytest.raises(ValueError, match="not an S3 notification"):
        parse_s3_event(message, prefix="storage")


def test_an_sns_message_nested_too_deeply_is_a_value_error() -> None:
    envelope = '{"Type": "Notification", "Message": "' + DEEP + '"}'
    with pytest.raises(ValueError, match="not an S3 notification"):
        parse_s3_event(envelope, prefix="storage")


async def test_a_spool_manifest_nested_too_deeply_is_skipped_as_unreadable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path / "spool")
    (spool.entries_dir).mkdir(parents=True)
    (spool.entries_dir / "deep.json").write_text(DEEP, "utf-8")
    with caplog.at_level(logging.ERROR, logger="file_storage"):
        assert await spool.entries() == []
    assert "unreadable manifest" in caplog.text


async def test_a_metadata_file_nested_too_deeply_reads_as_no_metadata(tmp_path: Path) -> None:
    async with LocalStorageBackend(tmp_path) as backend:
        await backend.save("a.txt", b"x", content_type="text/x-mine", metadata={"k": "v"})
        digest = hashlib.sha256(b"a.txt").hexdigest()
        sidecar = tmp_path / ".file_storage\\meta" / digest[:2] / digest
        assert sidecar.is_file()
        sidecar.write_text(DEEP)
        info = await backend.stat("a.txt")
        assert (info.content_type, info.metadata) == ("text/plain", {})
        assert await backend.load("a.txt") == b"x"


def _version_folder(root: Path, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:40]
    return root / ".file_storage\\versions" / ("\\" + digest)


async def test_a_current_record_nested_too_deeply_keeps_the_live_file(tmp_path: Path) -> None:
    async with LocalStorageBackend(tmp_path) as backend:
        await backend.set_versioning(True)
        await backend.save("a.txt", b"one")
        await backend.save("a.txt", b"two")
        (_version_folder(tmp_path, "a.txt") / "current").write_text(DEEP)
        versions = await backend.list_versions("a.txt")
        assert (versions[0].version_id, versions[0].is_latest) == ("null", True)
        await backend.save("a.txt", b"three")  # the live file is kept, under a new id
        versions = await backend.list_versions("a.txt")
        prior = [await backend.load("a.txt", version_id=v.version_id) for v in versions[1:]]
        assert sorted(prior) == [b"one", b"two"]


async def test_a_version_meta_record_nested_too_deeply_reads_as_the_defaults(
    tmp_path: Path,
) -> None:
    async with LocalStorageBackend(tmp_path) as backend:
        await backend.set_versioning(True)
        await backend.save("a.txt", b"one", content_type="text/x-mine", metadata={"k": "v"})
        await backend.save("a.txt", b"two")
        folder = _version_folder(tmp_path, "a.txt")
        (record,) = folder.glob("v-*.json")
        record.write_text(DEEP)
        prior = (await backend.list_versions("a.txt"))[1]
        info = await backend.stat("a.txt", version_id=prior.version_id)
        assert (info.content_type, info.metadata) == ("text/plain", {})
        assert await backend.load("a.txt", version_id=prior.version_id) == b"one"
