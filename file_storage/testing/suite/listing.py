"""list_files, iter_files, list_dirs, get_total_size and the prefix rule."""

from __future__ import annotations

from datetime import UTC

import pytest

from file_storage import StorageBackend
from file_storage.testing.suite.fixtures import LAYOUT


async def test_list_files_empty_backend(backend: StorageBackend) -> None:
    assert await backend.list_files() == []
    assert await backend.list_files("nothing/here") == []
    assert await backend.list_dirs() == []
    assert await backend.get_total_size() == 0


async def test_list_files_all_sorted(filled: StorageBackend) -> None:
    assert await filled.list_files() == sorted(LAYOUT)


@pytest.mark.parametrize("prefix", ["users/u1", "users/u1/"])
async def test_list_files_prefix_is_a_folder_not_a_string_prefix(
    filled: StorageBackend, prefix: str
) -> None:
    assert await filled.list_files(prefix) == [
        "users/u1/a.txt",
        "users/u1/s1/step1/shot.png",
        "users/u1/s1/step2/log.txt",
        "users/u1/s2/video.mp4",
    ]


async def test_list_files_prefix_of_an_object_is_empty(filled: StorageBackend) -> None:
    assert await filled.list_files("top.txt") == []


async def test_iter_files_yields_object_info_sorted(filled: StorageBackend) -> None:
    infos = [info async for info in filled.iter_files("users/u1/s1")]
    assert [i.key for i in infos] == ["users/u1/s1/step1/shot.png", "users/u1/s1/step2/log.txt"]
    assert [i.size for i in infos] == [2, 3]
    for info in infos:
        assert info.last_modified.tzinfo is not None
        assert info.last_modified.utcoffset() == UTC.utcoffset(None)


async def test_list_dirs_gives_immediate_subfolders(filled: StorageBackend) -> None:
    assert await filled.list_dirs() == ["users"]
    assert await filled.list_dirs("users") == ["users/u1", "users/u1-x", "users/u10"]
    assert await filled.list_dirs("users/u1/") == ["users/u1/s1", "users/u1/s2"]
    assert await filled.list_dirs("users/u1/s1") == ["users/u1/s1/step1", "users/u1/s1/step2"]
    assert await filled.list_dirs("users/u1/s2") == []
    assert await filled.list_dirs("missing") == []


async def test_list_dirs_forgets_emptied_folders(filled: StorageBackend) -> None:
    await filled.delete("users/u1/s2/video.mp4")
    assert await filled.list_dirs("users/u1") == ["users/u1/s1"]


async def test_get_total_size(filled: StorageBackend) -> None:
    assert await filled.get_total_size() == sum(len(v) for v in LAYOUT.values())
    assert await filled.get_total_size("users/u1") == 1 + 2 + 3 + 4


async def test_list_files_many_keys_paginates(backend: StorageBackend) -> None:
    keys = [f"many/{i:05d}.txt" for i in range(1100)]
    await backend.delete_many(keys)  # nothing there yet: must not fail
    for key in keys:
        await backend.save(key, b"")
    assert await backend.list_files("many") == keys
    assert len([i async for i in backend.iter_files()]) == 1100
