"""Every backend accepts and rejects exactly the same keys, before any I/O."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath

import pytest

from file_storage import InvalidKeyError, StorageBackend
from file_storage.testing.suite._key_cases import (
    INVALID_KEYS,
    LOOK_ALIKE_KEYS,
    TRAILING_DOT_KEYS,
    VALID_KEYS,
)

Call = Callable[[StorageBackend, str, Path], Awaitable[object]]


async def _stream_first(backend: StorageBackend, key: str) -> None:
    async for _ in backend.stream(key):
        break


OPERATIONS: dict[str, Call] = {
    "save": lambda b, k, t: b.save(k, b"x"),
    "load": lambda b, k, t: b.load(k),
    "stream": lambda b, k, t: _stream_first(b, k),
    "exists": lambda b, k, t: b.exists(k),
    "stat": lambda b, k, t: b.stat(k),
    "get_size": lambda b, k, t: b.get_size(k),
    "delete": lambda b, k, t: b.delete(k),
    "delete_many": lambda b, k, t: b.delete_many(["ok.txt", k]),
    "copy_src": lambda b, k, t: b.copy(k, "dst.txt"),
    "copy_dst": lambda b, k, t: b.copy("ok.txt", k),
    "move_src": lambda b, k, t: b.move(k, "dst.txt"),
    "move_dst": lambda b, k, t: b.move("ok.txt", k),
    "upload_file": lambda b, k, t: b.upload_file(t, k),
    "download_file": lambda b, k, t: b.download_file(k, t.parent / "out.bin"),
    "get_presigned_url": lambda b, k, t: b.get_presigned_url(k),
}


@pytest.mark.parametrize("key", VALID_KEYS, ids=range(len(VALID_KEYS)))
async def test_valid_key_round_trips_and_lists_as_itself(backend: StorageBackend, key: str) -> None:
    assert await backend.save(key, b"data") == key
    assert await backend.load(key) == b"data"
    assert await backend.list_files() == [key]
    assert [info.key async for info in backend.iter_files()] == [key]
    assert (await backend.stat(key)).key == key


async def test_all_valid_keys_list_sorted(backend: StorageBackend) -> None:
    keys = [k for k in VALID_KEYS if not k.startswith(("seg/", "x" * 10))]
    for key in keys:
        await backend.save(key, b"v")
    assert await backend.list_files() == sorted(keys)


async def test_look_alike_keys_are_distinct_objects(backend: StorageBackend) -> None:
    for n, key in enumerate(LOOK_ALIKE_KEYS):
        await backend.save(key, str(n).encode())
    assert await backend.list_files("twins") == sorted(LOOK_ALIKE_KEYS)
    for n, key in enumerate(LOOK_ALIKE_KEYS):
        assert await backend.load(key) == str(n).encode(), key


@pytest.mark.backend_needs("trailing_dot_keys")
async def test_keys_ending_in_a_dot_are_distinct_objects(backend: StorageBackend) -> None:
    for n, key in enumerate(TRAILING_DOT_KEYS):
        assert await backend.save(key, str(n).encode()) == key
    assert await backend.list_files("twins") == sorted(TRAILING_DOT_KEYS)
    for n, key in enumerate(TRAILING_DOT_KEYS):
        assert await backend.load(key) == str(n).encode(), key


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("key", INVALID_KEYS, ids=range(len(INVALID_KEYS)))
async def test_invalid_key_rejected_by_every_operation(
    backend: StorageBackend, tmp_path: Path, operation: str, key: str
) -> None:
    await backend.save("ok.txt", b"keep")
    source = tmp_path / "src.bin"
    source.write_bytes(b"upload")
    with pytest.raises(InvalidKeyError) as info:
        await OPERATIONS[operation](backend, key, source)
    assert isinstance(info.value, ValueError)
    assert info.value.operation
    assert await backend.list_files() == ["ok.txt"]
    assert await backend.load("ok.txt") == b"keep"
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("key", ["/a", "a//", "a//b", "..", "a/../b", "bad\\p", "c\x01"])
@pytest.mark.parametrize(
    "operation", ["list_files", "list_dirs", "get_total_size", "delete_prefix", "iter_files"]
)
async def test_invalid_prefix_rejected(backend: StorageBackend, operation: str, key: str) -> None:
    await backend.save("ok.txt", b"keep")

    async def call() -> None:
        result = getattr(backend, operation)(key)
        if operation != "iter_files":  # a plain method: it checks the prefix when called
            await result

    with pytest.raises(InvalidKeyError):
        await call()
    assert await backend.list_files() == ["ok.txt"]


async def test_non_string_key_raises_invalid_key(backend: StorageBackend) -> None:
    with pytest.raises(InvalidKeyError):
        await backend.save(123, b"x")  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        await backend.load(b"a")  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [123, None, b"a.txt", 1.5, ["a.txt"]], ids=repr)
async def test_a_key_of_another_type_is_an_invalid_key_for_every_operation(
    backend: StorageBackend, tmp_path: Path, key: object
) -> None:
    await backend.save("ok.txt", b"keep")
    source = tmp_path / "src.bin"
    source.write_bytes(b"upload")
    for operation, call in OPERATIONS.items():
        with pytest.raises(InvalidKeyError) as info:
            await call(backend, key, source)  # type: ignore[arg-type]
        assert info.value.operation, operation
    for operation in ("list_files", "list_dirs", "get_total_size", "delete_prefix"):
        with pytest.raises(InvalidKeyError):
            await getattr(backend, operation)(key)
    assert await backend.list_files() == ["ok.txt"]
    assert await backend.load("ok.txt") == b"keep"


class _Key(str, enum.Enum):  # noqa: UP042 (the mixin whose f"{}" is not its text)
    REPORT = "k/report.txt"


async def test_a_str_subclass_key_comes_back_a_plain_str(backend: StorageBackend) -> None:
    # an enum member or other str subclass is a key like its text; what the backend
    # returns is the plain str on every backend (f"{key}" of a str Enum is "_Key.REPORT")
    returned = await backend.save(_Key.REPORT, b"x")
    await backend.copy(_Key.REPORT, "k/copy.txt")
    keys = [
        returned,
        *await backend.list_files(),
        (await backend.stat(_Key.REPORT)).key,
        *[info.key async for info in backend.iter_files()],
        *[info.key for info in (await backend.list_page()).files],
    ]
    assert all(type(key) is str for key in keys), [type(key) for key in keys]
    assert f"{returned}" == "k/report.txt"


async def test_pure_posix_path_accepted(backend: StorageBackend) -> None:
    await backend.save(PurePosixPath("a") / "b.txt", b"x")
    assert await backend.exists(PurePosixPath("a/b.txt"))
    assert await backend.list_files(PurePosixPath("a")) == ["a/b.txt"]
