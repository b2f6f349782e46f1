"""What only the memory backend has."""

from __future__ import annotations

import pytest

from file_storage import MemoryStorageBackend, StorageConfigError, StoragePermissionError


async def test_each_instance_is_its_own_store() -> None:
    first, second = MemoryStorageBackend(), MemoryStorageBackend()
    await first.save("a", b"x")
    assert await second.list_files() == []


async def test_presign_without_a_key_names_the_settings(
    memory_backend: MemoryStorageBackend,
) -> None:
    with pytest.raises(StorageConfigError, match="STORAGE_LOCAL_SIGNING_KEY"):
        await memory_backend.get_presigned_url("a.txt")


def test_short_signing_key_is_refused() -> None:
    with pytest.raises(StorageConfigError, match="32"):
        MemoryStorageBackend(base_url="/files", signing_key="short")


async def test_max_size_bytes_from_constructor() -> None:
    backend = MemoryStorageBackend(max_size_bytes=10)
    assert backend.max_size_bytes == 10
    assert "objects=0" in repr(backend)


async def test_move_whose_delete_fails_keeps_both_and_counts_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = MemoryStorageBackend(max_size_bytes=1000)
    await backend.save("src", b"x" * 400)

    async def denied(key: str) -> None:
        raise StoragePermissionError("access denied")

    monkeypatch.setattr(backend, "_delete", denied)
    with pytest.raises(StoragePermissionError) as info:
        await backend.move("src", "dst")
    assert (info.value.operation, info.value.key) == ("move", "src")
    assert await backend.list_files() == ["dst", "src"]
    assert (await backend.get_usage()).used == 800


async def test_a_stream_keeps_reading_the_version_it_opened(
    memory_backend: MemoryStorageBackend,
) -> None:
    old = bytes(range(256)) * 40
    await memory_backend.save("v.bin", old)
    etag = (await memory_backend.stat("v.bin")).etag
    iterator = memory_backend.stream("v.bin", chunk_size=1000, if_match=etag)
    first = await anext(iterator)
    await memory_backend.save("v.bin", b"new" * 5000)
    assert first + b"".join([c async for c in iterator]) == old


async def test_versioning_turns_on_under_the_redis_ledger_even_while_redis_is_away() -> None:
    # nothing listens on port 9: the state reaches Redis with the next ledger step
    backend = MemoryStorageBackend(quota_redis_url="redis://127.0.0.1:9/0")
    await backend.set_versioning(True)
    assert [v.is_latest for v in await backend.list_versions("k")] == []


async def test_listings_carry_no_content_type_metadata_or_headers_like_the_others(
    memory_backend: MemoryStorageBackend,
) -> None:
    backend = memory_backend
    # S3, GCS, Azure and local listings do not carry them: code reading them from a
    # listing must fail its tests on memory too, not only in production
    await backend.save("d/a.json", b"{}", metadata={"k": "v"}, cache_control="no-store")
    listed = [info async for info in backend.iter_files()]
    listed += (await backend.list_page()).files
    listed += [info async for info in backend.iter_files("d", recursive=False)]
    for info in listed:
        stat = await backend.stat("d/a.json")
        assert (info.key, info.size, info.etag) == ("d/a.json", 2, stat.etag)
        assert (info.content_type, dict(info.metadata)) == (None, {})
        assert (info.cache_control, info.content_disposition) == (None, None)
