"""Switching STORAGE_TYPE changes nothing a user sees: a differential test.

A seeded, bounded random sequence of operations (tests/parity/script.py) runs on the
memory backend and on others side by side, each with the same quotas, and after every
operation what a user sees must be the same: the return value, or the exception's type
with the operation and key it names (and a quota error's figures), stat fields, listings
and usage. The sets: memory, local and S3 (moto); memory and S3 through obstore; memory
and GCS (fake-gcs-server); memory and Azure (Azurite); and memory, local and both S3
transports with versioning on, where the script adds versioning steps.

Two differences are the stores' own, documented in docs/compatibility.md ("Switching
backends: what can differ"), and tolerated here exactly:

- Object stores (S3, GCS, Azure) do not check the object-or-folder rule: an operation
  refused on memory with ``ObjectConflictError`` must be refused the same way on local,
  and is not sent to an object store (where it would succeed and the stores would part
  ways); of a ``save_many``, only the items memory refused so are left out there.
- ETags are opaque version tags: memory and single-part S3 ones are the MD5 of the bytes
  (compared equal), local, GCS and Azure ones are the store's own. An ETag read before a
  rewrite of the same bytes still matches on memory, S3 and GCS; local and Azure, whose
  ETags change on every write, may refuse it, with ``PreconditionFailedError`` and
  nothing else, and the write is then repeated there with the ETag of now so that the
  stores stay alike. An ETag of other bytes matches nowhere.

Two gaps are moto's, not S3's: it lists a folder holding only delete markers (made S3's
for these tests, below), and it keeps no version written while versioning is suspended
(tests/s3util.py), so only memory and local suspend versioning when S3 runs on moto.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from file_storage import (
    ObjectConflictError,
    PreconditionFailedError,
    StorageBackend,
    StorageError,
)
from tests.conftest import BUILT_IN_STORES
from tests.parity.script import (
    FOLDER_LIMIT,
    LIMIT,
    QUOTA_FOLDER,
    Op,
    Script,
    Seen,
    failure,
    info_fields,
    outcome,
    remember,
)
from tests.s3util import SERVER, missing_feature, s3_backends

# more seeds for a longer hunt (on every set): FILE_STORAGE_TEST_PARITY_SEEDS=100
HUNT = os.environ.get("FILE_STORAGE_TEST_PARITY_SEEDS")
STEPS = 200

# stores that do not check the object-or-folder rule
OBJECT_STORES = frozenset({"s3", "s3_obstore", "gcs", "azure"})
# stores whose ETag is the MD5 of the bytes (an object sent in one request)
MD5_ETAGS = frozenset({"memory", "s3", "s3_obstore"})
# stores whose ETag changes on every write, also of the same bytes
ETAG_PER_WRITE = frozenset({"local", "azure"})

# each set: its stores, whether versioning is on, its marks, and its seeds by default (the
# sets share the scripts: each runs seeds of its own, the slower stores fewer of them)
GROUPS: dict[str, tuple[tuple[str, ...], bool, tuple[pytest.MarkDecorator, ...], range]] = {
    "local_s3": (("memory", "local", "s3"), False, (pytest.mark.s3,), range(4)),
    "s3_obstore": (("memory", "s3_obstore"), False, (pytest.mark.s3,), range(4, 6)),
    "gcs": (("memory", "gcs"), False, (pytest.mark.gcs,), range(6, 7)),
    "azure": (("memory", "azure"), False, (pytest.mark.azure,), range(7, 8)),
    "versions": (("memory", "local", "s3", "s3_obstore"), True, (pytest.mark.s3,), range(1)),
    # versioning suspended and enabled again, which moto cannot take
    "versions_local": (("memory", "local"), True, (), range(8, 12)),
}
CASES = [
    pytest.param((names, versions), seed, marks=marks, id=f"{group}-{seed}")
    for group, (names, versions, marks, seeds) in GROUPS.items()
    for seed in (range(int(HUNT)) if HUNT else seeds)
]


@pytest.fixture(autouse=True)
def _moto_lists_live_folders_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto 5 lists a folder whose every key has a delete marker as a common prefix
    (``list_dirs``, ``list_page(recursive=False)``); S3 lists folders of current objects
    only. The moto server runs in this process: its listing is made to do the same."""
    if SERVER.endpoint is not None:
        return
    from moto.s3.models import FakeDeleteMarker, S3Backend

    listed = S3Backend.list_objects

    def list_objects(self: S3Backend, bucket: Any, prefix: Any, *a: Any, **kw: Any) -> Any:
        keys, folders, *rest = listed(self, bucket, prefix, *a, **kw)
        live = [
            name
            for name, key in bucket.keys.items()
            if not isinstance(key, FakeDeleteMarker) and name.startswith(prefix or "")
        ]
        folders = [f for f in folders if any(name.startswith(f) for name in live)]
        return (keys, folders, *rest)

    monkeypatch.setattr(S3Backend, "list_objects", list_objects)


# both S3 transports in one set: the same bucket, under prefixes of their own
FIXTURES = {"s3_obstore": "s3_obstore_apart"}


@pytest.fixture
async def s3_obstore_apart(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[StorageBackend]:
    async with s3_backends(moto_endpoint, s3_bucket) as make:
        yield make(prefix="obstore", region="us-east-1", client="obstore")


@pytest.fixture
def stores(request: pytest.FixtureRequest) -> tuple[dict[str, StorageBackend], bool]:
    """The backends of one set, by the conftest fixtures, each with the same quotas; and
    whether the test turns versioning on."""
    names, versions = request.param
    made: dict[str, StorageBackend] = {
        name: request.getfixturevalue(FIXTURES.get(name, f"{name}_backend")) for name in names
    }
    for backend in made.values():
        backend.set_quota("", LIMIT)
        backend.set_quota(QUOTA_FOLDER, FOLDER_LIMIT)
    return made, versions


async def attempt(op: Op, backend: StorageBackend, seen: Seen) -> Any:
    try:
        return ("ok", outcome(await op(backend, seen)))
    except Exception as exc:
        # PARITY_DEBUG=1: the cause of a plain StorageError, the sign of an unmapped answer
        if os.environ.get("PARITY_DEBUG") and type(exc) is StorageError:
            import traceback

            traceback.print_exception(exc)
        return failure(exc)


async def stat_all(stores: dict[str, StorageBackend], seen: dict[str, Seen], key: str) -> None:
    """Before a conditional write: each backend's ETag of ``key`` now, with its bytes."""
    for name, backend in stores.items():
        try:
            info = await backend.stat(key)
        except StorageError:
            continue
        remember(seen[name], key, info, await backend.load(key))


def same_bytes_refused(script: Script, name: str, results: dict[str, Any]) -> bool:
    """The one tolerated ETag difference: an if_match of the same bytes that memory took
    and a store whose ETag changes on every write refused."""
    return (
        script.same
        and name in ETAG_PER_WRITE
        and results["memory"][0] == "ok"
        and results[name][:2] == ("raise", PreconditionFailedError.__name__)
        and results[name][3] == script.stat_first
    )


def conflicts(result: Any) -> frozenset[str]:
    """The save_many items memory refused with ObjectConflictError."""
    if result[0] != "ok" or not isinstance(result[1], dict):
        return frozenset()
    refused = ("raise", ObjectConflictError.__name__)
    return frozenset(k for k, v in result[1].items() if isinstance(v, tuple) and v[:2] == refused)


async def run_step(
    script: Script, op: Op, stores: dict[str, StorageBackend], seen: dict[str, Seen]
) -> dict[str, Any]:
    """Run one operation on every store: memory first, the reference."""
    results = {"memory": await attempt(op, stores["memory"], seen["memory"])}
    refused = results["memory"][:2] == ("raise", ObjectConflictError.__name__)
    left_out = conflicts(results["memory"])
    for name, backend in stores.items():
        if name == "memory" or (name in OBJECT_STORES and refused):
            continue
        seen[name].conflicts = left_out if name in OBJECT_STORES else frozenset()
        results[name] = await attempt(op, backend, seen[name])
        if same_bytes_refused(script, name, results):
            # its ETag names a version, not the bytes: read it again, write again
            key = script.stat_first
            assert key is not None
            seen[name].etags[key] = []
            await stat_all({name: backend}, seen, key)
            results[name] = await attempt(op, backend, seen[name])
        if name in OBJECT_STORES and left_out and results[name][0] == "ok":
            # the items it was not sent: memory's refusals, put back to compare the rest
            shown = dict(results[name][1])
            shown.update({k: results["memory"][1][k] for k in left_out})
            results[name] = ("ok", {k: shown[k] for k in results["memory"][1]})
    return results


@pytest.mark.parametrize(("stores", "seed"), CASES, indirect=["stores"])
async def test_every_backend_shows_the_same_outcomes(
    stores: tuple[dict[str, StorageBackend], bool], seed: int, tmp_path: Path
) -> None:
    backends, versions = stores
    if versions:
        for backend in backends.values():
            await backend.set_versioning(True)
    # moto keeps no version of a key written while versioning is suspended (s3util)
    s3 = any(name.startswith("s3") for name in backends)
    suspend = not s3 or missing_feature(["suspended_versioning"]) is None
    script = Script(seed, tmp_path, versions=versions, suspend=suspend)
    seen = {name: Seen() for name in backends}
    history: list[str] = []
    for step in range(STEPS):
        text, op = script.draw()
        history.append(text)
        if script.stat_first is not None:
            await stat_all(backends, seen, script.stat_first)
        results = await run_step(script, op, backends, seen)
        context = f"seed {seed} step {step}: {text}\n  after: " + "\n  ".join(
            history[-int(os.environ.get("PARITY_HISTORY", "12")) : -1]
        )
        for name, result in results.items():
            assert result == results["memory"], f"{name} differs from memory at {context}"
        # the state, as a user sees it: every object with its stat fields
        keys = await backends["memory"].list_files()
        for name, backend in backends.items():
            assert await backend.list_files() == keys, f"{name} keys at {context}"
        if step % 10 == 9 or step == STEPS - 1:
            await compare_state(backends, seen, keys, context)
        script.model = {k: await backends["memory"].load(k) for k in keys}


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
        for name in MD5_ETAGS & stores.keys():
            assert infos[name].etag == md5, f"{name} ETag of {key!r} at {context}"
    for prefix in ("", QUOTA_FOLDER):
        usage = {name: outcome(await b.get_usage(prefix)) for name, b in stores.items()}
        for name, figures in usage.items():
            assert figures == usage["memory"], f"{name} usage at {context}"


@pytest.fixture(params=BUILT_IN_STORES)
def one(request: pytest.FixtureRequest) -> tuple[str, StorageBackend]:
    backend: StorageBackend = request.getfixturevalue(f"{request.param}_backend")
    return request.param, backend


async def test_an_etag_of_the_same_bytes_rewritten_matches_where_it_is_the_bytes(
    one: tuple[str, StorageBackend],
) -> None:
    # the ETag difference the random test tolerates, shown: a header-only copy onto itself
    # and a save of identical bytes are new versions on local disk and Azure, not on
    # memory, S3 and GCS
    name, backend = one
    await backend.save("e/a.txt", b"same")
    before = (await backend.stat("e/a.txt")).etag
    await backend.copy("e/a.txt", "e/a.txt", cache_control="no-store")
    after_copy = (await backend.stat("e/a.txt")).etag
    await backend.save("e/a.txt", b"same", cache_control="no-store")
    try:
        await backend.save("e/a.txt", b"new", if_match=before)
    except PreconditionFailedError as exc:
        outcome = (before == after_copy, "refused", exc.operation, exc.key)
    else:
        outcome = (before == after_copy, "written", None, None)
    if name in ETAG_PER_WRITE:
        assert outcome == (False, "refused", "save", "e/a.txt")
    else:
        assert outcome == (True, "written", None, None)
