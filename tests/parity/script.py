"""The operations of the differential test: a seeded script drawn once, run on every backend.

Each operation is drawn with its arguments from the seed, then run on each backend as an
``Op``; what a user sees of its result is reduced to backend-neutral values by
:func:`outcome` and :func:`failure`, which tests/parity/test_parity.py compares.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from file_storage import (
    ObjectInfo,
    ObjectVersion,
    StorageBackend,
    StorageError,
    StorageQuotaExceededError,
)
from file_storage.testing.suite._key_cases import INVALID_KEYS, VALID_KEYS

LIMIT = 6000  # the backend-wide quota: random writes cross it now and then
FOLDER_LIMIT = 1500  # and a folder's
QUOTA_FOLDER = "d/"

# keys that are folders of others ("d" and "d/x.bin"): the object-or-folder rule
PLAIN_KEYS = [
    "a.txt",
    "b.bin",
    "d",
    "d/x.bin",
    "d/e",
    "d/e/y.json",
    "users/u1",
    "users/u1/a.txt",
    "users/u1/s1/shot.png",
    "users/u10/b.txt",
    "users/u1-x/c.txt",
    "users/u1.txt",
]
# the suite's awkward names that are short enough to stay under the 1024-byte S3 limit
KEYS = PLAIN_KEYS + [k for k in VALID_KEYS if len(k.encode()) < 300]
BAD_KEYS = [k for k in INVALID_KEYS if len(k) < 40]
PREFIXES = ["", "d", "d/", "d/e", "users", "users/u1", "users/u1/", "unicode", "emoji/", "nope"]
BAD_PREFIXES = ["/", "a//b", "../x", "d/./e"]
PAYLOADS = [b"", b"x", b"same bytes", b"y" * 700, bytes(range(256)) * 3]
TYPES = [None, "text/plain", "video/webm", "application/json; charset=utf-8"]
METADATA: list[dict[str, str] | None] = [
    None,
    {},
    {"k": "v"},
    {"Mixed-Case": "Value", "owner": "u1"},
    {"uni": "Отпуск 2026 ✓"},
    {"bad name": "x"},  # not an HTTP token: InvalidMetadataError
]
HEADERS = [None, "max-age=60", "no-store"]
DISPOSITIONS = [None, 'attachment; filename="a.txt"', "inline"]


def outcome(result: Any) -> Any:
    """What a user sees of a return value, backend-neutral."""
    if isinstance(result, ObjectInfo):
        return ("info", *info_fields(result))
    if isinstance(result, ObjectVersion):  # ids are each store's own: "null" or not
        return ("version", result.version_id == "null", result.size, result.is_latest)
    if isinstance(result, list):
        return [outcome(item) for item in result]
    if isinstance(result, dict):  # save_many: each item's key, or its exception
        return {
            name: failure(value) if isinstance(value, BaseException) else outcome(value)
            for name, value in result.items()
        }
    if hasattr(result, "files") and hasattr(result, "next_start_after"):  # a ListPage
        return ("page", outcome(list(result.files)), list(result.dirs), result.next_start_after)
    if hasattr(result, "used") and hasattr(result, "limit"):  # a Usage
        return ("usage", result.prefix, result.used, result.limit)
    return result


def info_fields(info: ObjectInfo) -> tuple[Any, ...]:
    return (
        info.key,
        info.size,
        info.content_type,
        dict(info.metadata),
        info.cache_control,
        info.content_disposition,
    )


def listing_fields(info: ObjectInfo) -> tuple[Any, ...]:
    # a listing carries no content type or metadata on S3 (docs: iter_files)
    return (info.key, info.size)


def failure(exc: BaseException) -> Any:
    """What a user sees of an exception: its type, and the operation and key it names."""
    if isinstance(exc, StorageQuotaExceededError):
        return ("raise", type(exc).__name__, exc.operation, exc.key, exc.used, exc.limit)
    if isinstance(exc, StorageError):
        return ("raise", type(exc).__name__, exc.operation, exc.key)
    return ("raise", type(exc).__name__)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 97):
        yield data[start : start + 97]
    if not data:
        yield b""


@dataclass
class Seen:
    """What one backend told the user about a key: its ETags, with the bytes of each."""

    etags: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    # save_many items memory refused with ObjectConflictError, not sent to an object store
    conflicts: frozenset[str] = frozenset()


Op = Callable[[StorageBackend, Seen], Awaitable[Any]]


class Script:
    """Draws the operations of one seed; each is run on every backend."""

    def __init__(
        self, seed: int, files: Path, *, versions: bool = False, suspend: bool = True
    ) -> None:
        self.rng = random.Random(seed)
        self.files = files  # where upload_file's local files are written
        self.versions = versions  # draw the versioning operations too
        self.suspend = suspend  # and among them set_versioning(False)
        self.model: dict[str, bytes] = {}  # the bytes memory holds, to pick stale ETags
        self.stat_first: str | None = None  # a key whose ETags the next step needs
        self.same = False  # the step is a write with an if_match of the same bytes
        self.uploads = 0

    def key(self) -> str:
        rng = self.rng
        if rng.random() < 0.04:
            return rng.choice(BAD_KEYS)
        if self.model and rng.random() < 0.5:
            return rng.choice(sorted(self.model))
        return rng.choice(KEYS)

    def prefix(self) -> str:
        if self.rng.random() < 0.05:
            return self.rng.choice(BAD_PREFIXES)
        return self.rng.choice(PREFIXES)

    def content(self) -> bytes:
        if self.rng.random() < 0.7:
            return self.rng.choice(PAYLOADS)
        return self.rng.randbytes(self.rng.randrange(0, 2500))

    def condition(self, key: str) -> tuple[str, Any]:
        """``("overwrite", False)``, an if_match of the current version, of a stale one
        (other bytes), of a made-up one, or nothing."""
        roll = self.rng.random()
        if roll < 0.1:
            return ("overwrite", False)
        if roll < 0.2:
            return ("current", None)
        if roll < 0.24:
            return ("stale", self.model.get(key))
        if roll < 0.3:
            return ("same", self.model.get(key))
        if roll < 0.32:
            return ("bogus", '"0123456789abcdef0123456789abcdef"')
        return ("none", None)

    def draw(self) -> tuple[str, Op]:
        rng = self.rng
        self.stat_first = None
        kind = rng.choices(
            [
                "save",
                "copy",
                "move",
                "delete",
                "delete_many",
                "delete_prefix",
                "stat",
                "load",
                "exists",
                "get_size",
                "list_files",
                "list_dirs",
                "list_page",
                "iter_files",
                "total",
                "usage",
                "stream",
                "save_many",
                "versions",
            ],
            weights=[30, 8, 5, 5, 3, 1, 8, 4, 2, 2, 4, 3, 5, 3, 2, 2, 3, 4, 8 * self.versions],
        )[0]
        self.same = False
        return getattr(self, f"_{kind}")()

    # ------------------------------------------------------------ writes

    def _save(self) -> tuple[str, Op]:
        key, data = self.key(), self.content()
        ctype, meta = self.rng.choice(TYPES), self.rng.choice(METADATA)
        cache, disp = self.rng.choice(HEADERS), self.rng.choice(DISPOSITIONS)
        how = self.rng.choices(["bytes", "streamed", "upload_file"], [55, 25, 20])[0]
        cond, arg = self.condition(key)
        if cond in ("current", "stale", "same"):
            self.stat_first = key
        self.same = cond == "same"
        self.uploads += 1
        local = self.files / f"upload-{self.uploads}.bin"
        if how == "upload_file" and self.rng.random() < 0.05:
            local = self.files / "no-such-file.bin"  # ObjectNotFoundError, nothing stored
        elif how == "upload_file":
            local.write_bytes(data)

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            options: dict[str, Any] = {}
            if cond == "overwrite":
                options["overwrite"] = False
            elif cond == "current":
                options["if_match"] = current_etag(seen, key)
            elif cond == "stale":
                options["if_match"] = stale_etag(seen, key, arg)
            elif cond == "same":
                options["if_match"] = first_etag_of(seen, key, arg)
            elif cond == "bogus":
                options["if_match"] = arg
            if how == "upload_file":
                return await backend.upload_file(
                    local,
                    key,
                    content_type=ctype,
                    metadata=meta,
                    cache_control=cache,
                    content_disposition=disp,
                    **options,
                )
            body = chunks(data) if how == "streamed" else data
            return await backend.save(
                key,
                body,
                content_type=ctype,
                metadata=meta,
                cache_control=cache,
                content_disposition=disp,
                **options,
            )

        text = f"save({key!r}, {len(data)} bytes {how}, {ctype!r}, "
        return (f"{text}{meta!r}, {cache!r}, {disp!r}, {cond})", run)

    def _save_many(self) -> tuple[str, Op]:
        keys = [self.key() for _ in range(self.rng.randrange(0, 5))]
        items = [(key, self.content()) for key in keys]  # a key twice: ValueError
        streamed = self.rng.random() < 0.3

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            sent = [(k, chunks(d) if streamed else d) for k, d in items if k not in seen.conflicts]
            return await backend.save_many(sent, concurrency=1)  # in order: quota decides alike

        sizes = [(k, len(d)) for k, d in items]
        return (f"save_many({sizes!r}{' streamed' if streamed else ''})", run)

    def _copy(self) -> tuple[str, Op]:
        src = self.key()
        dst = src if self.rng.random() < 0.25 else self.key()
        cache, disp = self.rng.choice(HEADERS), self.rng.choice(DISPOSITIONS)

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            return await backend.copy(src, dst, cache_control=cache, content_disposition=disp)

        return (f"copy({src!r}, {dst!r}, {cache!r}, {disp!r})", run)

    def _move(self) -> tuple[str, Op]:
        src = self.key()
        dst = src if self.rng.random() < 0.15 else self.key()

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            return await backend.move(src, dst)

        return (f"move({src!r}, {dst!r})", run)

    def _delete(self) -> tuple[str, Op]:
        key = self.key()

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            return await backend.delete(key)

        return (f"delete({key!r})", run)

    def _delete_many(self) -> tuple[str, Op]:
        keys = [self.key() for _ in range(self.rng.randrange(0, 5))]

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            return await backend.delete_many(keys)

        return (f"delete_many({keys!r})", run)

    def _delete_prefix(self) -> tuple[str, Op]:
        prefix = self.rng.choice([p for p in PREFIXES if p] + BAD_PREFIXES)

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            return await backend.delete_prefix(prefix)

        return (f"delete_prefix({prefix!r})", run)

    # ------------------------------------------------------------ versions

    def _versions(self) -> tuple[str, Op]:
        """A versioning step: version ids are each store's own, so a version is named by
        its place in ``list_versions`` (newest first), or by an id no store has."""
        key = self.key()
        what = self.rng.choices(
            ["list", "load", "stat", "stream", "restore", "purge", "switch"],
            weights=[4, 3, 2, 1, 3, 2, 1],
        )[0]
        index = self.rng.choice([0, 1, 2, 5, -1])  # -1: an id that names no version
        keep = self.rng.choice([0, 1, 1, 2])
        enabled = self.rng.random() < 0.7 or not self.suspend

        async def version_id(backend: StorageBackend) -> str:
            versions = await backend.list_versions(key)
            if 0 <= index < len(versions):
                return versions[index].version_id
            return "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"  # well-formed, made up

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            if what == "list":
                return await backend.list_versions(key)
            if what == "purge":
                return await backend.purge_versions(key, keep)
            if what == "switch":
                return await backend.set_versioning(enabled)
            vid = await version_id(backend)
            if what == "load":
                return await backend.load(key, version_id=vid)
            if what == "stat":
                return await backend.stat(key, version_id=vid)
            if what == "stream":
                parts = backend.stream(key, start=1, end=600, chunk_size=64, version_id=vid)
                return b"".join([c async for c in parts])
            return await backend.restore_version(key, vid)

        args = {"purge": keep, "switch": enabled}.get(what, index)
        return (f"versions:{what}({key!r}, {args})", run)

    # ------------------------------------------------------------ reads

    def _read(self, name: str) -> tuple[str, Op]:
        key = self.key()

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            return await getattr(backend, name)(key)

        return (f"{name}({key!r})", run)

    def _stat(self) -> tuple[str, Op]:
        return self._read("stat")

    def _load(self) -> tuple[str, Op]:
        return self._read("load")

    def _exists(self) -> tuple[str, Op]:
        return self._read("exists")

    def _get_size(self) -> tuple[str, Op]:
        return self._read("get_size")

    def _stream(self) -> tuple[str, Op]:
        key = self.key()
        start = self.rng.choice([None, 0, 3, 700])
        end = self.rng.choice([None, 5, 650, 10_000])
        size = self.rng.choice([None, 1, 64])

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            parts = [c async for c in backend.stream(key, start=start, end=end, chunk_size=size)]
            assert all(len(c) <= (size or len(c)) for c in parts)
            return b"".join(parts)

        return (f"stream({key!r}, {start}, {end}, {size})", run)

    def _listing(self, name: str) -> tuple[str, Op]:
        prefix = self.prefix()

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            return await getattr(backend, name)(prefix)

        return (f"{name}({prefix!r})", run)

    def _list_files(self) -> tuple[str, Op]:
        return self._listing("list_files")

    def _list_dirs(self) -> tuple[str, Op]:
        return self._listing("list_dirs")

    def _total(self) -> tuple[str, Op]:
        return self._listing("get_total_size")

    def _usage(self) -> tuple[str, Op]:
        prefix = self.rng.choice(["", QUOTA_FOLDER, "users/"])

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            return await backend.get_usage(prefix)

        return (f"get_usage({prefix!r})", run)

    def _cursor(self) -> str | None:
        return self.rng.choice([None, None, "", "d", "d/", "d/e", "users/u1/", "users/u1", "zz"])

    def _list_page(self) -> tuple[str, Op]:
        prefix, after = self.prefix(), self._cursor()
        limit = self.rng.choice([1, 2, 3, 1000])
        recursive = self.rng.random() < 0.5

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            pages = []
            cursor = after
            for _ in range(40):  # every page to the end, bounded
                page = await backend.list_page(
                    prefix, limit=limit, start_after=cursor, recursive=recursive
                )
                pages.append(
                    (
                        [listing_fields(i) for i in page.files],
                        list(page.dirs),
                        page.next_start_after,
                    )
                )
                if page.next_start_after is None:
                    break
                cursor = page.next_start_after
            return pages

        return (f"list_page({prefix!r}, {limit}, {after!r}, {recursive})", run)

    def _iter_files(self) -> tuple[str, Op]:
        prefix, after = self.prefix(), self._cursor()
        recursive = self.rng.random() < 0.5

        async def run(backend: StorageBackend, seen: Seen) -> Any:
            found = backend.iter_files(prefix, start_after=after, recursive=recursive)
            return [listing_fields(info) async for info in found]

        return (f"iter_files({prefix!r}, {after!r}, {recursive})", run)


def remember(seen: Seen, key: str, info: ObjectInfo, data: bytes) -> None:
    if info.etag is not None:
        seen.etags.setdefault(key, []).append((info.etag, data))


def current_etag(seen: Seen, key: str) -> str | None:
    """The ETag of this backend's last stat of ``key`` (the script stats right before)."""
    known = seen.etags.get(key)
    return known[-1][0] if known else None


def first_etag_of(seen: Seen, key: str, now: bytes | None) -> str:
    """The first ETag this backend gave for ``key`` holding the bytes ``now``: the current
    one on memory and S3, maybe a version rewritten since on local disk."""
    for etag, data in seen.etags.get(key, []):
        if data == now:
            return etag
    return '"no-such-version"'


def stale_etag(seen: Seen, key: str, now: bytes | None) -> str:
    """An ETag this backend gave for ``key`` when it held other bytes than ``now``."""
    for etag, data in reversed(seen.etags.get(key, [])):
        if data != now:
            return etag
    return '"no-such-version"'
