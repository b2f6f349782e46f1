"""Local only: a refused conditional write leaves no temp file and no sidecar record."""

from __future__ import annotations

import pytest

from file_storage import LocalStorageBackend, ObjectConflictError, PreconditionFailedError


async def test_refused_create_only_writes_leave_nothing_on_disk(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save("d/a.txt", b"first")
    for _ in range(3):
        with pytest.raises(PreconditionFailedError):
            await local_backend.save("d/a.txt", b"second", overwrite=False)
    assert sorted(p.name for p in (local_backend.root / "d").iterdir()) == ["a.txt"]


async def test_refused_create_only_writes_keep_the_winners_type_and_headers(
    local_backend: LocalStorageBackend,
) -> None:
    await local_backend.save(
        "d/a.txt", b"first", content_type="text/x-one", cache_control="max-age=5"
    )
    for i in range(8):  # more than the versions a sidecar keeps
        with pytest.raises(PreconditionFailedError):
            await local_backend.save(
                "d/a.txt", b"other", content_type=f"text/x-{i}", overwrite=False
            )
    info = await local_backend.stat("d/a.txt")
    assert (info.content_type, info.cache_control) == ("text/x-one", "max-age=5")


async def test_create_only_over_a_folder_is_a_conflict(local_backend: LocalStorageBackend) -> None:
    await local_backend.save("d/a/b.txt", b"x")
    with pytest.raises(ObjectConflictError):
        await local_backend.save("d/a", b"y", overwrite=False)
