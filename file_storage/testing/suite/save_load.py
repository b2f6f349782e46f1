"""save / load: the round trip, content types, metadata, streams, atomicity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import PurePosixPath

import pytest

from file_storage import ObjectNotFoundError, StorageBackend, StorageError


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def failing_stream(good: bytes, exc: Exception) -> AsyncIterator[bytes]:
    yield good
    raise exc


async def test_save_returns_normalized_key(backend: StorageBackend) -> None:
    assert await backend.save("a/b.txt", b"x") == "a/b.txt"
    assert await backend.save(PurePosixPath("a/c.txt"), b"x") == "a/c.txt"


async def test_load_returns_saved_bytes(backend: StorageBackend) -> None:
    await backend.save("docs/hello.txt", b"hello world")
    assert await backend.load("docs/hello.txt") == b"hello world"


@pytest.mark.parametrize("content", [bytearray(b"abc"), memoryview(b"abc")])
async def test_save_accepts_bytes_like(backend: StorageBackend, content: bytes) -> None:
    await backend.save("k.bin", content)
    assert await backend.load("k.bin") == b"abc"


async def test_save_empty_object(backend: StorageBackend) -> None:
    await backend.save("empty.bin", b"")
    assert await backend.load("empty.bin") == b""
    assert await backend.get_size("empty.bin") == 0


async def test_save_overwrites(backend: StorageBackend) -> None:
    await backend.save("k.txt", b"first version")
    await backend.save("k.txt", b"second")
    assert await backend.load("k.txt") == b"second"


async def test_save_async_iterable(backend: StorageBackend) -> None:
    # a bytearray chunk on purpose: bytes-like chunks are accepted
    chunks_ = chunks(b"ab", b"", bytearray(b"cd"), b"e" * 100_000)  # type: ignore[arg-type]
    await backend.save("s.bin", chunks_)
    assert await backend.load("s.bin") == b"abcd" + b"e" * 100_000


async def test_save_stream_of_non_bytes_raises_type_error(backend: StorageBackend) -> None:
    async def texts() -> AsyncIterator[str]:
        yield "not bytes"

    with pytest.raises(TypeError):
        await backend.save("t.txt", texts())  # type: ignore[arg-type]
    assert not await backend.exists("t.txt")


async def test_save_rejects_non_bytes_content(backend: StorageBackend) -> None:
    with pytest.raises(TypeError):
        await backend.save("t.txt", "text")  # type: ignore[arg-type]


async def test_failed_stream_leaves_no_object(backend: StorageBackend) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        await backend.save("f.bin", failing_stream(b"x" * 1000, RuntimeError("boom")))
    assert not await backend.exists("f.bin")
    assert await backend.list_files() == []


async def test_failed_stream_keeps_previous_version(backend: StorageBackend) -> None:
    await backend.save("f.bin", b"old")
    with pytest.raises(RuntimeError):
        await backend.save("f.bin", failing_stream(b"new", RuntimeError("boom")))
    assert await backend.load("f.bin") == b"old"
    assert await backend.list_files() == ["f.bin"]


async def test_load_missing_raises_object_not_found(backend: StorageBackend) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        await backend.load("missing/file.txt")
    assert info.value.operation == "load"
    assert info.value.key == "missing/file.txt"
    assert isinstance(info.value, FileNotFoundError)
    assert "load 'missing/file.txt'" in str(info.value)


async def test_load_of_folder_raises_object_not_found(backend: StorageBackend) -> None:
    await backend.save("dir/inner.txt", b"x")
    with pytest.raises(ObjectNotFoundError):
        await backend.load("dir")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a.txt", "text/plain"),
        ("v/video.mp4", "video/mp4"),
        ("v/clip.webm", "video/webm"),
        ("v/clip.MKV", "video/x-matroska"),
        ("a/voice.m4a", "audio/mp4"),
        ("img/p.heic", "image/heic"),
        ("img/p.webp", "image/webp"),
        ("img/p.png", "image/png"),
        ("hls/seg00001.ts", "video/mp2t"),
        ("dash/chunk-1.m4s", "video/iso.segment"),
        ("dash/manifest.mpd", "application/dash+xml"),
        ("hls/index.m3u8", "application/vnd.apple.mpegurl"),
        ("a/voice.opus", "audio/opus"),
        ("a/take.wav", "audio/wav"),
        ("logs/run.log", "text/plain"),
        ("logs/run.log.gz", "application/gzip"),
        ("logs/run.ndjson", "application/x-ndjson"),
        ("dump.tar", "application/x-tar"),
        ("dump.tar.zst", "application/zstd"),
        ("conf/app.yaml", "application/yaml"),
        ("web/app.js", "text/javascript"),
        ("noext", "application/octet-stream"),
        ("weird.zz-unknown", "application/octet-stream"),
    ],
)
async def test_content_type_guessed_from_extension(
    backend: StorageBackend, key: str, expected: str
) -> None:
    await backend.save(key, b"x")
    assert (await backend.stat(key)).content_type == expected


async def test_explicit_content_type_wins(backend: StorageBackend) -> None:
    await backend.save("a.txt", b"{}", content_type="application/json")
    assert (await backend.stat("a.txt")).content_type == "application/json"


async def test_overwrite_resets_content_type_and_metadata(backend: StorageBackend) -> None:
    await backend.save("a.txt", b"{}", content_type="application/json", metadata={"x": "1"})
    await backend.save("a.txt", b"plain")
    info = await backend.stat("a.txt")
    assert info.content_type == "text/plain"
    assert dict(info.metadata) == {}


async def test_metadata_round_trips_lower_cased(backend: StorageBackend) -> None:
    await backend.save("m.bin", b"x", metadata={"Session-Id": "s1", "step": "3"})
    assert dict((await backend.stat("m.bin")).metadata) == {"session-id": "s1", "step": "3"}


async def test_metadata_on_streamed_save(backend: StorageBackend) -> None:
    await backend.save("m.bin", chunks(b"x"), content_type="video/mp4", metadata={"a": "b"})
    info = await backend.stat("m.bin")
    assert (info.content_type, dict(info.metadata)) == ("video/mp4", {"a": "b"})


@pytest.mark.parametrize(
    "metadata",
    [{"bad key": "v"}, {"": "v"}, {"k\u00e9": "v"}],
)
async def test_bad_metadata_raises_value_error_and_writes_nothing(
    backend: StorageBackend, metadata: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="metadata"):
        await backend.save("m.bin", b"x", metadata=metadata)
    assert not await backend.exists("m.bin")


async def test_progress_reports_bytes(backend: StorageBackend) -> None:
    seen: list[tuple[int, int | None]] = []
    await backend.save("p.bin", b"12345", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (5, 5)
    seen.clear()
    await backend.save("p.bin", chunks(b"12", b"345"), progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, None), (5, None)]


async def test_errors_are_storage_errors_never_sdk_errors(backend: StorageBackend) -> None:
    for call in (backend.load("nope"), backend.stat("nope"), backend.get_size("nope")):
        with pytest.raises(StorageError) as info:
            await call
        assert type(info.value).__module__ == "file_storage.errors"
