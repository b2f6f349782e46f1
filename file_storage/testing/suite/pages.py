"""list_page and iter_files(start_after=, recursive=): pages for web APIs, by a key cursor."""

from __future__ import annotations

import pytest

from file_storage import InvalidKeyError, ListPage, StorageBackend


async def _all_pages(
    backend: StorageBackend, prefix: str, limit: int, *, recursive: bool = True
) -> list[ListPage]:
    pages = [await backend.list_page(prefix, limit=limit, recursive=recursive)]
    while pages[-1].next_start_after is not None:
        cursor = pages[-1].next_start_after
        pages.append(
            await backend.list_page(prefix, limit=limit, start_after=cursor, recursive=recursive)
        )
    return pages


async def test_list_page_2500_objects_by_100_gives_every_key_once_sorted(
    backend: StorageBackend,
) -> None:
    keys = [f"big/d{i % 7}/s{i % 3}/{i:05d}.bin" for i in range(2400)]
    keys += [f"big/{i:03d}.txt" for i in range(100)]
    result = await backend.save_many([(key, b"x") for key in keys], concurrency=32)
    assert all(value == key for key, value in result.items())

    pages = await _all_pages(backend, "big", 100)

    assert len(pages) == 25
    assert all(len(page.files) == 100 and page.dirs == [] for page in pages)
    listed = [info.key for page in pages for info in page.files]
    assert listed == sorted(keys)
    assert [page.next_start_after for page in pages[:-1]] == [
        page.files[-1].key for page in pages[:-1]
    ]
    assert pages[-1].next_start_after is None


async def test_list_page_files_carry_sizes(filled: StorageBackend) -> None:
    page = await filled.list_page("users/u1/s1")
    assert [(i.key, i.size) for i in page.files] == [
        ("users/u1/s1/step1/shot.png", 2),
        ("users/u1/s1/step2/log.txt", 3),
    ]
    assert page == ListPage(page.files, [], None)


async def test_list_page_empty_store_is_one_last_page(backend: StorageBackend) -> None:
    assert await backend.list_page() == ListPage([], [], None)
    assert await backend.list_page("nothing", recursive=False) == ListPage([], [], None)


async def test_list_page_full_last_page_has_no_cursor(backend: StorageBackend) -> None:
    for i in range(4):
        await backend.save(f"p/{i}.txt", b"")
    first = await backend.list_page("p", limit=2)
    second = await backend.list_page("p", limit=2, start_after=first.next_start_after)
    assert first.next_start_after == "p/1.txt"
    assert [i.key for i in second.files] == ["p/2.txt", "p/3.txt"]
    assert second.next_start_after is None


async def test_list_page_non_recursive_shows_files_and_folders_of_one_level(
    filled: StorageBackend,
) -> None:
    page = await filled.list_page("users/u1", recursive=False)
    assert [i.key for i in page.files] == ["users/u1/a.txt"]
    assert page.dirs == ["users/u1/s1", "users/u1/s2"]
    assert page.next_start_after is None
    top = await filled.list_page(recursive=False)
    assert ([i.key for i in top.files], top.dirs) == (["top.txt"], ["users"])


async def test_non_recursive_pages_interleave_files_and_folders_in_key_order(
    filled: StorageBackend,
) -> None:
    # a folder sorts as "name/": u1-x/ < u1.txt < u1/ < u10/, and is its page's cursor
    pages = await _all_pages(filled, "users", 1, recursive=False)
    assert [(p.dirs, [i.key for i in p.files], p.next_start_after) for p in pages] == [
        (["users/u1-x"], [], "users/u1-x/"),
        ([], ["users/u1.txt"], "users/u1.txt"),
        (["users/u1"], [], "users/u1/"),
        (["users/u10"], [], None),
    ]


async def test_non_recursive_cursor_inside_a_folder_resumes_after_that_folder(
    filled: StorageBackend,
) -> None:
    # users/u1 sorts as "users/u1/", before the cursor, though it holds later keys
    page = await filled.list_page("users", recursive=False, start_after="users/u1/a.txt")
    assert (page.files, page.dirs) == ([], ["users/u10"])
    keys = [i.key async for i in filled.iter_files("users", start_after="users/u1/a.txt")]
    assert keys[0] == "users/u1/s1/step1/shot.png"


async def test_iter_files_start_after_in_the_middle_of_a_folder(filled: StorageBackend) -> None:
    after = "users/u1/s1/step1/shot.png"
    keys = [i.key async for i in filled.iter_files("users", start_after=after)]
    assert keys == ["users/u1/s1/step2/log.txt", "users/u1/s2/video.mp4", "users/u10/b.txt"]
    page = await filled.list_page("users", start_after=after, limit=2)
    assert [i.key for i in page.files] == keys[:2]
    assert page.next_start_after == keys[1]


async def test_start_after_need_not_exist(filled: StorageBackend) -> None:
    keys = [i.key async for i in filled.iter_files("users/u1", start_after="users/u1/m")]
    assert keys == [
        "users/u1/s1/step1/shot.png",
        "users/u1/s1/step2/log.txt",
        "users/u1/s2/video.mp4",
    ]


async def test_iter_files_non_recursive_gives_direct_objects_only(filled: StorageBackend) -> None:
    assert [i.key async for i in filled.iter_files("users", recursive=False)] == ["users/u1.txt"]
    assert [i.key async for i in filled.iter_files("users/u1", recursive=False)] == [
        "users/u1/a.txt"
    ]


async def test_cursor_outside_the_prefix_is_compared_as_a_string(filled: StorageBackend) -> None:
    before = await filled.list_page("users/u1", start_after="a")
    assert len(before.files) == 4
    after = await filled.list_page("users/u1", start_after="zzz")
    assert after == ListPage([], [], None)
    assert [i.key async for i in filled.iter_files("users/u1", start_after="users/u1")] == [
        i.key for i in before.files
    ]


async def test_non_recursive_cursor_after_the_prefix_lists_nothing(
    filled: StorageBackend,
) -> None:
    # found by the differential test (tests/parity): S3 through obstore listed one level
    # from the start, ignoring a cursor past every key of the prefix
    after = await filled.list_page("users/u1", start_after="zzz", recursive=False)
    assert after == ListPage([], [], None)
    found = filled.iter_files("users", start_after="users/u2", recursive=False)
    assert [i.key async for i in found] == []
    within = filled.iter_files("users/u1", start_after="users/u1/a.txt", recursive=False)
    assert [i.key async for i in within] == []


@pytest.mark.parametrize("cursor", ["", "/abs", "a//b", "a/../b", "two//", "/"])
async def test_invalid_cursor_raises_invalid_key(filled: StorageBackend, cursor: str) -> None:
    with pytest.raises(InvalidKeyError) as info:
        await filled.list_page(start_after=cursor)
    assert info.value.operation == "list_page"
    assert info.value.key == cursor
    with pytest.raises(InvalidKeyError):
        filled.iter_files(start_after=cursor)


@pytest.mark.parametrize("limit", [0, -1])
async def test_list_page_limit_below_one_raises_value_error(
    backend: StorageBackend, limit: int
) -> None:
    with pytest.raises(ValueError, match="limit"):
        await backend.list_page(limit=limit)


async def test_writes_between_pages_neither_duplicate_nor_skip_lasting_keys(
    backend: StorageBackend,
) -> None:
    lasting = [f"c/{i:04d}.txt" for i in range(0, 600, 2)]
    await backend.save_many([(key, b"1") for key in lasting], concurrency=32)
    seen: list[str] = []
    cursor: str | None = None
    round_ = 0
    while True:
        page = await backend.list_page("c", limit=50, start_after=cursor)
        seen.extend(i.key for i in page.files)
        if page.next_start_after is None:
            break
        cursor = page.next_start_after
        # between pages: new keys before and after the cursor, a folder, a deleted newcomer
        round_ += 1
        await backend.save(f"c/{2 * round_ * 50 + 1:04d}.txt", b"new")
        await backend.save(f"c/{round_ * 50 - 1:04d}.txt", b"behind")
        await backend.save(f"c/{round_:04d}/deep.txt", b"folder")
        await backend.delete(f"c/{2 * round_ * 50 + 1:04d}.txt")
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))
    assert set(lasting) <= set(seen)


async def test_folder_cursor_skips_the_folder_not_its_neighbours(
    filled: StorageBackend,
) -> None:
    # "users/u1-x" and "users/u1.txt" sort between "users/u1" and "users/u1/"
    page = await filled.list_page("users", recursive=False, start_after="users/u1/")
    assert (page.files, page.dirs) == ([], ["users/u10"])
    page = await filled.list_page("users", recursive=False, start_after="users/u1")
    assert ([i.key for i in page.files], page.dirs) == (
        ["users/u1.txt"],
        ["users/u1-x", "users/u1", "users/u10"],
    )
    keys = [i.key async for i in filled.iter_files("users", start_after="users/u1/")]
    assert keys[0] == "users/u1/a.txt"
