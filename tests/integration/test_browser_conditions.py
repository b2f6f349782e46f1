"""A browser's cross-origin PUT to a presigned URL with the conditions S3 honours
(headless Chromium, real uvicorn): the preflight lets them through and the page reads
the refusal, so a create-only upload from a page never replaces an object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from file_storage import MemoryStorageBackend
from file_storage.fastapi import make_signed_url_router
from tests.integration.conftest import SIGNING_KEY, Serve
from tests.integration.test_browser import chromium_tab, needs_chromium

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = needs_chromium

PUT_FROM_PAGE = """async ([url, headers]) => {
    const response = await fetch(url, {method: "PUT", body: "from the page", headers});
    return [response.status, await response.text()];
}"""


@pytest.fixture
def backend(base_url: str) -> MemoryStorageBackend:
    return MemoryStorageBackend(base_url=f"{base_url}/files", signing_key=SIGNING_KEY)


@pytest.fixture
async def page(serve: Serve, backend: MemoryStorageBackend, base_url: str) -> AsyncIterator[Page]:
    """A page on ``localhost``: another origin than the router's ``127.0.0.1``."""
    page_origin = base_url.replace("127.0.0.1", "localhost")
    app = FastAPI()
    router = make_signed_url_router(get_backend=lambda: backend, allow_origins=[page_origin])
    app.include_router(router, prefix="/files")

    @app.get("/page")
    async def blank() -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>uploads</title>")

    serve(app)
    async with chromium_tab() as tab:
        await tab.goto(f"{page_origin}/page")
        yield tab


async def test_a_pages_create_only_put_never_replaces_and_the_page_reads_412(
    page: Page, backend: MemoryStorageBackend
) -> None:
    await backend.save("in/taken.txt", b"first")
    url = await backend.get_presigned_url("in/taken.txt", method="PUT")
    status, body = await page.evaluate(PUT_FROM_PAGE, [url, {"If-None-Match": "*"}])
    assert status == 412, body
    assert await backend.load("in/taken.txt") == b"first"
    fresh = await backend.get_presigned_url("in/new.txt", method="PUT")
    status, body = await page.evaluate(PUT_FROM_PAGE, [fresh, {"If-None-Match": "*"}])
    assert status == 200, body
    assert await backend.load("in/new.txt") == b"from the page"


async def test_a_pages_put_with_a_wrong_content_md5_is_refused_and_read(
    page: Page, backend: MemoryStorageBackend
) -> None:
    url = await backend.get_presigned_url("in/checked.txt", method="PUT")
    wrong = "1B2M2Y8AsgTpgAmY7PhCfg=="  # the MD5 of no bytes
    status, body = await page.evaluate(PUT_FROM_PAGE, [url, {"Content-MD5": wrong}])
    assert status == 400, body
    assert "Content-MD5" in body
    assert await backend.list_files() == []
