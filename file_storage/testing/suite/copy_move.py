"""copy and move: content, content type and metadata kept; missing source typed; a
write landing on a move's source while it runs is kept."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from file_storage import ObjectNotFoundError, PreconditionFailedError, StorageBackend
from file_storage.backends._write_options import PLAIN, WriteOptions

Action = Callable[[], Awaitable[object]]


def _around_the_move_copy(
    backend: StorageBackend,
    monkeypatch: pytest.MonkeyPatch,
    *,
    before: Action | None = None,
    after: Action | None = None,
) -> list[bool]:
    """Run ``before`` / ``after`` around the first copy of ``src.txt`` (the move's, where
    it copies); the list returned holds ``True`` once one of them ran."""
    copy = backend._copy
    ran: list[bool] = []

    async def hooked(src: str, dst: str, options: WriteOptions = PLAIN) -> str | None:
        first = src == "src.txt" and not ran
        if first and before is not None:
            ran.append(True)
            await before()
        etag = await copy(src, dst, options)
        if first and after is not None:
            ran.append(True)
            await after()
        return etag

    monkeypatch.setattr(backend, "_copy", hooked)
    return ran


async def test_copy_keeps_source(source: StorageBackend) -> None:
    assert await source.copy("src/a.bin", "dst/b.bin") == "dst/b.bin"
    assert await source.load("src/a.bin") == b"payload"
    assert await source.load("dst/b.bin") == b"payload"


async def test_copy_keeps_content_type_and_metadata(source: StorageBackend) -> None:
    await source.copy("src/a.bin", "dst/b.bin")
    info = await source.stat("dst/b.bin")
    assert (info.content_type, dict(info.metadata)) == ("video/webm", {"k": "v"})


async def test_copy_overwrites_destination(source: StorageBackend) -> None:
    await source.save("dst/b.txt", b"old", metadata={"old": "1"})
    await source.copy("src/a.bin", "dst/b.txt")
    info = await source.stat("dst/b.txt")
    assert await source.load("dst/b.txt") == b"payload"
    assert dict(info.metadata) == {"k": "v"}


async def test_copy_missing_source_raises_object_not_found(backend: StorageBackend) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        await backend.copy("missing.bin", "dst.bin")
    assert (info.value.operation, info.value.key) == ("copy", "missing.bin")
    assert await backend.list_files() == []


@pytest.mark.parametrize(
    "header", [{"cache_control": "no-store"}, {"content_disposition": "attachment"}]
)
async def test_copy_changing_a_header_of_a_missing_source_raises_object_not_found(
    backend: StorageBackend, header: dict[str, str]
) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        await backend.copy("missing.bin", "dst.bin", **header)
    assert (info.value.operation, info.value.key) == ("copy", "missing.bin")
    assert await backend.list_files() == []


async def test_copy_onto_itself_keeps_object(source: StorageBackend) -> None:
    assert await source.copy("src/a.bin", "src/a.bin") == "src/a.bin"
    assert await source.load("src/a.bin") == b"payload"


async def test_move_removes_source(source: StorageBackend) -> None:
    assert await source.move("src/a.bin", "dst/moved.bin") == "dst/moved.bin"
    assert await source.list_files() == ["dst/moved.bin"]
    info = await source.stat("dst/moved.bin")
    assert (info.content_type, dict(info.metadata)) == ("video/webm", {"k": "v"})
    assert await source.list_dirs() == ["dst"]


async def test_move_of_a_folders_last_object_frees_the_folders_name(
    source: StorageBackend,
) -> None:
    # as after a delete: the emptied folder is no more, its name can hold an object
    await source.move("src/a.bin", "dst/moved.bin")
    assert await source.save("src", b"now an object") == "src"
    assert await source.load("src") == b"now an object"


async def test_move_gives_the_object_the_moves_time(backend: StorageBackend) -> None:
    # a move writes dst: expiry rules count its age from then, never from the source's
    # last write. ``later`` is written once the store's clock has passed the source's
    # time (the cloud stores answer whole seconds): a bounded wait of a second or so
    await backend.save("src/a.txt", b"x")
    saved = (await backend.stat("src/a.txt")).last_modified
    for _ in range(50):
        await backend.save("later.txt", b"y")
        later = (await backend.stat("later.txt")).last_modified
        if later > saved:
            break
        await asyncio.sleep(0.05)
    await backend.move("src/a.txt", "dst/a.txt")
    assert (await backend.stat("dst/a.txt")).last_modified >= later > saved


async def test_move_missing_source_raises_object_not_found(backend: StorageBackend) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        await backend.move("missing.bin", "dst.bin")
    assert info.value.operation == "move"
    assert await backend.list_files() == []


async def test_move_onto_itself_keeps_object(source: StorageBackend) -> None:
    await source.move("src/a.bin", "src/a.bin")
    assert await source.load("src/a.bin") == b"payload"


async def test_move_onto_itself_missing_raises(backend: StorageBackend) -> None:
    with pytest.raises(ObjectNotFoundError):
        await backend.move("x.bin", "x.bin")


async def test_copy_and_move_to_another_extension_keep_the_guessed_content_type(
    backend: StorageBackend,
) -> None:
    # the type was guessed from the source's name when it was saved: it is the object's
    await backend.save("t/a.txt", b"x")
    await backend.copy("t/a.txt", "t/copied.png")
    await backend.move("t/a.txt", "t/moved.png")
    for key in ("t/copied.png", "t/moved.png"):
        assert (await backend.stat(key)).content_type == "text/plain", key


@pytest.mark.backend_needs("exact_moves")
async def test_move_keeps_a_source_rewritten_after_its_copy(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another writer replaces the source once the copy is stored, just before the
    # move's delete: that delete must not take the new bytes. A move that renames in
    # one step makes no copy (nothing is rewritten): it simply moves
    await backend.save("src.txt", b"old")
    rewritten = _around_the_move_copy(
        backend, monkeypatch, after=lambda: backend.save("src.txt", b"new")
    )
    error = None
    try:
        await backend.move("src.txt", "dst.txt")
    except PreconditionFailedError as exc:
        error = exc
    monkeypatch.undo()
    assert await backend.load("dst.txt") == b"old"
    if not rewritten:
        assert (error, await backend.list_files()) == (None, ["dst.txt"])
        return
    assert error is not None
    assert (error.operation, error.key) == ("move", "src.txt")
    assert await backend.load("src.txt") == b"new"


@pytest.mark.backend_needs("exact_moves")
async def test_move_keeps_a_source_rewritten_before_its_copy(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rewrite lands after the move looked at the source, before the copy: the source,
    # no longer what the move found, stays. The copy takes the new bytes or, pinned to
    # the version the move found, fails (pinned_moves, the test below): the destination
    # never holds the old bytes
    await backend.save("src.txt", b"old")
    rewritten = _around_the_move_copy(
        backend, monkeypatch, before=lambda: backend.save("src.txt", b"new")
    )
    with contextlib.suppress(PreconditionFailedError):
        await backend.move("src.txt", "dst.txt")
    monkeypatch.undo()
    if rewritten:
        assert await backend.load("src.txt") == b"new"
        assert await backend.list_files() in (["src.txt"], ["dst.txt", "src.txt"])
        if await backend.exists("dst.txt"):
            assert await backend.load("dst.txt") == b"new"


@pytest.mark.backend_needs("pinned_moves")
async def test_move_of_a_source_rewritten_before_its_copy_fails_and_copies_nothing(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rewrite lands after the move looked at the source, before its copy read it:
    # the copy takes only the version the move found, so the move fails before anything
    # lands at dst (not: a failed move leaving the new bytes at both keys). A move that
    # renames in one step makes no copy (nothing is rewritten): it simply moves
    await backend.save("src.txt", b"old")
    rewritten = _around_the_move_copy(
        backend, monkeypatch, before=lambda: backend.save("src.txt", b"new")
    )
    error = None
    try:
        await backend.move("src.txt", "dst.txt")
    except PreconditionFailedError as exc:
        error = exc
    monkeypatch.undo()
    if not rewritten:
        assert (error, await backend.list_files()) == (None, ["dst.txt"])
        assert await backend.load("dst.txt") == b"old"
        return
    assert error is not None
    assert (error.operation, error.key) == ("move", "src.txt")
    assert await backend.list_files() == ["src.txt"]
    assert await backend.load("src.txt") == b"new"


async def test_move_of_a_source_deleted_after_its_copy_ends_with_the_copy(
    backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # another caller deleted the source meanwhile: nothing is lost, the move is done
    await backend.save("src.txt", b"old")
    _around_the_move_copy(backend, monkeypatch, after=lambda: backend.delete("src.txt"))
    assert await backend.move("src.txt", "dst.txt") == "dst.txt"
    monkeypatch.undo()
    assert await backend.list_files() == ["dst.txt"]
    assert await backend.load("dst.txt") == b"old"
