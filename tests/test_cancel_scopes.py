"""Cancellation as anyio (and so FastAPI and Starlette) delivers it: a cancel scope
cancels every await made inside it, the clean-up's too, until the scope is left. What a
cancelled operation cleans up must be done all the same."""

from __future__ import annotations

from pathlib import Path

import anyio

from file_storage import StorageBackend

SIZE = 3 * 1024 * 1024


async def download_in_cancelled_scope(backend: StorageBackend, target: Path) -> None:
    await backend.save("big.bin", b"n" * SIZE)
    with anyio.CancelScope() as scope:

        def cancel(done: int, total: int | None) -> None:
            if done:
                scope.cancel()  # the client went away once the first bytes were written

        await backend.download_file("big.bin", target, progress=cancel)
    assert scope.cancelled_caught


async def test_download_cancelled_by_a_scope_leaves_nothing(
    backend: StorageBackend, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "big.bin"
    await download_in_cancelled_scope(backend, target)
    assert sorted(p.name for p in target.parent.iterdir()) == []


async def test_download_cancelled_by_a_scope_keeps_the_file_it_would_replace(
    backend: StorageBackend, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "big.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")
    await download_in_cancelled_scope(backend, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["big.bin"]
    assert target.read_bytes() == b"old"


async def test_local_copy_cancelled_by_a_scope_leaves_no_temp_folder(
    backend: StorageBackend, tmp_path: Path, monkeypatch: object
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # type: ignore[attr-defined]
    (tmp_path / "tmp").mkdir()
    await backend.save("v/clip.webm", b"n" * SIZE)
    with anyio.CancelScope() as scope:
        async with backend.local_copy("v/clip.webm") as path:
            assert path.exists()
            scope.cancel()  # the tool's caller went away while it ran
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert list((tmp_path / "tmp").iterdir()) == []
