"""The local backend under hostile and odd file systems: swapped folders, links, loops."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from file_storage import LocalStorageBackend, StorageConfigError, StorageError
from file_storage._signing import MIN_SIGNING_KEY_CHARS, _digest, verify

SECRET = b"outside the root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "f.txt").write_bytes(SECRET)
    return folder


async def sweep_done(backend: LocalStorageBackend) -> None:
    """Wait for the background sweep of stale temp files that the first use started: its
    walk opens "d" too, and must not be the open that triggers the swap."""
    if backend._sweeping is not None:
        await asyncio.wrap_future(backend._sweeping)


def swap_after_check(
    monkeypatch: pytest.MonkeyPatch, root: Path, name: str, target: Path
) -> Callable[[], bool]:
    """Once the backend has looked at the folder ``root/name`` (lstat, stat or open), swap
    it for a symlink to ``target``: the window between a check and the use of a path."""
    swapped = [False]
    real = {fn: getattr(os, fn) for fn in ("lstat", "stat", "open")}

    def wrap(fn: str) -> Any:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            result = real[fn](path, *args, **kwargs)
            if not swapped[0] and isinstance(path, str) and os.path.basename(path) == name:
                swapped[0] = True
                os.rename(root / name, root / f"{name}-moved")
                os.symlink(target, root / name)
            return result

        return call

    for fn in real:
        monkeypatch.setattr(os, fn, wrap(fn))
    return lambda: swapped[0]


async def test_folder_swapped_for_a_link_out_during_load_never_reads_outside(
    local_backend: LocalStorageBackend, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("d/f.txt", b"inside")
    await sweep_done(local_backend)
    swapped = swap_after_check(monkeypatch, local_backend.root, "d", outside)
    data = await local_backend.load("d/f.txt")
    assert swapped()
    assert data != SECRET


async def test_folder_swapped_for_a_link_out_during_save_never_writes_outside(
    local_backend: LocalStorageBackend, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("d/old.txt", b"inside")
    await sweep_done(local_backend)
    swapped = swap_after_check(monkeypatch, local_backend.root, "d", outside)
    await local_backend.save("d/new.txt", b"written")  # lands in the folder it opened
    monkeypatch.undo()
    assert swapped()
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt"]
    assert (outside / "f.txt").read_bytes() == SECRET


async def test_a_thread_swapping_a_folder_and_a_link_out_never_leads_outside(
    local_backend: LocalStorageBackend, outside: Path
) -> None:
    await local_backend.save("d/f.txt", b"inside")
    root = local_backend.root
    (root / "d.link").symlink_to(outside)
    stop = threading.Event()

    aside = itertools.count()

    def put(src: str, dst: str) -> None:
        for _ in range(100):
            try:
                os.rename(root / src, root / dst)
                return
            except OSError:  # the backend made a new "d" in the window: move it aside
                os.rename(root / dst, root / f"aside-{next(aside)}")

    def swap() -> None:
        for _ in range(20_000):  # bounded: ends by itself even if the test stops early
            if stop.is_set():
                return
            put("d", "d.real")
            put("d.link", "d")
            put("d", "d.link")
            put("d.real", "d")

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        for i in range(2000):
            with contextlib.suppress(StorageError):
                assert await local_backend.load("d/f.txt") != SECRET
            with contextlib.suppress(StorageError):
                await local_backend.save(f"d/new-{i}.txt", b"written")
    finally:
        stop.set()
        swapper.join()
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt"]
    assert (outside / "f.txt").read_bytes() == SECRET


async def test_link_swapped_in_for_the_object_is_refused_when_it_leads_out(
    local_backend: LocalStorageBackend, outside: Path
) -> None:
    await local_backend.save("d/f.txt", b"inside")
    target = local_backend.root / "d" / "f.txt"
    target.unlink()
    target.symlink_to(outside / "f.txt")
    assert not await local_backend.exists("d/f.txt")
    assert await local_backend.list_files() == []


async def test_relative_link_climbing_out_is_refused(
    local_backend: LocalStorageBackend, outside: Path
) -> None:
    await local_backend.save("d/keep.txt", b"x")
    (local_backend.root / "d" / "up").symlink_to("../../outside")
    assert not await local_backend.exists("d/up/f.txt")
    assert await local_backend.list_files() == ["d/keep.txt"]


async def test_in_root_links_are_followed_through_folders_and_files(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("real/a.txt", b"a")
    root = local_backend.root
    (root / "alias").symlink_to("real")  # relative
    (root / "real" / "b.txt").symlink_to(root / "real" / "a.txt")  # absolute, in the root
    (root / "deep").mkdir()
    (root / "deep" / "up").symlink_to("../alias")  # a link to a link
    assert await local_backend.load("alias/a.txt") == b"a"
    assert await local_backend.load("real/b.txt") == b"a"
    assert await local_backend.load("deep/up/b.txt") == b"a"
    assert await local_backend.list_files("alias") == ["alias/a.txt", "alias/b.txt"]


async def test_move_of_a_link_moves_the_link_not_the_object_it_names(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("data/a.txt", b"object a")
    (local_backend.root / "data" / "b.txt").symlink_to("a.txt")
    await local_backend.move("data/b.txt", "data/c.txt")
    await local_backend.move("data/c.txt", "elsewhere/deeper/d.txt")
    assert await local_backend.load("data/a.txt") == b"object a"
    assert await local_backend.load("elsewhere/deeper/d.txt") == b"object a"
    assert (local_backend.root / "elsewhere" / "deeper" / "d.txt").is_symlink()
    assert sorted(await local_backend.list_files()) == ["data/a.txt", "elsewhere/deeper/d.txt"]


@pytest.mark.parametrize("target", ["../a", "..", "."])
async def test_a_link_loop_does_not_break_listings_totals_or_quota_saves(
    tmp_path: Path, target: str
) -> None:
    backend = LocalStorageBackend(tmp_path / "storage", max_size_bytes=1000)
    await backend.save("a/x.txt", b"12345")
    (backend.root / "a" / "loop").symlink_to(target)
    assert "a/x.txt" in await backend.list_files()
    assert await backend.list_files("a") == ["a/x.txt"]
    assert await backend.get_total_size("a") == 5
    assert [info.key async for info in backend.iter_files("a")] == ["a/x.txt"]
    await backend.save("b.txt", b"67")  # the quota's first scan walks the loop
    assert (await backend.get_usage()).used >= 7
    assert await backend.list_dirs() == ["a"]
    await backend.aclose()


async def test_a_link_chain_too_long_is_refused_not_followed_forever(
    local_backend: LocalStorageBackend,
) -> None:
    local_backend.root.mkdir(parents=True)
    (local_backend.root / "p").symlink_to("q")
    (local_backend.root / "q").symlink_to("p")
    assert not await local_backend.exists("p/x.txt")
    assert await local_backend.list_files() == []


async def test_an_unreadable_folder_is_logged_and_skipped(
    local_backend: LocalStorageBackend,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await local_backend.save("a.txt", b"a")
    await local_backend.save("locked/b.txt", b"b")
    await local_backend.save("z/c.txt", b"c")
    real_open, real_scandir = os.open, os.scandir

    def denied_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if path == "locked" and flags & os.O_DIRECTORY:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    def denied_scandir(path: Any = ".") -> Any:
        if isinstance(path, str) and path.endswith("/locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "open", denied_open)
    monkeypatch.setattr(os, "scandir", denied_scandir)
    with caplog.at_level(logging.WARNING, logger="file_storage"):
        assert await local_backend.list_files() == ["a.txt", "z/c.txt"]
    assert any("locked" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("key", ["", "a", "k" * (MIN_SIGNING_KEY_CHARS - 1)])
def test_a_short_signing_key_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageConfigError, match="32 characters"):
        LocalStorageBackend(tmp_path, base_url="http://127.0.0.1/files", signing_key=key)


def test_verification_refuses_an_empty_secret() -> None:
    forged = _digest("", "GET", "a.txt", 4_000_000_000, bound="")
    assert not verify("a.txt", "GET", "4000000000", forged, "", bound="")


@pytest.mark.parametrize("link", ["a.txt", "via/a.txt"])
async def test_move_of_a_link_onto_the_object_it_names_keeps_the_object(
    local_backend: LocalStorageBackend, link: str
) -> None:
    await local_backend.save("data/a.txt", b"object a", metadata={"k": "v"})
    root = local_backend.root
    (root / "data" / "via").symlink_to(".")  # a chain: b.txt -> via/a.txt -> a.txt
    (root / "data" / "b.txt").symlink_to(link)
    await local_backend.move("data/b.txt", "data/a.txt")
    assert await local_backend.load("data/a.txt") == b"object a"
    assert not await local_backend.exists("data/b.txt")
    assert not (root / "data" / "a.txt").is_symlink()


async def test_move_of_a_hard_link_onto_its_twin_removes_the_source(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("data/a.txt", b"object a")
    os.link(local_backend.root / "data" / "a.txt", local_backend.root / "data" / "b.txt")
    await local_backend.move("data/b.txt", "data/a.txt")
    assert await local_backend.load("data/a.txt") == b"object a"
    assert await local_backend.list_files() == ["data/a.txt"]
