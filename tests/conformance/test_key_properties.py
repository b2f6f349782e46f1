"""Property: no key, however hostile, lands outside the local backend's root.

The suite's key properties (file_storage.testing.suite.key_properties) run on every
backend; this one looks at the disk, so it is the local backend's alone.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given

from file_storage import InvalidKeyError, LocalStorageBackend
from file_storage.testing.suite.key_properties import CHECKS, KEYS


@CHECKS
@given(key=KEYS)
async def test_local_key_never_lands_outside_the_root(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    backend = LocalStorageBackend(root)
    try:
        await backend.save(key, b"v")
    except InvalidKeyError:
        return
    try:
        on_disk = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert on_disk == [root / key]
    finally:
        await backend.delete_prefix("")
