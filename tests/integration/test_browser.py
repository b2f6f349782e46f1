"""A real browser uploads through the example page with a presigned PUT (headless Chromium)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi import FastAPI

from file_storage import StorageBackend
from tests.integration.conftest import Serve, build_example_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent: run scripts/ensure-chromium as root (apt-get install chromium)",
)


@pytest.fixture
def browser_app(monkeypatch: pytest.MonkeyPatch, storage: StorageBackend, base_url: str) -> FastAPI:
    """The example service; on S3 it adds the bucket CORS rule for its own origin."""
    monkeypatch.setenv("EXAMPLE_SET_BUCKET_CORS", "1")
    monkeypatch.setenv("EXAMPLE_CORS_ORIGINS", base_url)
    return build_example_app()


async def test_browser_uploads_a_file_straight_to_storage_with_a_presigned_put(
    serve: Serve, browser_app: FastAPI, storage: StorageBackend, tmp_path: Path
) -> None:
    # Debian's chromium, driven over CDP; `playwright install` is never needed
    from playwright.async_api import async_playwright

    data = os.urandom(300_000)
    chosen = tmp_path / "Holiday photo.png"
    chosen.write_bytes(data)
    base_url = serve(browser_app)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=TIMEOUT_MS
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(f"{base_url}/")
            await page.set_input_files("#file", str(chosen))
            await page.click("#put-upload")
            status = page.locator("#status")
            await page.locator("#status:is([data-state=done], [data-state=error])").wait_for()
            assert await status.get_attribute("data-state") == "done", await status.text_content()
            key = await status.get_attribute("data-key")
            assert key is not None
            # the refreshed list links to the new file
            await page.locator(f'#files a[href="/api/files/{key}"]').wait_for()
        finally:
            await browser.close()

    assert key.startswith("uploads/")
    assert key.endswith(".png")
    assert await storage.load(key) == data
    assert (await storage.stat(key)).content_type == "image/png"
