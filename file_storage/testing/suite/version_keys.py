"""Versions of awkward keys (the suite's one table) and of keys that spell one another:
each key's versions are its own, read back and restored by the id it lists."""

from __future__ import annotations

import pytest

from file_storage import StorageBackend
from file_storage.testing.suite._key_cases import LOOK_ALIKE_KEYS, VALID_KEYS


@pytest.mark.backend_needs("versions")
@pytest.mark.parametrize("key", VALID_KEYS, ids=range(len(VALID_KEYS)))
async def test_versions_of_an_awkward_key_read_restore_and_purge(
    versioned: StorageBackend, key: str
) -> None:
    await versioned.save(key, b"one")
    await versioned.save(key, b"two!")
    await versioned.delete(key)
    versions = await versioned.list_versions(key)
    assert [(v.size, v.is_latest) for v in versions] == [(4, False), (3, False)]
    assert await versioned.load(key, version_id=versions[1].version_id) == b"one"
    await versioned.restore_version(key, versions[1].version_id)
    assert await versioned.load(key) == b"one"
    assert await versioned.purge_versions(key, keep=1) == 2
    assert [v.size for v in await versioned.list_versions(key)] == [3]


@pytest.mark.backend_needs("versions")
async def test_versions_of_look_alike_keys_stay_apart(versioned: StorageBackend) -> None:
    keys = [key for key in LOOK_ALIKE_KEYS if key != "twins/a/b"]  # "twins/a" is a folder
    for n, key in enumerate(keys):
        await versioned.save(key, b"a" * (n + 1))
        await versioned.save(key, b"b" * (n + 1))
    await versioned.purge_versions(keys[0], keep=0)
    for n, key in enumerate(keys[1:], start=1):
        versions = await versioned.list_versions(key)
        assert [v.size for v in versions] == [n + 1, n + 1], key
        assert await versioned.load(key, version_id=versions[1].version_id) == b"a" * (n + 1)
    assert await versioned.list_versions(keys[0]) == []
