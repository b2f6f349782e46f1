"""Conditional writes: overwrite=False (create only) and if_match=etag, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from file_storage import PreconditionFailedError, StorageBackend

pytestmark = pytest.mark.backend_needs("conditional_writes")

RACERS = 20


async def chunks(data: bytes, size: int = 3) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def test_create_only_stores_a_new_key(backend: StorageBackend) -> None:
    assert await backend.save("c/new.txt", b"first", overwrite=False) == "c/new.txt"
    assert await backend.load("c/new.txt") == b"first"


async def test_create_only_refuses_an_existing_key_and_keeps_it(backend: StorageBackend) -> None:
    await backend.save("c/a.txt", b"first", metadata={"who": "one"})
    with pytest.raises(PreconditionFailedError) as caught:
        await backend.save("c/a.txt", b"second", overwrite=False, metadata={"who": "two"})
    assert caught.value.operation == "save"
    assert caught.value.key == "c/a.txt"
    assert await backend.load("c/a.txt") == b"first"
    assert dict((await backend.stat("c/a.txt")).metadata) == {"who": "one"}
    assert await backend.list_files("c") == ["c/a.txt"]


async def test_create_only_stream_refused_stores_nothing(backend: StorageBackend) -> None:
    await backend.save("c/a.bin", b"first")
    with pytest.raises(PreconditionFailedError):
        await backend.save("c/a.bin", chunks(b"streamed body"), overwrite=False)
    assert await backend.load("c/a.bin") == b"first"
    assert await backend.list_files("c") == ["c/a.bin"]


async def test_concurrent_create_only_saves_have_exactly_one_winner(
    backend: StorageBackend,
) -> None:
    bodies = [f"writer {i:02d}".encode() * (i + 1) for i in range(RACERS)]

    async def create(i: int) -> bool:
        content = bodies[i] if i % 2 else chunks(bodies[i])  # bytes and streams mixed
        try:
            await backend.save("race/one.txt", content, overwrite=False)
        except PreconditionFailedError:
            return False
        return True

    won = await asyncio.gather(*(create(i) for i in range(RACERS)))
    assert won.count(True) == 1
    winner = bodies[won.index(True)]
    assert await backend.load("race/one.txt") == winner
    assert await backend.list_files("race") == ["race/one.txt"]
    assert (await backend.stat("race/one.txt")).size == len(winner)


async def test_refused_create_only_releases_its_quota(backend: StorageBackend) -> None:
    backend.set_quota("", 100)
    await backend.save("q/a.txt", b"x" * 60)
    with pytest.raises(PreconditionFailedError):
        await backend.save("q/a.txt", b"y" * 30, overwrite=False)
    assert (await backend.get_usage("")).used == 60
    await backend.save("q/b.txt", b"z" * 40)  # the refused write holds nothing back
    assert (await backend.get_usage("")).used == 100


async def test_if_match_replaces_that_version(backend: StorageBackend) -> None:
    await backend.save("m/a.txt", b"v1")
    etag = (await backend.stat("m/a.txt")).etag
    assert etag is not None
    await backend.save("m/a.txt", b"v2", if_match=etag)
    assert await backend.load("m/a.txt") == b"v2"


async def test_if_match_with_a_stale_etag_is_refused(backend: StorageBackend) -> None:
    await backend.save("m/a.txt", b"v1")
    stale = (await backend.stat("m/a.txt")).etag
    assert stale is not None
    await backend.save("m/a.txt", b"v2 is longer")
    with pytest.raises(PreconditionFailedError) as caught:
        await backend.save("m/a.txt", chunks(b"v3"), if_match=stale)
    assert (caught.value.operation, caught.value.key) == ("save", "m/a.txt")
    assert await backend.load("m/a.txt") == b"v2 is longer"


async def test_if_match_on_a_missing_key_is_refused(backend: StorageBackend) -> None:
    with pytest.raises(PreconditionFailedError):
        await backend.save("m/none.txt", b"v1", if_match='"0123456789abcdef"')
    assert not await backend.exists("m/none.txt")


async def test_if_match_stream_on_a_missing_key_is_refused(backend: StorageBackend) -> None:
    # the condition names a version, and there is none: refused like a stale ETag
    with pytest.raises(PreconditionFailedError) as caught:
        await backend.save("m/none.txt", chunks(b"streamed v1"), if_match='"0123456789abcdef"')
    assert (caught.value.operation, caught.value.key) == ("save", "m/none.txt")
    assert not await backend.exists("m/none.txt")


async def test_upload_file_create_only_both_ways(backend: StorageBackend, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(b"uploaded")
    await backend.upload_file(source, "u/a.bin", overwrite=False)
    with pytest.raises(PreconditionFailedError) as caught:
        await backend.upload_file(source, "u/a.bin", overwrite=False)
    assert (caught.value.operation, caught.value.key) == ("upload_file", "u/a.bin")
    assert await backend.load("u/a.bin") == b"uploaded"


async def test_upload_file_if_match_both_ways(backend: StorageBackend, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(b"uploaded")
    await backend.save("u/a.bin", b"old")
    etag = (await backend.stat("u/a.bin")).etag
    with pytest.raises(PreconditionFailedError):
        await backend.upload_file(source, "u/a.bin", if_match='"not-the-etag"')
    assert await backend.load("u/a.bin") == b"old"
    await backend.upload_file(source, "u/a.bin", if_match=etag, progress=lambda *_: None)
    assert await backend.load("u/a.bin") == b"uploaded"


async def test_conflicting_conditions_raise_value_error(backend: StorageBackend) -> None:
    with pytest.raises(ValueError, match="overwrite"):
        await backend.save("m/a.txt", b"x", overwrite=False, if_match='"e"')
    with pytest.raises(TypeError):
        await backend.save("m/a.txt", b"x", if_match="")
    assert not await backend.exists("m/a.txt")


async def test_if_match_takes_the_etag_without_its_quotes(backend: StorageBackend) -> None:
    # ETags come back quoted; one kept without its quotes (as S3 accepts it) names the
    # same version on every backend
    await backend.save("c/a.txt", b"first")
    bare = str((await backend.stat("c/a.txt")).etag).strip('"')
    await backend.save("c/a.txt", b"second", if_match=bare)
    assert await backend.load("c/a.txt") == b"second"
    bare = str((await backend.stat("c/a.txt")).etag).strip('"')
    assert b"".join([c async for c in backend.stream("c/a.txt", if_match=bare)]) == b"second"
    with pytest.raises(PreconditionFailedError):
        await backend.save("c/a.txt", b"third", if_match="0" * 32)
