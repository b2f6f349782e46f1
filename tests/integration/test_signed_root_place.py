"""The local root a signed URL is bound to, as the router reads it at each request: at
once after a rename, and without a thread hop while the root is open."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from fastapi import FastAPI

from file_storage import LocalStorageBackend
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY

BASE = "http://127.0.0.1/files"
T = TypeVar("T")


def _app(backend: LocalStorageBackend) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(make_signed_url_router(get_backend=lambda: backend), prefix="/files")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def test_checking_a_url_takes_no_thread_hop_once_the_root_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the binding is read at every request: a thread hop for it cost ~80 us of a local
    # GET's ~250 us (micro-benchmark); a readlink in /proc answers it on the loop
    backend = LocalStorageBackend(tmp_path / "root", base_url=BASE, signing_key=SIGNING_KEY)
    await backend.save("a.txt", b"content")  # opens the root
    url = await backend.get_presigned_url("a.txt")
    hops: list[object] = []
    real = asyncio.to_thread

    async def counted(func: Callable[..., T], /, *args: object) -> T:
        hops.append(func)
        return await real(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    async with _app(backend) as client:
        assert (await client.head(url.replace("/a.txt", "/gone.txt"))).status_code == 403
    assert hops == []
    await backend.aclose()


async def test_root_renamed_while_open_binds_urls_to_its_new_path(tmp_path: Path) -> None:
    # the served folder renamed while held: its URLs name where it is now, so a worker
    # over the new path signs URLs the app accepts, and URLs naming the old path fail
    served = LocalStorageBackend(tmp_path / "old", base_url=BASE, signing_key=SIGNING_KEY)
    await served.save("a.txt", b"content")
    before = await served.get_presigned_url("a.txt")
    (tmp_path / "old").rename(tmp_path / "new")
    worker = LocalStorageBackend(tmp_path / "new", base_url=BASE, signing_key=SIGNING_KEY)
    async with _app(served) as client:
        assert (await client.get(await worker.get_presigned_url("a.txt"))).content == b"content"
        assert (await client.get(await served.get_presigned_url("a.txt"))).status_code == 200
        assert (await client.get(before)).status_code == 403
    await served.aclose()
