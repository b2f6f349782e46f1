"""save_many / load_many: bounded concurrency, per-key results, one failure hides no other."""

from __future__ import annotations

import asyncio
import enum
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import PurePosixPath

import pytest

from file_storage import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageBackend,
    StorageQuotaExceededError,
)
from file_storage.backends.base import Content


async def test_save_many_saves_every_item_and_returns_keys(backend: StorageBackend) -> None:
    items = {f"batch/{i}.bin": bytes([i]) * (i + 1) for i in range(40)}  # dict[str, bytes]
    results = await backend.save_many(items, concurrency=4)
    assert results == {key: key for key in items}
    for key, content in items.items():
        assert await backend.load(key) == content


async def test_save_many_takes_pairs_and_streams(backend: StorageBackend) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"stre"
        yield b"amed"

    results = await backend.save_many([(PurePosixPath("p/a.txt"), b"a"), ("p/b.txt", body())])
    assert results == {"p/a.txt": "p/a.txt", "p/b.txt": "p/b.txt"}
    assert await backend.load("p/b.txt") == b"streamed"


async def test_save_many_bad_key_fails_alone(backend: StorageBackend) -> None:
    items: dict[str | PurePosixPath, bytes] = {"ok/1": b"1", "../escape": b"x", "ok/2": b"2"}
    results = await backend.save_many(items)
    assert list(results) == ["ok/1", "../escape", "ok/2"]
    assert isinstance(results["../escape"], InvalidKeyError)
    assert results["ok/1"] == "ok/1"
    assert results["ok/2"] == "ok/2"
    assert await backend.list_files("") == ["ok/1", "ok/2"]


async def test_save_many_checks_quota_per_item(backend: StorageBackend) -> None:
    backend.set_quota("q", 10)
    results = await backend.save_many([("q/a", b"x" * 6), ("q/b", b"y" * 6)], concurrency=1)
    assert results["q/a"] == "q/a"
    error = results["q/b"]
    assert isinstance(error, StorageQuotaExceededError)
    assert error.key == "q/b"
    assert await backend.list_files("q") == ["q/a"]


async def test_save_many_duplicate_path_writes_nothing(backend: StorageBackend) -> None:
    with pytest.raises(ValueError, match="twice"):
        await backend.save_many([("d/a", b"1"), ("d/b", b"2"), ("d/a", b"3")])
    assert await backend.list_files("") == []


async def test_save_many_bad_content_type_writes_nothing(backend: StorageBackend) -> None:
    with pytest.raises(TypeError):
        await backend.save_many({"t/a": b"1", "t/b": "text"})  # type: ignore[arg-type]
    assert await backend.list_files("") == []


@pytest.mark.parametrize("concurrency", [0, -1, True, 1.5])
async def test_bulk_refuses_bad_concurrency(backend: StorageBackend, concurrency: object) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await backend.save_many({"c/a": b"1"}, concurrency=concurrency)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency"):
        await backend.load_many(["c/a"], concurrency=concurrency)  # type: ignore[arg-type]
    assert await backend.list_files("") == []


async def test_load_many_returns_bytes_or_the_error_per_path(backend: StorageBackend) -> None:
    await backend.save("l/a", b"aaa")
    await backend.save("l/b", b"bbb")
    results = await backend.load_many(["l/a", "l/missing", "bad//key", PurePosixPath("l/b")])
    assert list(results) == ["l/a", "l/missing", "bad//key", "l/b"]
    assert results["l/a"] == b"aaa"
    assert results["l/b"] == b"bbb"
    missing = results["l/missing"]
    assert isinstance(missing, ObjectNotFoundError)
    assert (missing.operation, missing.key) == ("load", "l/missing")
    assert isinstance(results["bad//key"], InvalidKeyError)


@pytest.mark.parametrize("path", [123, b"b/bytes", None], ids=["int", "bytes", "none"])
async def test_bulk_path_of_another_type_is_an_invalid_key_and_nothing_runs(
    backend: StorageBackend, path: object
) -> None:
    # as save(123, ...) and load(123) answer; it cannot be one item's result (results
    # are keyed by the path's text), so the whole call is refused before any write
    await backend.save("b/kept", b"kept")
    with pytest.raises(InvalidKeyError) as saving:
        await backend.save_many([("b/new", b"1"), (path, b"2")])  # type: ignore[list-item]
    assert saving.value.operation == "save_many"
    with pytest.raises(InvalidKeyError) as loading:
        await backend.load_many(["b/kept", path])  # type: ignore[list-item]
    assert loading.value.operation == "load_many"
    assert await backend.list_files("") == ["b/kept"]


class _Key(str, enum.Enum):  # noqa: UP042 (the mixin whose str() is not its text)
    REPORT = "b/report.txt"


async def test_bulk_str_enum_path_is_its_text(backend: StorageBackend) -> None:
    # str() of a str Enum member is "_Key.REPORT": the object went to that key
    items: dict[str, bytes] = {_Key.REPORT: b"x"}
    saved = await backend.save_many(items)
    assert saved == {"b/report.txt": "b/report.txt"}
    assert await backend.list_files("") == ["b/report.txt"]
    assert await backend.load_many([_Key.REPORT]) == {"b/report.txt": b"x"}


async def test_load_many_refuses_a_single_str(backend: StorageBackend) -> None:
    with pytest.raises(TypeError):
        await backend.load_many("l/a")


async def test_load_many_runs_at_most_concurrency_at_once(backend: StorageBackend) -> None:
    await backend.save_many([(f"m/{i}", b"x") for i in range(12)])
    running = peak = 0
    load = backend.load

    async def counted(path: str) -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0)  # a yield point, so overlapping calls would show
            return await load(path)
        finally:
            running -= 1

    backend.load = counted  # type: ignore[misc, assignment]  # a final method, spied on
    results = await backend.load_many([f"m/{i}" for i in range(12)], concurrency=3)
    assert all(value == b"x" for value in results.values())
    assert peak == 3


class _SourceFailed(Exception):
    """What a caller's own content stream raises (not a StorageError: not the library's)."""


async def test_save_many_failing_stream_fails_alone(backend: StorageBackend) -> None:
    # one item's source breaks mid-way: the others are saved and reported, nothing of the
    # broken one is stored (its old content stays), and the quota counts exactly what is
    backend.set_quota("", 10_000)
    await backend.save("s/broken", b"old")
    started = asyncio.Event()

    async def breaks() -> AsyncIterator[bytes]:
        yield b"x" * 100
        started.set()
        raise _SourceFailed("the upload was cut")

    async def slow() -> AsyncIterator[bytes]:
        await started.wait()  # still writing when the other item fails
        yield b"y" * 50

    items: list[tuple[str, Content]] = [
        ("s/a", b"a" * 10),
        ("s/broken", breaks()),
        ("s/slow", slow()),
        ("s/b", b"b" * 20),
    ]
    results = await backend.save_many(items, concurrency=4)
    assert list(results) == ["s/a", "s/broken", "s/slow", "s/b"]
    assert isinstance(results["s/broken"], _SourceFailed)
    assert {k: v for k, v in results.items() if k != "s/broken"} == {
        "s/a": "s/a",
        "s/slow": "s/slow",
        "s/b": "s/b",
    }
    assert await backend.load("s/broken") == b"old"
    assert await backend.load("s/slow") == b"y" * 50
    assert await backend.list_files("s") == ["s/a", "s/b", "s/broken", "s/slow"]
    assert (await backend.get_usage()).used == 10 + 3 + 50 + 20
    await backend.refresh_usage()
    assert (await backend.get_usage()).used == 10 + 3 + 50 + 20


async def test_save_many_pulls_a_generator_only_as_saves_end(backend: StorageBackend) -> None:
    # 10,000 contents of 1 MiB from a generator must not be held at once: an item is
    # pulled only when one of the `concurrency` saves has ended
    landed: list[str] = []
    backend.subscribe(lambda event: landed.append(event.key))
    ahead: list[int] = []  # items pulled and not saved yet, at each pull

    def items() -> Iterator[tuple[str, bytes]]:
        for i in range(24):
            ahead.append(i + 1 - len(landed))
            yield f"g/{i:02d}", bytes([i]) * 10

    results = await backend.save_many(items(), concurrency=3)
    assert results == {f"g/{i:02d}": f"g/{i:02d}" for i in range(24)}
    assert len(ahead) == 24
    assert max(ahead) <= 3
    assert await backend.load("g/23") == bytes([23]) * 10


class _Content(bytearray):
    """A content a weak reference can follow (bytes cannot be weakly referenced)."""


async def test_save_many_holds_no_saved_content_of_a_generator(backend: StorageBackend) -> None:
    # what decides the memory a generator of large contents takes: the contents alive
    # (anywhere) when the next is pulled are at most those of the other saves running
    refs: list[weakref.ref[_Content]] = []
    alive: list[int] = []  # contents not freed yet, at each pull

    def items() -> Iterator[tuple[str, _Content]]:
        for i in range(24):
            alive.append(sum(ref() is not None for ref in refs))
            content = _Content(bytes([i]) * 1000)
            refs.append(weakref.ref(content))
            yield f"w/{i:02d}", content
            del content

    results = await backend.save_many(items(), concurrency=3)
    assert all(value == key for key, value in results.items())
    assert len(alive) == 24
    assert max(alive) <= 2  # the puller's own slot is free
    assert await backend.load("w/23") == bytes([23]) * 1000


async def test_save_many_from_a_generator_stops_at_a_path_given_twice(
    backend: StorageBackend,
) -> None:
    # a generator cannot be checked whole before the first write: the items before the
    # repeated path are saved, none from it on, and the call raises as for a collection
    pulled: list[str] = []

    def items() -> Iterator[tuple[str, bytes]]:
        for path, content in [("d/a", b"1"), ("d/b", b"2"), ("d/a", b"3"), ("d/c", b"4")]:
            pulled.append(path)
            yield path, content

    with pytest.raises(ValueError, match="twice"):
        await backend.save_many(items(), concurrency=1)
    assert pulled == ["d/a", "d/b", "d/a"]
    assert await backend.list_files("d") == ["d/a", "d/b"]
    assert await backend.load("d/a") == b"1"


async def test_save_many_from_a_generator_stops_at_a_bad_item(backend: StorageBackend) -> None:
    def items() -> Iterator[tuple[str, object]]:
        yield "t/a", b"1"
        yield "t/b", "text"  # not bytes
        yield "t/c", b"3"

    with pytest.raises(TypeError):
        await backend.save_many(items())  # type: ignore[arg-type]
    assert await backend.list_files("t") == ["t/a"]


async def test_save_many_refuses_an_async_iterable_of_items(backend: StorageBackend) -> None:
    # contents may be async iterables, the items may not: said so, nothing saved
    async def items() -> AsyncIterator[tuple[str, bytes]]:
        yield "ai/a", b"1"

    with pytest.raises(TypeError, match="not an async iterable"):
        await backend.save_many(items())  # type: ignore[arg-type]
    assert await backend.list_files("ai") == []


async def test_save_many_from_a_generator_that_raises_ends_its_saves_then_raises(
    backend: StorageBackend,
) -> None:
    # the caller's generator breaks (its own source went away) while saves run: those
    # end (saved), nothing after is pulled, and its exception comes out as itself
    class _SourceGone(Exception):
        pass

    pulled: list[str] = []

    def items() -> Iterator[tuple[str, bytes]]:
        for path in ("r/a", "r/b"):
            pulled.append(path)
            yield path, path.encode()
        raise _SourceGone("the source went away")

    with pytest.raises(_SourceGone):
        await backend.save_many(items(), concurrency=4)
    assert pulled == ["r/a", "r/b"]
    assert await backend.list_files("r") == ["r/a", "r/b"]
    assert await backend.load("r/b") == b"r/b"
