"""Large objects through every path: 64 MiB with sha256 equality, failures leave nothing."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import StorageBackend
from file_storage.testing.suite.fixtures import BIG_FILE_SIZE, MiB

SIZE = BIG_FILE_SIZE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while block := src.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


async def file_stream(path: Path, chunk: int = 3 * MiB + 17) -> AsyncIterator[bytes]:
    with path.open("rb") as src:
        while block := src.read(chunk):
            yield block


async def sha256_stream(backend: StorageBackend, key: str) -> str:
    digest = hashlib.sha256()
    async for chunk in backend.stream(key):
        assert len(chunk) <= MiB
        digest.update(chunk)
    return digest.hexdigest()


async def test_upload_and_download_file_64mib(
    backend: StorageBackend, big_file: tuple[Path, str], tmp_path: Path
) -> None:
    path, digest = big_file
    await backend.upload_file(path, "big/upload.webm")
    assert await backend.get_size("big/upload.webm") == SIZE
    out = await backend.download_file("big/upload.webm", tmp_path / "out.webm")
    assert sha256_file(out) == digest
    assert await sha256_stream(backend, "big/upload.webm") == digest


async def test_save_stream_of_unknown_length_64mib(
    backend: StorageBackend, big_file: tuple[Path, str]
) -> None:
    path, digest = big_file
    await backend.save("big/stream.webm", file_stream(path))
    assert (await backend.stat("big/stream.webm")).size == SIZE
    assert await sha256_stream(backend, "big/stream.webm") == digest
    assert (await backend.stat("big/stream.webm")).content_type == "video/webm"


async def test_save_bytes_and_load_64mib(
    backend: StorageBackend, big_file: tuple[Path, str]
) -> None:
    path, digest = big_file
    await backend.save("big/bytes.bin", path.read_bytes())
    assert hashlib.sha256(await backend.load("big/bytes.bin")).hexdigest() == digest


async def test_ranged_stream_of_large_object(
    backend: StorageBackend, big_file: tuple[Path, str]
) -> None:
    path, _ = big_file
    await backend.upload_file(path, "big/r.bin")
    data = path.read_bytes()
    for start, end in [
        (0, 10),
        (SIZE - 10, None),
        (SIZE, None),
        (SIZE + 5, SIZE + 10),
        (20 * MiB - 3, 20 * MiB + 3),
    ]:
        got = b"".join([c async for c in backend.stream("big/r.bin", start=start, end=end)])
        assert got == data[start:end]


async def test_local_copy_and_staged_upload_64mib(
    backend: StorageBackend, big_file: tuple[Path, str]
) -> None:
    path, digest = big_file
    await backend.upload_file(path, "big/in.webm")
    async with (
        backend.local_copy("big/in.webm") as src,
        backend.staged_upload("big/out.webm") as dst,
    ):
        assert sha256_file(src) == digest
        dst.write_bytes(src.read_bytes())  # an FFmpeg run, in a test
    assert await sha256_stream(backend, "big/out.webm") == digest


async def test_stream_failing_after_many_parts_leaves_nothing(
    backend: StorageBackend, big_file: tuple[Path, str]
) -> None:
    path, _ = big_file

    async def dies_half_way() -> AsyncIterator[bytes]:
        sent = 0
        async for block in file_stream(path):
            yield block
            sent += len(block)
            if sent > 40 * MiB:
                raise ConnectionResetError("client disconnected")

    with pytest.raises(ConnectionResetError):
        await backend.save("big/broken.webm", dies_half_way())
    assert await backend.list_files() == []


async def test_cancelled_upload_leaves_nothing(
    backend: StorageBackend, big_file: tuple[Path, str]
) -> None:
    path, _ = big_file
    halfway = asyncio.Event()

    async def slow_client() -> AsyncIterator[bytes]:
        sent = 0
        async for block in file_stream(path):
            yield block
            sent += len(block)
            if sent > 30 * MiB:
                halfway.set()
                await asyncio.Event().wait()  # the client stalls until cancelled

    task = asyncio.create_task(backend.save("big/cancelled.webm", slow_client()))
    await halfway.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await backend.list_files() == []
    assert not await backend.exists("big/cancelled.webm")
