"""Local versions: only names of the exact form the backend gives are versions. A
version record's temp file, or a file planted in a key's versions folder under any other
name, is never listed, read or restored; a version id of another form given by a caller
is no such version."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from file_storage import LocalStorageBackend, ObjectNotFoundError, ObjectVersion
from file_storage.backends.local import _fs
from file_storage.backends.local import _versions as versions
from file_storage.backends.local._meta import stamp

ID = "0123456789abcdef0123456789abcdef"  # the form of the ids the backend gives
SEQ = "0" * 19 + "1"


async def _two_versions(backend: LocalStorageBackend) -> str:
    """``k.txt`` with a prior version ``b"old!"``, both written with metadata (a kept
    version gets a record of it); returns the prior version's id."""
    await backend.set_versioning(True)
    await backend.save("k.txt", b"old!", metadata={"m": "1"})
    await backend.save("k.txt", b"new", metadata={"m": "2"})
    return (await backend.list_versions("k.txt"))[1].version_id


def _folder(backend: LocalStorageBackend) -> Path:
    return backend.root.joinpath(*versions._folder("k.txt"))


async def test_a_version_record_being_written_is_never_listed_as_a_version(
    local_backend: LocalStorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _two_versions(local_backend)
    loop = asyncio.get_running_loop()
    seen: list[list[ObjectVersion]] = []
    replace = os.replace

    def listing_before_the_rename(src: str, dst: str, **kwargs: int) -> None:
        # the hook: the record's temp file is there, its rename not yet done
        if dst.startswith("v-") and dst.endswith(".json") and len(seen) < 5:
            listing = local_backend.list_versions("k.txt")
            seen.append(asyncio.run_coroutine_threadsafe(listing, loop).result(30))
        replace(src, dst, **kwargs)

    monkeypatch.setattr(_fs.os, "replace", listing_before_the_rename)
    await local_backend.save("k.txt", b"newest", metadata={"m": "3"})
    monkeypatch.undo()
    assert len(seen) == 1
    assert [v.size for v in seen[0]] == [3, 4]  # as before the write: no temp file
    assert [v.size for v in await local_backend.list_versions("k.txt")] == [6, 3, 4]


@pytest.mark.parametrize(
    "name",
    [
        "v-1-planted",  # a short sequence, an id of no form we give
        f"v-{SEQ}-planted",
        f"v-{SEQ}-{ID}x",
        f"v-{SEQ}-{ID.upper()}",
        f"v-{SEQ}-{ID}.bak",
        f"v-{SEQ}-{ID}.json\\tmp-0123456789ab-{ID}",  # a record's temp file, left behind
        f"v-1-{ID}",
        f"v-{SEQ}0-{ID}",
    ],
)
async def test_a_planted_version_name_is_never_listed_read_or_restored(
    local_backend: LocalStorageBackend, name: str
) -> None:
    await _two_versions(local_backend)
    (_folder(local_backend) / name).write_bytes(b"planted")
    planted_id = name.split("-", 2)[2]
    listed = await local_backend.list_versions("k.txt")
    assert [v.size for v in listed] == [3, 4]
    assert planted_id not in [v.version_id for v in listed]
    with pytest.raises(ObjectNotFoundError):
        await local_backend.load("k.txt", version_id=planted_id)
    with pytest.raises(ObjectNotFoundError):
        await local_backend.stat("k.txt", version_id=planted_id)
    with pytest.raises(ObjectNotFoundError):
        await local_backend.restore_version("k.txt", planted_id)
    assert await local_backend.load("k.txt") == b"new"


async def test_a_live_file_id_of_another_form_in_the_current_record_is_not_used(
    local_backend: LocalStorageBackend,
) -> None:
    await _two_versions(local_backend)
    st = os.stat(local_backend.root / "k.txt")
    (_folder(local_backend) / "current").write_text(f'{{"{stamp(st)}": "../../outside"}}')
    listed = await local_backend.list_versions("k.txt")
    assert "../../outside" not in [v.version_id for v in listed]
    with pytest.raises(ObjectNotFoundError):
        await local_backend.load("k.txt", version_id="../../outside")
    await local_backend.save("k.txt", b"newest")  # the live file is kept, under a new id
    sizes = sorted(v.size for v in await local_backend.list_versions("k.txt"))
    assert sizes == [3, 4, 6]


@pytest.mark.parametrize(
    "version_id", ["../../k.txt", "v-1-x", "current", "name", "null/../x", ID + "/", ID[:-1]]
)
async def test_a_version_id_of_no_form_the_backend_gives_is_no_such_version(
    local_backend: LocalStorageBackend, version_id: str
) -> None:
    await _two_versions(local_backend)
    with pytest.raises(ObjectNotFoundError) as caught:
        await local_backend.load("k.txt", version_id=version_id)
    assert (caught.value.operation, caught.value.key) == ("load", "k.txt")
    with pytest.raises(ObjectNotFoundError):
        await local_backend.restore_version("k.txt", version_id)
    assert [v.size for v in await local_backend.list_versions("k.txt")] == [3, 4]
