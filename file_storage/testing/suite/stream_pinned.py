"""stream(if_match=): a read pinned to the version an ETag names."""

from __future__ import annotations

import pytest

from file_storage import ObjectNotFoundError, PreconditionFailedError, StorageBackend

pytestmark = pytest.mark.backend_needs("pinned_reads")


async def read(backend: StorageBackend, key: str, **kwargs: object) -> bytes:
    return b"".join([chunk async for chunk in backend.stream(key, **kwargs)])  # type: ignore[arg-type]


async def test_stream_with_the_current_etag_reads_that_version(backend: StorageBackend) -> None:
    await backend.save("p/a.bin", b"version one")
    etag = (await backend.stat("p/a.bin")).etag
    assert etag is not None
    assert await read(backend, "p/a.bin", if_match=etag) == b"version one"
    assert await read(backend, "p/a.bin", start=8, if_match=etag) == b"one"


async def test_stream_with_a_stale_etag_raises_precondition_failed(
    backend: StorageBackend,
) -> None:
    await backend.save("p/a.bin", b"version one")
    stale = (await backend.stat("p/a.bin")).etag
    assert stale is not None
    await backend.save("p/a.bin", b"version two, longer")
    with pytest.raises(PreconditionFailedError) as info:
        await read(backend, "p/a.bin", if_match=stale)
    assert (info.value.operation, info.value.key) == ("stream", "p/a.bin")


async def test_ranged_stream_with_a_stale_etag_raises_precondition_failed(
    backend: StorageBackend,
) -> None:
    await backend.save("p/a.bin", b"version one")
    stale = (await backend.stat("p/a.bin")).etag
    assert stale is not None
    await backend.save("p/a.bin", b"version two")
    with pytest.raises(PreconditionFailedError):
        await read(backend, "p/a.bin", start=2, end=5, if_match=stale)


@pytest.mark.parametrize("span", [{"start": 8}, {"start": 8, "end": 12}], ids=["from", "range"])
async def test_stream_past_the_end_of_a_shorter_new_version_raises_precondition_failed(
    backend: StorageBackend, span: dict[str, int]
) -> None:
    # the range lies past the end of the version now stored: still "another version", never
    # an empty read that a caller (a download already promising 9 bytes) takes as the slice
    await backend.save("p/a.bin", b"version one, long")
    stale = (await backend.stat("p/a.bin")).etag
    assert stale is not None
    await backend.save("p/a.bin", b"v2")
    with pytest.raises(PreconditionFailedError):
        await read(backend, "p/a.bin", if_match=stale, **span)


@pytest.mark.parametrize(
    "span", [{}, {"start": 2}, {"start": 2, "end": 5}], ids=["whole", "from", "range"]
)
async def test_stream_pinned_to_a_deleted_object_raises_object_not_found(
    backend: StorageBackend, span: dict[str, int]
) -> None:
    # not "that version changed": there is no object at all (a 404 on S3, GCS, local)
    await backend.save("p/a.bin", b"version one")
    etag = (await backend.stat("p/a.bin")).etag
    assert etag is not None
    await backend.delete("p/a.bin")
    with pytest.raises(ObjectNotFoundError) as info:
        await read(backend, "p/a.bin", if_match=etag, **span)
    assert (info.value.operation, info.value.key) == ("stream", "p/a.bin")
