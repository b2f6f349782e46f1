"""upload_file, download_file, local_copy, staged_upload: local files in and out."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

import pytest

from file_storage import (
    ObjectConflictError,
    ObjectNotFoundError,
    StorageBackend,
    StorageError,
    StorageQuotaExceededError,
)


async def test_upload_file_round_trip(backend: StorageBackend, tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    src.write_bytes(os.urandom(300_000))
    key = await backend.upload_file(src, "videos/v.mp4", metadata={"session": "s1"})
    assert key == "videos/v.mp4"
    assert await backend.load(key) == src.read_bytes()
    info = await backend.stat(key)
    assert (info.content_type, dict(info.metadata)) == ("video/mp4", {"session": "s1"})


async def test_upload_file_accepts_str_path(backend: StorageBackend, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"text")
    await backend.upload_file(str(src), "t.txt", content_type="text/csv")
    assert (await backend.stat("t.txt")).content_type == "text/csv"


async def test_upload_missing_local_file_raises(backend: StorageBackend, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        await backend.upload_file(tmp_path / "absent.bin", "x.bin")
    assert info.value.operation == "upload_file"
    assert await backend.list_files() == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("progress", [None, print], ids=["plain", "progress"])
@pytest.mark.parametrize("kind", ["fifo", "folder"])
async def test_upload_of_a_fifo_or_folder_is_refused_at_once(
    backend: StorageBackend, tmp_path: Path, kind: str, progress: object
) -> None:
    # a FIFO (planted where uploads are picked up) blocks an open for reading until
    # someone writes: the upload would hang, its thread and its cancellation with it
    src = tmp_path / "upload.bin"
    os.mkfifo(src) if kind == "fifo" else src.mkdir()
    call = asyncio.ensure_future(backend.upload_file(src, "u.bin", progress=progress))  # type: ignore[arg-type]
    done, _ = await asyncio.wait({call}, timeout=10)
    if not done and kind == "fifo":  # hung: a writer (at once closed) ends it
        os.close(os.open(src, os.O_WRONLY | os.O_NONBLOCK))
    with pytest.raises(ObjectNotFoundError, match="not a regular file") as info:
        await call
    assert done, "upload_file of a FIFO blocked"
    assert info.value.operation == "upload_file"
    assert await backend.list_files() == []


async def test_upload_file_progress(backend: StorageBackend, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(b"z" * 3_000_000)
    seen: list[tuple[int, int | None]] = []
    await backend.upload_file(src, "p.bin", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3_000_000, 3_000_000)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


async def test_download_file_creates_parents(backend: StorageBackend, tmp_path: Path) -> None:
    await backend.save("a/b.bin", b"content")
    target = tmp_path / "deep" / "er" / "out.bin"
    result = await backend.download_file("a/b.bin", target)
    assert result == target
    assert target.read_bytes() == b"content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


async def test_download_file_overwrites(backend: StorageBackend, tmp_path: Path) -> None:
    await backend.save("a.bin", b"new")
    target = tmp_path / "out.bin"
    target.write_bytes(b"old old old")
    await backend.download_file("a.bin", str(target))
    assert target.read_bytes() == b"new"


async def test_download_missing_leaves_nothing(backend: StorageBackend, tmp_path: Path) -> None:
    target = tmp_path / "dl" / "out.bin"
    with pytest.raises(ObjectNotFoundError) as info:
        await backend.download_file("missing.bin", target)
    assert info.value.operation == "download_file"
    assert list((tmp_path / "dl").iterdir()) == []


async def test_download_file_progress(backend: StorageBackend, tmp_path: Path) -> None:
    await backend.save("p.bin", b"q" * 2_500_000)
    seen: list[tuple[int, int | None]] = []
    await backend.download_file("p.bin", tmp_path / "o", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (2_500_000, 2_500_000)


async def test_local_copy_gives_a_real_file(backend: StorageBackend) -> None:
    data = os.urandom(100_000)
    await backend.save("rec/video.webm", data)
    async with backend.local_copy("rec/video.webm") as path:
        assert isinstance(path, Path)
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(data).digest()
        assert path.suffix == ".webm"
    assert await backend.load("rec/video.webm") == data


async def test_local_copy_missing_raises(backend: StorageBackend) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        async with backend.local_copy("missing.webm"):
            pass
    assert (info.value.operation, info.value.key) == ("local_copy", "missing.webm")
    assert tempfile.gettempdir() not in str(info.value)


@pytest.mark.parametrize("call", ["local_copy", "staged_upload"])
async def test_a_temp_folder_that_cannot_be_made_is_a_storage_error_naming_no_path(
    backend: StorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    # the message reaches HTTP clients: the server's temp folder is not theirs to see
    await backend.save("a.bin", b"x")
    gone = tmp_path / "no-such-temp-folder"
    monkeypatch.setattr(tempfile, "tempdir", str(gone))
    with pytest.raises(StorageError) as info:
        async with getattr(backend, call)("a.bin") as path:
            path.write_bytes(b"new")
    assert (info.value.operation, info.value.key) == (call, "a.bin")
    assert str(gone) not in str(info.value)
    assert await backend.load("a.bin") == b"x"


async def test_staged_upload_uploads_on_clean_exit(backend: StorageBackend) -> None:
    async with backend.staged_upload("out/thumb.png", metadata={"w": "320"}) as path:
        path.write_bytes(b"\x89PNG fake")
    assert not path.exists()
    assert await backend.load("out/thumb.png") == b"\x89PNG fake"
    info = await backend.stat("out/thumb.png")
    assert (info.content_type, dict(info.metadata)) == ("image/png", {"w": "320"})


async def test_staged_upload_discards_on_exception(backend: StorageBackend) -> None:
    staged: list[Path] = []

    async def tool_fails() -> None:
        async with backend.staged_upload("out/x.mp4") as path:
            staged.append(path)
            path.write_bytes(b"half")
            raise RuntimeError("ffmpeg failed")

    with pytest.raises(RuntimeError, match="ffmpeg"):
        await tool_fails()
    assert not staged[0].exists()
    assert await backend.list_files() == []


async def test_staged_upload_with_nothing_written_raises(backend: StorageBackend) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        async with backend.staged_upload("out/never.bin") as path:
            pass
    assert (info.value.operation, info.value.key) == ("staged_upload", "out/never.bin")
    # the message reaches HTTP clients (a 404 body): the server's temp path is not theirs
    assert str(path.parent) not in str(info.value)
    assert await backend.list_files() == []


async def test_staged_upload_over_quota_names_staged_upload(backend: StorageBackend) -> None:
    # the error names the call the user made, not the upload_file it makes on exit
    backend.set_quota("", 10)
    with pytest.raises(StorageQuotaExceededError) as info:
        async with backend.staged_upload("out/big.bin") as path:
            path.write_bytes(b"x" * 11)
    assert (info.value.operation, info.value.key) == ("staged_upload", "out/big.bin")
    assert await backend.list_files() == []


@pytest.mark.backend_needs("folder_checks")
async def test_staged_upload_under_an_object_names_staged_upload(
    backend: StorageBackend,
) -> None:
    await backend.save("out", b"object")
    with pytest.raises(ObjectConflictError) as info:
        async with backend.staged_upload("out/thumb.png") as path:
            path.write_bytes(b"png")
    assert (info.value.operation, info.value.key) == ("staged_upload", "out/thumb.png")
    assert await backend.list_files() == ["out"]


# 80 CJK characters are 240 bytes of UTF-8: a temp name cut by characters overflows 255
@pytest.mark.parametrize("name", ["字" * 80 + ".bin", "é" * 127 + "a"], ids=["cjk", "255-bytes"])
async def test_download_file_to_a_long_multi_byte_name(
    backend: StorageBackend, tmp_path: Path, name: str
) -> None:
    await backend.save("d/x.bin", b"bytes")
    target = await backend.download_file("d/x.bin", tmp_path / "out" / name)
    assert target.read_bytes() == b"bytes"
    assert [p.name for p in target.parent.iterdir()] == [name]


async def test_local_copy_of_a_key_with_a_long_multi_byte_name(backend: StorageBackend) -> None:
    key = "d/" + "字" * 80 + ".bin"
    await backend.save(key, b"bytes")
    async with backend.local_copy(key) as path:
        assert path.read_bytes() == b"bytes"


async def _cancelled_download(backend: StorageBackend, target: Path) -> None:
    """Download 3 MiB to ``target``, cancelled right after its first bytes were written."""
    await backend.save("big.bin", b"n" * 3 * 1024 * 1024)
    task = asyncio.current_task()
    assert task is not None

    def cancel_once(done: int, total: int | None) -> None:
        if done:
            task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await backend.download_file("big.bin", target, progress=cancel_once)
    task.uncancel()


async def test_cancelled_download_leaves_nothing(backend: StorageBackend, tmp_path: Path) -> None:
    target = tmp_path / "out" / "big.bin"
    await _cancelled_download(backend, target)
    assert sorted(p.name for p in target.parent.iterdir()) == []


async def test_cancelled_download_keeps_the_file_it_would_replace(
    backend: StorageBackend, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "big.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    await _cancelled_download(backend, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["big.bin"]
    assert target.read_bytes() == b"old"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this system")
@pytest.mark.parametrize("progress", [None, print], ids=["plain", "progress"])
async def test_download_file_never_writes_through_a_link_at_its_temp_name(
    backend: StorageBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, progress: object
) -> None:
    # another local user who learned the temp file's name (here: chose it) links it to a
    # file of the user's: the download goes to another name, never through the link
    import types
    import uuid

    from file_storage.backends import _transfers

    names = iter([uuid.UUID(int=0xF5), uuid.uuid4()])
    first = uuid.UUID(int=0xF5).hex[:12]
    monkeypatch.setattr(_transfers, "uuid", types.SimpleNamespace(uuid4=lambda: next(names)))
    folder = tmp_path / "downloads"
    folder.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (folder / f".out.{first}.part").symlink_to(victim)
    await backend.save("a.bin", b"object bytes")
    await backend.download_file("a.bin", folder / "out", progress=progress)  # type: ignore[arg-type]
    assert (folder / "out").read_bytes() == b"object bytes"
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in folder.iterdir()) == [f".out.{first}.part", "out"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
async def test_download_file_keeps_the_permissions_of_the_file_it_replaces(
    backend: StorageBackend, tmp_path: Path
) -> None:
    # a private file (0600: a key, an export of user data) downloaded anew must not
    # become readable by the other users of the machine
    await backend.save("secret.bin", b"new secret")
    target = tmp_path / "secret.bin"
    target.write_bytes(b"old secret")
    target.chmod(0o600)
    await backend.download_file("secret.bin", target, progress=None)
    assert target.read_bytes() == b"new secret"
    assert target.stat().st_mode & 0o7777 == 0o600
    target.chmod(0o640)
    await backend.download_file("secret.bin", target, progress=lambda done, total: None)
    assert target.stat().st_mode & 0o7777 == 0o640


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this system")
async def test_download_onto_a_link_replaces_the_link_never_its_target(
    backend: StorageBackend, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "out.bin"
    target.symlink_to(victim)
    await backend.save("a.bin", b"object")
    await backend.download_file("a.bin", target)
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink()
    assert target.read_bytes() == b"object"


async def test_download_onto_a_folder_fails_and_leaves_it(
    backend: StorageBackend, tmp_path: Path
) -> None:
    target = tmp_path / "downloads" / "out"
    target.mkdir(parents=True)
    (target / "inner").write_bytes(b"keep")
    await backend.save("a.bin", b"object")
    with pytest.raises(StorageError):
        await backend.download_file("a.bin", target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["out"]
    assert (target / "inner").read_bytes() == b"keep"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("there", ["private file", "nothing"])
async def test_download_file_is_private_until_it_is_in_place(
    backend: StorageBackend, tmp_path: Path, there: str
) -> None:
    # the temp file holds the new bytes before the rename: with the umask's 0644 the
    # machine's other users could open it meanwhile and read a private file's new bytes
    await backend.save("secret.bin", b"s" * 300_000)
    target = tmp_path / "secret.bin"
    if there == "private file":
        target.write_bytes(b"old secret")
        target.chmod(0o600)
    modes: list[int] = []

    def look(done: int, total: int | None) -> None:
        modes.extend(p.stat().st_mode & 0o777 for p in tmp_path.glob(".secret.bin.*.part"))

    umask = os.umask(0o022)
    try:
        await backend.download_file("secret.bin", target, progress=look)
    finally:
        os.umask(umask)
    assert modes  # looked at mid-way
    assert set(modes) == {0o600}
    assert target.read_bytes() == b"s" * 300_000
    # then it takes its final mode: the replaced file's, else the umask's
    assert target.stat().st_mode & 0o777 == (0o600 if there == "private file" else 0o644)
