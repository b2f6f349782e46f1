"""Switching STORAGE_TYPE changes nothing a user sees: a differential test.

A seeded, bounded random sequence of operations runs on the memory, local and S3 (moto)
backends side by side, each with the same quotas, and after every operation what a user
sees must be the same: the return value, or the exception's type with the operation and
key it names (and a quota error's figures), stat fields, listings and usage.

Two differences are the stores' own, documented in docs/compatibility.md ("Switching
backends: what can differ"), and tolerated here exactly:

- S3 does not check the object-or-folder rule: an operation refused on memory with
  ``ObjectConflictError`` must be refused the same way on local, and is not sent to S3
  (where it would succeed and the stores would part ways).
- ETags are opaque version tags: memory and single-part S3 ones are the MD5 of the bytes
  (compared equal), local ones change on every write. An ETag read before a rewrite of
  the same bytes still matches on memory and S3; local may refuse it, with
  ``PreconditionFailedError`` and nothing else, and the write is then repeated there with
  the ETag of now so that the stores stay alike. An ETag of other bytes matches nowhere.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    LocalStorageBackend,
    MemoryStorageBackend,
    ObjectConflictError,
    ObjectInfo,
    PreconditionFailedError,
    StorageBackend,
    StorageError,
    StorageQuotaExceededError,
)
from file_storage.testing.suite._key_cases import INVALID_KEYS, VALID_KEYS
from tests.s3util import s3_backends

pytestmark = pytest.mark.s3

# more seeds for a longer hunt: FILE_STORAGE_TEST_PARITY_SEEDS=100
SEEDS = range(int(os.environ.get("FILE_STORAGE_TEST_PARITY_SEEDS", "4")))
STEPS = 200
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
    if isinstance(result, list):
        return [outcome(item) for item in result]
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


Op = Callable[[StorageBackend, Seen], Awaitable[Any]]


class Script:
    """Draws the operations of one seed; each is run on every backend."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.model: dict[str, bytes] = {}  # the bytes memory holds, to pick stale ETags
        self.stat_first: str | None = None  # a key whose ETags the next step needs

    def same_bytes_refused(self, results: dict[str, Any], text: str) -> bool:
        """The one tolerated ETag difference: an if_match of the same bytes that memory
        took and local refused."""
        return (
            text.endswith(", same)")
            and results["memory"][0] == "ok"
            and results["local"] == ("raise", "PreconditionFailedError", "save", self.stat_first)
        )

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
            ],
            weights=[30, 8, 5, 5, 3, 1, 8, 4, 2, 2, 4, 3, 5, 3, 2, 2, 3],
        )[0]
        return getattr(self, f"_{kind}")()

    # ------------------------------------------------------------ writes

    def _save(self) -> tuple[str, Op]:
        key, data = self.key(), self.content()
        ctype, meta = self.rng.choice(TYPES), self.rng.choice(METADATA)
        cache, disp = self.rng.choice(HEADERS), self.rng.choice(DISPOSITIONS)
        streamed = self.rng.random() < 0.25
        cond, arg = self.condition(key)
        if cond in ("current", "stale", "same"):
            self.stat_first = key

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
            body = chunks(data) if streamed else data
            return await backend.save(
                key,
                body,
                content_type=ctype,
                metadata=meta,
                cache_control=cache,
                content_disposition=disp,
                **options,
            )

        text = f"save({key!r}, {len(data)} bytes{' streamed' if streamed else ''}, {ctype!r}, "
        return (f"{text}{meta!r}, {cache!r}, {disp!r}, {cond})", run)

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


@pytest.fixture
async def stores(
    tmp_path: Path, moto_endpoint: str, s3_bucket: str
) -> AsyncIterator[dict[str, StorageBackend]]:
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        made: dict[str, StorageBackend] = {
            "memory": MemoryStorageBackend(max_size_bytes=LIMIT),
            "local": LocalStorageBackend(tmp_path / "local", max_size_bytes=LIMIT),
            "s3": make(prefix="storage", region="us-east-1", max_size_bytes=LIMIT),
        }
        for backend in made.values():
            backend.set_quota(QUOTA_FOLDER, FOLDER_LIMIT)
        try:
            yield made
        finally:
            await made["memory"].aclose()
            await made["local"].aclose()


async def attempt(op: Op, backend: StorageBackend, seen: Seen) -> Any:
    try:
        return ("ok", outcome(await op(backend, seen)))
    except Exception as exc:
        return failure(exc)


async def stat_all(stores: dict[str, StorageBackend], seen: dict[str, Seen], key: str) -> None:
    """Before a conditional write: each backend's ETag of ``key`` now, with its bytes."""
    for name, backend in stores.items():
        try:
            info = await backend.stat(key)
        except StorageError:
            continue
        remember(seen[name], key, info, await backend.load(key))


@pytest.mark.parametrize("seed", SEEDS)
async def test_every_backend_shows_the_same_outcomes(
    stores: dict[str, StorageBackend], seed: int
) -> None:
    script = Script(seed)
    seen = {name: Seen() for name in stores}
    history: list[str] = []
    for step in range(STEPS):
        text, op = script.draw()
        history.append(text)
        if script.stat_first is not None:
            await stat_all(stores, seen, script.stat_first)
        results = {"memory": await attempt(op, stores["memory"], seen["memory"])}
        results["local"] = await attempt(op, stores["local"], seen["local"])
        if script.same_bytes_refused(results, text):
            # a local ETag names a file version, not the bytes: read it again, write again
            key = script.stat_first
            assert key is not None
            seen["local"].etags[key] = []
            await stat_all({"local": stores["local"]}, seen, key)
            results["local"] = await attempt(op, stores["local"], seen["local"])
        refused = results["memory"][:2] == ("raise", ObjectConflictError.__name__)
        if not refused:  # S3 does not check the object-or-folder rule
            results["s3"] = await attempt(op, stores["s3"], seen["s3"])
        context = f"seed {seed} step {step}: {text}\n  after: " + "\n  ".join(history[-12:-1])
        for name, result in results.items():
            assert result == results["memory"], f"{name} differs from memory at {context}"
        # the state, as a user sees it: every object with its stat fields
        keys = await stores["memory"].list_files()
        for name, backend in stores.items():
            assert await backend.list_files() == keys, f"{name} keys at {context}"
        if step % 10 == 9 or step == STEPS - 1:
            await compare_state(stores, seen, keys, context)
        script.model = {k: await stores["memory"].load(k) for k in keys}


async def compare_state(
    stores: dict[str, StorageBackend], seen: dict[str, Seen], keys: list[str], context: str
) -> None:
    for key in keys:
        infos = {name: await backend.stat(key) for name, backend in stores.items()}
        data = await stores["memory"].load(key)
        for name, info in infos.items():
            remember(seen[name], key, info, data)  # ETags for later conditional writes
        want = info_fields(infos["memory"])
        for name, info in infos.items():
            assert info_fields(info) == want, f"{name} stat of {key!r} at {context}"
        for name, backend in stores.items():
            assert await backend.load(key) == data, f"{name} bytes of {key!r} at {context}"
        # memory and single-part S3 ETags are both the MD5 of the bytes
        md5 = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        assert infos["memory"].etag == infos["s3"].etag == md5, f"ETag of {key!r} at {context}"
    for prefix in ("", QUOTA_FOLDER):
        usage = {name: outcome(await b.get_usage(prefix)) for name, b in stores.items()}
        assert usage["local"] == usage["s3"] == usage["memory"], f"usage at {context}"


async def test_an_etag_of_the_same_bytes_rewritten_matches_on_memory_and_s3_only(
    stores: dict[str, StorageBackend],
) -> None:
    # the ETag difference the random test tolerates, shown: a header-only copy onto itself
    # and a save of identical bytes are new versions on local disk, not on memory and S3
    outcomes = {}
    for name, backend in stores.items():
        await backend.save("e/a.txt", b"same")
        before = (await backend.stat("e/a.txt")).etag
        await backend.copy("e/a.txt", "e/a.txt", cache_control="no-store")
        after_copy = (await backend.stat("e/a.txt")).etag
        await backend.save("e/a.txt", b"same", cache_control="no-store")
        try:
            await backend.save("e/a.txt", b"new", if_match=before)
        except PreconditionFailedError as exc:
            outcomes[name] = (before == after_copy, "refused", exc.operation, exc.key)
        else:
            outcomes[name] = (before == after_copy, "written", None, None)
    assert outcomes == {
        "memory": (True, "written", None, None),
        "s3": (True, "written", None, None),
        "local": (False, "refused", "save", "e/a.txt"),
    }
