"""Uploaded pages opened in a real browser (headless Chromium, real uvicorn): served by
``storage_response`` from the app's origin, their script never runs. Each page marks
itself when its script runs; a control route without the sandbox shows the mark works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI, Request, Response

from file_storage import MemoryStorageBackend
from file_storage.fastapi import storage_response
from tests.integration.conftest import Serve
from tests.integration.test_browser import chromium_tab, needs_chromium

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = needs_chromium

MARK = "document.getElementById('m').textContent = 'ran'"
XHTML = "http://www.w3.org/1999/xhtml"
# (stored type, body): each runs MARK synchronously while it loads, if script may run
PAGES = {
    "html": ("text/html", f"<p id=m>inert</p><script>{MARK}</script>"),
    "svg": (
        "image/svg+xml",
        f'<svg xmlns="http://www.w3.org/2000/svg"><text id="m" y="20">inert</text>'
        f"<script>{MARK}</script></svg>",
    ),
    "xhtml": (
        "application/xhtml+xml",
        f'<html xmlns="{XHTML}"><body><p id="m">inert</p><script>{MARK}</script></body></html>',
    ),
    "xml": (
        "text/xml",
        f'<doc xmlns:h="{XHTML}"><h:p id="m">inert</h:p><h:script>{MARK}</h:script></doc>',
    ),
    "type-list": ("image/png, text/html", f"<p id=m>inert</p><script>{MARK}</script>"),
}


@pytest.fixture
async def page(serve: Serve) -> AsyncIterator[Page]:
    storage = MemoryStorageBackend()
    for name, (content_type, body) in PAGES.items():
        await storage.save(f"up/{name}", body.encode(), content_type=content_type)
    app = FastAPI()

    @app.get("/files/{key:path}")
    async def download(key: str, request: Request) -> Response:
        return await storage_response(storage, key, request)

    @app.get("/unsandboxed/{key:path}")
    async def control(key: str, request: Request) -> Response:
        response = await storage_response(storage, key, request)
        del response.headers["content-security-policy"]
        return response

    base_url = serve(app)
    async with chromium_tab(base_url=base_url) as tab:
        yield tab


@pytest.mark.parametrize("name", ["html", "svg", "xhtml", "xml"])
async def test_an_uploaded_page_runs_no_script_on_the_apps_origin(page: Page, name: str) -> None:
    await page.goto(f"/unsandboxed/up/{name}")  # "load": inline scripts have run
    assert await page.locator("#m").text_content() == "ran"  # the mark works
    await page.goto(f"/files/up/{name}")
    assert await page.locator("#m").text_content() == "inert"


async def test_a_page_stored_under_a_type_list_is_downloaded_not_rendered(page: Page) -> None:
    from playwright.async_api import Error

    # application/octet-stream: saved, never shown, even where the app removed the sandbox
    async with page.expect_download() as download:
        with pytest.raises(Error, match="Download is starting"):
            await page.goto("/unsandboxed/up/type-list")
    assert (await download.value).suggested_filename == "type-list"
