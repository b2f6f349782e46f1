"""ETags and version ids no store issues (a control character, a lone surrogate): the
answer of a stale ETag or a missing version, the same on every backend, never an
exception from the SDK or a retried request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from file_storage import ObjectNotFoundError, PreconditionFailedError, StorageBackend

#: text no request can carry: a NUL, a line break, DEL, a lone surrogate (no UTF-8 for it)
UNSENDABLE = ["etag\x00", "etag\nx", "\x7f", "\ud800", '"\udcff"']
UNSENDABLE_IDS = ["nul", "newline", "del", "surrogate", "quoted-surrogate"]


async def _read(
    backend: StorageBackend, key: str, *, if_match: str | None = None, version_id: str | None = None
) -> bytes:
    stream = backend.stream(key, if_match=if_match, version_id=version_id)
    return b"".join([chunk async for chunk in stream])


@pytest.mark.backend_needs("conditional_writes")
@pytest.mark.parametrize("etag", UNSENDABLE, ids=UNSENDABLE_IDS)
async def test_save_if_match_an_unsendable_etag_fails_its_condition(
    backend: StorageBackend, etag: str
) -> None:
    await backend.save("a/k.txt", b"kept")
    with pytest.raises(PreconditionFailedError) as info:
        await backend.save("a/k.txt", b"replaced", if_match=etag)
    assert (info.value.operation, info.value.key) == ("save", "a/k.txt")
    assert await backend.load("a/k.txt") == b"kept"


@pytest.mark.backend_needs("pinned_reads")
@pytest.mark.parametrize("etag", UNSENDABLE, ids=UNSENDABLE_IDS)
async def test_stream_if_match_an_unsendable_etag_fails_its_condition(
    backend: StorageBackend, etag: str
) -> None:
    await backend.save("a/k.txt", b"kept")
    with pytest.raises(PreconditionFailedError) as info:
        await _read(backend, "a/k.txt", if_match=etag)
    assert (info.value.operation, info.value.key) == ("stream", "a/k.txt")


@pytest.mark.parametrize("version_id", UNSENDABLE, ids=UNSENDABLE_IDS)
async def test_reads_of_an_unsendable_version_id_find_no_such_version(
    backend: StorageBackend, version_id: str
) -> None:
    await backend.save("a/k.txt", b"kept")
    reads: dict[str, Callable[[], Awaitable[object]]] = {
        "load": lambda: backend.load("a/k.txt", version_id=version_id),
        "stat": lambda: backend.stat("a/k.txt", version_id=version_id),
        "stream": lambda: _read(backend, "a/k.txt", version_id=version_id),
    }
    for operation, read in reads.items():
        with pytest.raises(ObjectNotFoundError) as info:
            await read()
        assert (info.value.operation, info.value.key) == (operation, "a/k.txt")


@pytest.mark.parametrize("version_id", UNSENDABLE, ids=UNSENDABLE_IDS)
async def test_restore_of_an_unsendable_version_id_finds_no_such_version(
    backend: StorageBackend, version_id: str
) -> None:
    await backend.save("a/k.txt", b"kept")
    with pytest.raises(ObjectNotFoundError) as info:
        await backend.restore_version("a/k.txt", version_id)
    assert (info.value.operation, info.value.key) == ("restore_version", "a/k.txt")
    assert await backend.load("a/k.txt") == b"kept"
