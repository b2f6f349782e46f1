"""Expiry under attack: a hostile rules file on local disk, and writes racing a purge."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, StorageError

DAY = timedelta(days=1)
RULES = ".file_storage\\lifecycle.json"


def plant_rules(root: Path, rules: dict[str, object]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / RULES).write_text(json.dumps({"expiration": rules}))


@pytest.mark.parametrize(
    "prefix",
    [
        "../",  # the root's parent: every file beside the root, and the root itself
        "../storage/temp/",
        "temp/../",
        "./",
        "/tmp/",
        "temp",  # no folder: would be every key starting with the text "temp"
        "temp//",
        "a\\b/",
        "nul\x00/",
    ],
)
async def test_a_planted_rule_whose_prefix_is_no_folder_deletes_nothing(
    tmp_path: Path, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # the rules file is the backend's own, but anyone with write access to the root can
    # edit it: a rule set_expiration would refuse is ignored (and logged), never applied
    # outside the folder it names, and the valid rules beside it still apply
    root = tmp_path / "storage"
    plant_rules(root, {prefix: 1, "logs/": 1})
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not an object")
    async with LocalStorageBackend(root) as backend:
        for key in ("temp/a.bin", "temporary.bin", "logs/x.log"):
            await backend.save(key, b"x")
        with caplog.at_level(logging.WARNING, logger="file_storage"):
            assert await backend.get_expiration() == {"logs/": 1}
            assert await backend.purge_expired(now=datetime.now(UTC) + 2 * DAY) == 1
        assert await backend.list_files() == ["temp/a.bin", "temporary.bin"]
    assert outside.read_bytes() == b"not an object"
    assert "expiry rule" in caplog.text


async def test_a_rules_file_nested_too_deep_to_parse_is_a_damaged_rules_file(
    tmp_path: Path,
) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    (root / RULES).write_text('{"expiration": ' + "[" * 100_000 + "]" * 100_000 + "}")
    async with LocalStorageBackend(root) as backend:
        with pytest.raises(StorageError, match="damaged") as info:
            await backend.get_expiration()
        assert info.value.operation == "get_expiration"
