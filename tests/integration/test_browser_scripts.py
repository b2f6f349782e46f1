"""An uploaded script served by ``storage_response`` from the app's own origin, loaded by
a page of that origin whose policy allows only its own scripts (``script-src 'self'``),
as an HTML injection into that page would load it (headless Chromium, real uvicorn)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse

from file_storage import MemoryStorageBackend
from file_storage.fastapi import storage_response
from tests.integration.conftest import Serve
from tests.integration.test_browser import chromium_tab, needs_chromium

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = needs_chromium

SCRIPT = b"document.getElementById('m').textContent = 'ran';"
# a page of the app, strict about scripts, into which an attacker injected a <script src>
PAGE = """<!doctype html><p id=m>inert</p><script src="{src}"></script>
<script src="/static/done.js"></script>"""
DONE = b"document.title = 'done';"


@pytest.fixture
async def page(serve: Serve) -> AsyncIterator[Page]:
    storage = MemoryStorageBackend()
    await storage.save("up/evil.js", SCRIPT, content_type="text/javascript")
    await storage.save("up/evil.mjs", SCRIPT, content_type="application/javascript")
    app = FastAPI()
    policy = {"content-security-policy": "script-src 'self'"}

    @app.get("/files/{key:path}")
    async def download(key: str, request: Request) -> Response:
        return await storage_response(storage, key, request)

    @app.get("/trusted/{key:path}")
    async def trusted(key: str, request: Request) -> Response:
        # the app vouches for the type: sent as it says
        return await storage_response(storage, key, request, content_type="text/javascript")

    @app.get("/page")
    async def strict_page(src: str) -> HTMLResponse:
        return HTMLResponse(PAGE.format(src=src), headers=policy)

    @app.get("/static/done.js")
    async def done() -> Response:
        return Response(DONE, media_type="text/javascript")

    base_url = serve(app)
    async with chromium_tab(base_url=base_url) as tab:
        yield tab


async def run(page: Page, src: str) -> str | None:
    await page.goto(f"/page?src={src}")  # "load": both scripts were fetched and run or refused
    assert await page.title() == "done"
    return await page.locator("#m").text_content()


@pytest.mark.parametrize("key", ["up/evil.js", "up/evil.mjs"])
async def test_an_uploaded_script_does_not_run_in_a_page_of_the_apps_origin(
    page: Page, key: str
) -> None:
    assert await run(page, f"/files/{key}") == "inert"


async def test_a_script_type_the_app_passes_is_sent_as_it_says(page: Page) -> None:
    assert await run(page, "/trusted/up/evil.js") == "ran"
