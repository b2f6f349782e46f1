"""What only the local backend has: files on disk, sidecars, symlinks, disk faults."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import (
    LocalStorageBackend,
    PreconditionFailedError,
    StorageConfigError,
    StoragePermissionError,
    StorageQuotaExceededError,
    StorageUnavailableError,
)
from file_storage.backends.local._meta import META_DIR


def files_on_disk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_constructor_does_no_io_and_root_is_created_on_demand(tmp_path: Path) -> None:
    root = tmp_path / "later" / "storage"
    backend = LocalStorageBackend(root)
    assert not root.exists()
    await backend.save("a.txt", b"x")
    assert (root / "a.txt").read_bytes() == b"x"


async def test_key_lives_at_root_slash_key(local_backend: LocalStorageBackend) -> None:
    await local_backend.save("users/u1/v.mp4", b"video")
    assert (local_backend.root / "users" / "u1" / "v.mp4").read_bytes() == b"video"


async def test_files_put_by_other_tools_are_objects(local_backend: LocalStorageBackend) -> None:
    (local_backend.root / "ext" / "empty-dir").mkdir(parents=True)
    (local_backend.root / "ext" / "f.log").write_bytes(b"from ffmpeg")
    (local_backend.root / "ext" / "bad\\name").write_bytes(b"not a key")
    assert await local_backend.list_files() == ["ext/f.log"]
    assert await local_backend.list_dirs("ext") == []
    assert await local_backend.load("ext/f.log") == b"from ffmpeg"


async def test_files_of_other_tools_too_deep_for_a_key_are_not_listed(
    local_backend: LocalStorageBackend,
) -> None:
    deep = "/".join(["d" * 200] * 5)  # 1004 bytes: a key under it has 19 bytes left
    (local_backend.root / deep).mkdir(parents=True)
    (local_backend.root / deep / ("f" * 19)).write_bytes(b"fits")
    (local_backend.root / deep / ("g" * 20)).write_bytes(b"1025 bytes")
    no_room = deep + "/" + "e" * 18  # 1023 bytes: a folder that can hold no key
    (local_backend.root / no_room).mkdir()
    (local_backend.root / no_room / "h").write_bytes(b"1025 bytes")
    fits = deep + "/" + "f" * 19
    assert await local_backend.list_files() == [fits]
    assert [info.key async for info in local_backend.iter_files(deep)] == [fits]
    assert await local_backend.list_dirs(deep) == []
    assert await local_backend.get_total_size() == 4
    for key in await local_backend.list_files():
        assert await local_backend.load(key) == b"fits"  # every listed key is a key


async def test_sidecar_is_never_listed_and_is_removed_with_the_object(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("a.bin", b"x", content_type="video/mp4", metadata={"k": "v"})
    assert (local_backend.root / META_DIR).is_dir()
    assert await local_backend.list_files() == ["a.bin"]
    assert await local_backend.list_dirs() == []
    await local_backend.delete("a.bin")
    assert files_on_disk(local_backend.root) == []


async def test_no_sidecar_when_nothing_to_remember(local_backend: LocalStorageBackend) -> None:
    await local_backend.save("plain.txt", b"x")
    assert files_on_disk(local_backend.root) == ["plain.txt"]


def legacy_sidecar(backend: LocalStorageBackend, key: str, entry: dict[str, object]) -> None:
    """A sidecar as written before versions were recorded: one entry for the key's file."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    folder = backend.root / META_DIR / digest[:2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / digest).write_text(json.dumps(entry))


async def test_a_failed_move_keeps_the_metadata_of_a_sidecar_of_the_old_format(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("a.bin", b"payload")
    legacy_sidecar(local_backend, "a.bin", {"content_type": "video/webm", "metadata": {"k": "v"}})
    before = await local_backend.stat("a.bin")
    assert (before.content_type, before.metadata) == ("video/webm", {"k": "v"})
    replace = os.replace

    def refused(src: object, dst: object, **dir_fds: int) -> None:
        if dst == "b.bin":
            raise PermissionError(errno.EACCES, "Permission denied")
        replace(src, dst, **dir_fds)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(StoragePermissionError):
        await local_backend.move("a.bin", "b.bin")
    monkeypatch.undo()
    assert await local_backend.stat("a.bin") == before
    await local_backend.move("a.bin", "b.bin")
    moved = await local_backend.stat("b.bin")
    assert (moved.content_type, moved.metadata) == ("video/webm", {"k": "v"})


async def test_a_version_kept_by_a_write_keeps_the_metadata_of_a_sidecar_of_the_old_format(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("a.bin", b"payload")
    legacy_sidecar(local_backend, "a.bin", {"content_type": "video/webm", "metadata": {"k": "v"}})
    await local_backend.set_versioning(True)
    await local_backend.save("a.bin", b"new", metadata={"n": "1"})
    [old] = [v for v in await local_backend.list_versions("a.bin") if not v.is_latest]
    kept = await local_backend.stat("a.bin", version_id=old.version_id)
    assert (kept.content_type, kept.metadata) == ("video/webm", {"k": "v"})
    assert (await local_backend.stat("a.bin")).metadata == {"n": "1"}


async def test_symlink_out_of_root_is_refused(
    local_backend: LocalStorageBackend, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    local_backend.root.mkdir(parents=True)
    (local_backend.root / "link").symlink_to(outside)
    with pytest.raises(StoragePermissionError) as info:
        await local_backend.load("link/secret.txt")
    assert info.value.key == "link/secret.txt"
    with pytest.raises(StoragePermissionError):
        await local_backend.save("link/new.txt", b"x")
    assert not await local_backend.exists("link/secret.txt")
    assert await local_backend.list_files() == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


async def test_symlink_inside_root_is_followed(local_backend: LocalStorageBackend) -> None:
    await local_backend.save("real/a.txt", b"x")
    (local_backend.root / "alias").symlink_to(local_backend.root / "real")
    assert await local_backend.load("alias/a.txt") == b"x"


async def test_local_copy_hands_the_stored_file(local_backend: LocalStorageBackend) -> None:
    await local_backend.save("v/clip.webm", b"x")
    async with local_backend.local_copy("v/clip.webm") as path:
        # that very file (no copy), through a private folder outside the root
        assert path.name == "clip.webm"
        assert path.stat().st_ino == (local_backend.root / "v" / "clip.webm").stat().st_ino
        assert local_backend.root not in path.parents
    assert await local_backend.exists("v/clip.webm")


async def test_disk_full_keeps_previous_version_and_leaves_no_temp_file(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("a.bin", b"previous")
    real_replace = os.replace

    def full(src: str, dst: str, **dir_fds: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageUnavailableError, match="no space") as info:
        await local_backend.save("a.bin", b"new version")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (info.value.operation, info.value.key) == ("save", "a.bin")
    assert await local_backend.load("a.bin") == b"previous"
    assert files_on_disk(local_backend.root) == ["a.bin"]


async def test_disk_full_mid_stream_leaves_no_temp_file(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("a.bin", b"previous")

    def full(fd: int, buffers: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", full)

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    with pytest.raises(StorageUnavailableError):
        await local_backend.save("a.bin", body())
    assert await local_backend.load("a.bin") == b"previous"
    assert files_on_disk(local_backend.root) == ["a.bin"]


async def test_permission_denied_is_typed(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await local_backend.save("a.bin", b"previous")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    with pytest.raises(StoragePermissionError):
        await local_backend.save("a.bin", b"new")
    monkeypatch.undo()
    assert await local_backend.load("a.bin") == b"previous"
    assert files_on_disk(local_backend.root) == ["a.bin"]


async def test_presign_without_signing_key_says_what_to_configure(
    local_backend: LocalStorageBackend,
) -> None:
    with pytest.raises(StorageConfigError, match="STORAGE_LOCAL_SIGNING_KEY") as info:
        await local_backend.get_presigned_url("a.txt")
    assert "STORAGE_LOCAL_BASE_URL" in str(info.value)


async def test_presign_with_signing_key_points_at_base_url(tmp_path: Path) -> None:
    backend = LocalStorageBackend(
        tmp_path, base_url="http://127.0.0.1:8000/files", signing_key="k" * 32
    )
    url = await backend.get_presigned_url("a b/c.txt", expires_in=60, method="PUT")
    assert url.startswith("http://127.0.0.1:8000/files/a%20b/c.txt?expires=")
    assert "k" * 32 not in url
    assert "k" * 32 not in repr(backend)


async def test_refresh_usage_sees_writes_of_another_process(tmp_path: Path) -> None:
    ours = LocalStorageBackend(tmp_path, max_size_bytes=100)
    theirs = LocalStorageBackend(tmp_path)
    await ours.save("a", b"x" * 50)
    await theirs.save("b", b"x" * 40)
    await ours.save("c", b"x" * 20)  # usage is cached: 70 of 100, their 40 unseen
    await ours.refresh_usage()
    assert (await ours.get_usage()).used == 110
    with pytest.raises(StorageQuotaExceededError):
        await ours.save("d", b"x")


async def test_quota_refresh_interval_rescans(tmp_path: Path) -> None:
    ours = LocalStorageBackend(tmp_path, max_size_bytes=100, quota_refresh_seconds=0.0)
    theirs = LocalStorageBackend(tmp_path)
    await ours.save("a", b"x" * 50)
    await theirs.save("b", b"x" * 50)
    with pytest.raises(StorageQuotaExceededError):
        await ours.save("c", b"x")


async def test_durable_mode_round_trips(tmp_path: Path) -> None:
    backend = LocalStorageBackend(tmp_path, durable=True)
    await backend.save("d/a.bin", b"synced")

    async def body() -> AsyncIterator[bytes]:
        yield b"streamed"

    await backend.save("d/b.bin", body())
    assert await backend.load("d/a.bin") == b"synced"
    assert await backend.load("d/b.bin") == b"streamed"


async def test_a_stream_keeps_reading_the_version_it_opened(
    local_backend: LocalStorageBackend,
) -> None:
    old = bytes(range(256)) * 40
    await local_backend.save("v.bin", old)
    etag = (await local_backend.stat("v.bin")).etag
    iterator = local_backend.stream("v.bin", chunk_size=1000, if_match=etag)
    first = await anext(iterator)
    await local_backend.save("v.bin", b"new" * 5000)
    assert first + b"".join([c async for c in iterator]) == old


async def test_concurrent_listings_of_the_root_each_see_every_object(tmp_path: Path) -> None:
    # every listing opens the root anew: descriptors dup'ed from one would share a
    # directory offset, and listings running at once in two threads would each miss keys
    backend = LocalStorageBackend(tmp_path / "s")
    keys = sorted(f"k{i:03}" for i in range(300))
    await backend.save_many({key: b"x" for key in keys})
    for _ in range(30):
        listings = await asyncio.gather(*(backend.list_files() for _ in range(4)))
        assert all(listing == keys for listing in listings)
    await backend.aclose()


async def test_every_write_of_the_same_bytes_is_a_new_etag(
    local_backend: LocalStorageBackend,
) -> None:
    # local ETags name a file version, not the bytes (memory and S3: the MD5, unchanged);
    # docs/compatibility.md, "Switching backends: what can differ"
    await local_backend.save("k.txt", b"same")
    first = (await local_backend.stat("k.txt")).etag
    await local_backend.copy("k.txt", "k.txt", cache_control="no-store")
    copied = (await local_backend.stat("k.txt")).etag
    await local_backend.save("k.txt", b"same", cache_control="no-store")
    saved = (await local_backend.stat("k.txt")).etag
    assert len({first, copied, saved}) == 3
    with pytest.raises(PreconditionFailedError):
        await local_backend.save("k.txt", b"new", if_match=first)
    await local_backend.save("k.txt", b"new", if_match=saved)
    assert await local_backend.load("k.txt") == b"new"
